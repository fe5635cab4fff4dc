//! The store conformance suite on the embedded SQLite store, on a real file.

use confab_functions::ports::Store;
use std::sync::Arc;

async fn sqlite() -> Arc<dyn Store> {
    // Each test gets its own database file, kept until the process ends.
    let dir = tempfile::tempdir().expect("temp dir").keep();
    Arc::new(confab_local::sqlite::SqliteStore::open(&dir).expect("open store"))
}

confab_tests::store_conformance!(sqlite);

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = confab_local::sqlite::SqliteStore::open(dir.path()).unwrap();
        confab_tests::conformance::idle_session(&store, "alice", 1).await
    };
    let store = confab_local::sqlite::SqliteStore::open(dir.path()).unwrap();
    let rec = store.get_session(&id).await.unwrap().unwrap();
    assert_eq!(rec.summary.message_count, 2);
}

//! A DynamoDB emulator for tests: `moto_server`, installed from PyPI into a
//! virtual environment under `target/` when missing, started once per test
//! process on a free port, and stopped when that process ends.

use confab_functions::aws::{AwsSettings, AwsStats, DynamoStore, Tables};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The virtual environment holding moto (and cargo-lambda, cfn-lint).
pub fn venv() -> PathBuf {
    target_dir().join("aws-venv")
}

/// `moto_server`, installed on first use.
pub fn moto_server_bin() -> PathBuf {
    let bin = venv().join("bin").join("moto_server");
    if !bin.is_file() {
        let venv = venv();
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin").join("pip"))
                .args(["install", "--quiet", "moto[server]==5.2.1"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "installing moto into {} failed", venv.display());
    }
    bin
}

/// A running emulator.
pub struct Moto {
    pub url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The emulator of this test process.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let bin = moto_server_bin();
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        // Stop it when this process ends, however it ends.
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill {moto} 2>/dev/null",
                    me = std::process::id(),
                    moto = child.id()
                ),
            ])
            .stdin(Stdio::null())
            .spawn();
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "moto_server did not listen in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { url }
    })
}

/// Table names no other test uses.
pub fn fresh_tables() -> Tables {
    let p = format!("t{}", uuid::Uuid::now_v7().simple());
    Tables {
        sessions: format!("{p}-sessions"),
        messages: format!("{p}-messages"),
        connections: format!("{p}-connections"),
    }
}

pub fn settings(tables: Tables) -> AwsSettings {
    AwsSettings {
        tables,
        worker_function: None,
        push_endpoint: None,
        aws_endpoint: Some(moto().url.clone()),
    }
}

/// A store on new, empty tables in the emulator.
pub async fn dynamo_store() -> (DynamoStore, Arc<AwsStats>) {
    let stats = Arc::new(AwsStats::default());
    let store = DynamoStore::from_settings(&settings(fresh_tables()), stats.clone()).await;
    store.create_tables().await.expect("creating tables");
    (store, stats)
}

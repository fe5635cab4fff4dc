//! The store conformance suite on `DynamoStore`, against moto's DynamoDB.

use confab_functions::ports::{SessionStore, Store, TurnStore};
use confab_protocol::model::Block;
use std::sync::Arc;

async fn dynamo() -> Arc<dyn Store> {
    Arc::new(confab_tests::moto::dynamo_store().await.0)
}

confab_tests::store_conformance!(dynamo);

/// Tool blocks carry arbitrary JSON; DynamoDB maps must give it back as it
/// was, numbers and nulls included.
#[tokio::test]
async fn tool_input_json_round_trips() {
    let (store, _) = confab_tests::moto::dynamo_store().await;
    let id = confab_tests::conformance::idle_session(&store, "alice", 1).await;
    let rec = store.get_session(&id).await.unwrap().unwrap();
    let turn = confab_tests::conformance::turn();
    let mut msg = confab_tests::conformance::user(&id, &turn.turn_id, "run it");
    let input = serde_json::json!({
        "int": -3, "big": 18446744073709551615u64, "float": 1.5, "null": null,
        "empty": {}, "list": [1, "two", false, [], {"x": ""}], "text": ""
    });
    msg.content.push(Block::ToolUse {
        id: "t1".into(),
        name: "bash".into(),
        input: input.clone(),
    });
    let started = store
        .start_turn(
            "alice",
            &id,
            &confab_functions::domain::records::NewTurn {
                message: msg.clone(),
                turn,
                permission_mode: None,
                now_ms: 2,
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        started,
        confab_functions::domain::records::StartOutcome::Started { .. }
    ));
    let back = store.find_message(&id, &msg.id).await.unwrap().unwrap();
    assert_eq!(back.content[1], msg.content[1]);
    assert_eq!(back.seq, rec.summary.message_count + 1);
}

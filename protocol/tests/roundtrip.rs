//! Every frame and body survives a trip through JSON, and the wire spelling is
//! the contract's.

use confab_protocol::model::*;
use confab_protocol::rest::*;
use confab_protocol::socket::{FrameError, parse_client_frame};
use confab_protocol::{ClientFrame, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

#[path = "../src/fixtures.rs"]
mod fixtures;
use fixtures::{MID, SID, id, message, summary};

fn rt<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) -> serde_json::Value {
    let s = serde_json::to_string(v).unwrap();
    let back: T = serde_json::from_str(&s).unwrap();
    assert_eq!(&back, v);
    serde_json::from_str(&s).unwrap()
}

#[test]
fn summary_and_message_use_contract_names() {
    let s = rt(&summary());
    for k in [
        "id",
        "projectId",
        "title",
        "status",
        "permissionMode",
        "createdAt",
        "updatedAt",
        "lastMessageAt",
        "messageCount",
        "usage",
        "firstMessagePreview",
        "lastTurn",
        "agentSessionId",
        "version",
    ] {
        assert!(s.get(k).is_some(), "summary lacks {k}");
    }
    assert_eq!(s["permissionMode"], "acceptEdits");
    assert_eq!(s["status"], "running");
    assert_eq!(s["usage"]["inputTokens"], 1);
    assert_eq!(s["lastTurn"]["outcome"], "failed");
    assert_eq!(s["createdAt"], "2026-11-18T11:06:40.000Z");
    let m = rt(&message());
    assert_eq!(m["content"][1]["type"], "tool_use");
    assert_eq!(m["content"][2]["toolUseId"], "tu1");
    assert_eq!(m["content"][2]["isError"], true);
    assert_eq!(m["status"], "stopped");
    assert_eq!(m["role"], "assistant");
}

#[test]
fn every_client_frame_round_trips_with_its_action() {
    let frames = [
        (ClientFrame::Hello, "hello"),
        (
            ClientFrame::Subscribe {
                session_id: id(SID),
                after_seq: 4,
            },
            "subscribe",
        ),
        (
            ClientFrame::Unsubscribe {
                session_id: id(SID),
            },
            "unsubscribe",
        ),
        (ClientFrame::Ping, "ping"),
    ];
    for (f, a) in &frames {
        let v = rt(f);
        assert_eq!(v["action"], *a);
    }
    assert_eq!(rt(&frames[1].0)["afterSeq"], 4);
}

#[test]
fn rest_bodies_round_trip() {
    rt(&CreateSessionRequest {
        id: Some(id(SID)),
        project_id: Some(id("p")),
        title: None,
        permission_mode: Some(PermissionMode::Plan),
        message: NewMessage {
            id: id(MID),
            text: id("t"),
        },
    });
    rt(&SessionWithMessages {
        session: summary(),
        messages: vec![message()],
    });
    rt(&SessionPage {
        sessions: vec![summary()],
        next_cursor: Some("c".into()),
    });
    let d = rt(&SessionDetail {
        session: summary(),
        messages: vec![],
        has_more: false,
        live: None,
        pending: vec![fixtures::request()],
        queued: vec![fixtures::queued()],
    });
    assert_eq!(d["pending"][0]["kind"], "tool");
    assert_eq!(d["pending"][0]["expiresAt"], "1970-01-01T00:30:00.001Z");
    let a = rt(&AnswerRequest {
        decision: Decision::AllowSession,
        message: None,
        answers: [("Which one?".to_string(), "a".to_string())].into(),
    });
    assert_eq!(a["decision"], "allow_session");
    assert!(
        serde_json::from_value::<AnswerRequest>(serde_json::json!({"decision": "maybe"})).is_err()
    );
    rt(&MessagePage {
        messages: vec![message()],
        has_more: true,
    });
    rt(&UpdateSessionRequest {
        title: Some("x".into()),
        permission_mode: None,
    });
    rt(&SessionEnvelope { session: summary() });
    rt(&SendMessageRequest {
        id: id(MID),
        text: id("t"),
        permission_mode: None,
    });
    rt(&SendMessageResponse {
        message: message(),
        session: summary(),
    });
    let p = rt(&ProjectsResponse {
        projects: vec![ProjectSummary {
            id: id("default"),
            session_count: 2,
            last_session_id: id(SID),
            last_activity_at: Timestamp::from_millis(5),
        }],
    });
    assert_eq!(p["projects"][0]["sessionCount"], 2);
    let c = rt(&ConfigResponse {
        agent: AgentInfo {
            provider: "demo".into(),
            model: "demo".into(),
        },
        auth: AuthInfo {
            mode: "none".into(),
        },
        limits: Limits {
            max_message_bytes: 32768,
            max_title_chars: 200,
            max_permission_mode: confab_protocol::model::PermissionMode::AcceptEdits,
            sessions_per_minute: 20,
            messages_per_minute: 30,
            turns_at_once: 8,
            daily_tokens: Some(1_000_000),
        },
    });
    assert_eq!(c["limits"]["maxMessageBytes"], 32768);
    assert_eq!(c["limits"]["maxPermissionMode"], "acceptEdits");
    rt(&Health { ok: true });
    let e = rt(&ErrorBody {
        error: ErrorDetail {
            code: ErrorCode::TurnRunning,
            message: "m".into(),
        },
        request: None,
    });
    assert_eq!(e["error"]["code"], "turn_running");
    assert!(e.get("request").is_none());
}

#[test]
fn create_without_message_is_refused() {
    let r: Result<CreateSessionRequest, _> = serde_json::from_value(json!({ "id": SID }));
    assert!(r.unwrap_err().to_string().contains("message"));
}

#[test]
fn client_frames_are_parsed_with_clear_errors() {
    assert_eq!(
        parse_client_frame(r#"{"action":"ping"}"#).unwrap(),
        ClientFrame::Ping
    );
    assert_eq!(
        parse_client_frame(&format!(r#"{{"action":"subscribe","sessionId":"{SID}"}}"#)).unwrap(),
        ClientFrame::Subscribe {
            session_id: id(SID),
            after_seq: 0
        }
    );
    assert!(matches!(
        parse_client_frame("{nope"),
        Err(FrameError::Malformed(_))
    ));
    assert!(matches!(
        parse_client_frame("[]"),
        Err(FrameError::Invalid(_))
    ));
    assert!(
        matches!(parse_client_frame(r#"{"action":"dance"}"#), Err(FrameError::UnknownAction(a)) if a == "dance")
    );
    assert!(matches!(
        parse_client_frame(r#"{"action":7}"#),
        Err(FrameError::Invalid(_))
    ));
    assert!(
        matches!(parse_client_frame(r#"{"action":"subscribe"}"#), Err(FrameError::Invalid(e)) if e.contains("sessionId"))
    );
    assert!(matches!(
        parse_client_frame(&format!(
            r#"{{"action":"subscribe","sessionId":"{SID}","afterSeq":"x"}}"#
        )),
        Err(FrameError::Invalid(_))
    ));
    let big = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(9000));
    assert!(matches!(
        parse_client_frame(&big),
        Err(FrameError::TooLarge(_))
    ));
}

//! The contract in the formats clients use, built from the wire types'
//! JSON Schemas and the routes written once in `protocol::routes`: the REST
//! API as OpenAPI 3.1 (served at `/api/openapi.json`, kept in
//! `docs/openapi.json`) and the socket's frames as AsyncAPI 3.0 (kept in
//! `docs/asyncapi.json`). Tests check that the documents in `docs/` are
//! these.

use confab_protocol::rest::{
    ConfigResponse, CreateSessionRequest, ErrorBody, Health, MessagePage, ProjectsResponse,
    SendMessageRequest, SendMessageResponse, SessionDetail, SessionEnvelope, SessionPage,
    SessionWithMessages, UpdateSessionRequest,
};
use confab_protocol::{ClientFrame, Message, ServerEvent, SessionSummary, routes};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Value, json};

/// Where the schemas live in both documents.
const SCHEMAS: &str = "/components/schemas";

fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = SCHEMAS.into())
        .into_generator()
}

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Value {
    g.subschema_for::<T>().to_value()
}

fn json_body(schema: Value) -> Value {
    json!({ "content": { "application/json": { "schema": schema } } })
}

fn answer(description: &str, schema: Value) -> Value {
    let mut r = json_body(schema);
    r["description"] = description.into();
    r
}

/// One operation: its summary, an optional JSON body, the success answers,
/// its parameters; every error answers `ErrorBody`.
fn op(
    error: &Value,
    id: &str,
    summary: &str,
    body: Option<Value>,
    ok: &[(&str, Value)],
    parameters: Vec<Value>,
) -> Value {
    let mut responses = serde_json::Map::new();
    for (status, r) in ok {
        responses.insert(status.to_string(), r.clone());
    }
    responses.insert(
        "default".into(),
        answer(
            "An error: invalid_request 400, unauthorized 401 or 403, not_found 404, \
             conflict or turn_running 409, payload_too_large 413, rate_limited 429 \
             (with Retry-After), internal 500, unavailable 503 (a create or send \
             whose message is stored but whose reply could not be started: the \
             same request again starts it)",
            error.clone(),
        ),
    );
    let mut o = json!({ "operationId": id, "summary": summary, "responses": responses });
    if let Some(b) = body {
        let mut b = json_body(b);
        b["required"] = true.into();
        o["requestBody"] = b;
    }
    if !parameters.is_empty() {
        o["parameters"] = parameters.into();
    }
    o
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": description })
}

fn session_id_param(g: &mut SchemaGenerator) -> Value {
    json!({
        "name": "id",
        "in": "path",
        "required": true,
        "schema": schema::<confab_protocol::SessionId>(g),
    })
}

/// The REST API as an OpenAPI 3.1 document.
pub fn openapi() -> Value {
    let g = &mut generator();
    let error = schema::<ErrorBody>(g);
    let page_limit = json!({ "type": "integer", "minimum": 1, "maximum": 100 });
    let seq = json!({ "type": "integer", "minimum": 0 });
    let health = op(
        &error,
        "health",
        "Whether the API answers",
        None,
        &[("200", answer("Up", schema::<Health>(g)))],
        vec![],
    );
    let config = op(
        &error,
        "config",
        "The agent, the auth mode and the limits",
        None,
        &[(
            "200",
            answer("The configuration", schema::<ConfigResponse>(g)),
        )],
        vec![],
    );
    let projects = op(
        &error,
        "listProjects",
        "The caller's projects, most recently active first",
        None,
        &[("200", answer("The projects", schema::<ProjectsResponse>(g)))],
        vec![],
    );
    let create = op(
        &error,
        "createSession",
        "Create a session with its first message; the same create again answers 200",
        Some(schema::<CreateSessionRequest>(g)),
        &[
            (
                "201",
                answer("Created; the turn runs", schema::<SessionWithMessages>(g)),
            ),
            (
                "200",
                answer("Created before", schema::<SessionWithMessages>(g)),
            ),
        ],
        vec![],
    );
    let list = op(
        &error,
        "listSessions",
        "The caller's sessions, newest activity first",
        None,
        &[("200", answer("A page", schema::<SessionPage>(g)))],
        vec![
            query(
                "projectId",
                schema::<confab_protocol::ProjectId>(g),
                "Only this project",
            ),
            query(
                "q",
                json!({ "type": "string", "maxLength": 200 }),
                "Search in titles and first messages",
            ),
            query("limit", page_limit.clone(), "Page size (50 when absent)"),
            query(
                "cursor",
                json!({ "type": "string" }),
                "Where the previous page ended",
            ),
        ],
    );
    let sid = session_id_param(g);
    let detail = op(
        &error,
        "getSession",
        "A session, its latest messages and the reply in flight",
        None,
        &[("200", answer("The session", schema::<SessionDetail>(g)))],
        vec![],
    );
    let update = op(
        &error,
        "updateSession",
        "Rename a session or change its permission mode",
        Some(schema::<UpdateSessionRequest>(g)),
        &[("200", answer("The session", schema::<SessionEnvelope>(g)))],
        vec![],
    );
    let delete = op(
        &error,
        "deleteSession",
        "Delete a session (a running turn is stopped first)",
        None,
        &[("204", json!({ "description": "Deleted" }))],
        vec![],
    );
    let send = op(
        &error,
        "sendMessage",
        "Send a message, which starts a turn, or, while a turn runs, waits in the session's queue; the same message again answers 200 (or 202 with `queued` while it waits)",
        Some(schema::<SendMessageRequest>(g)),
        &[
            (
                "202",
                answer(
                    "Stored and its turn runs; or queued behind the running turn (`queued`)",
                    json!({ "oneOf": [
                        schema::<SendMessageResponse>(g),
                        schema::<confab_protocol::rest::QueuedReply>(g),
                    ] }),
                ),
            ),
            (
                "200",
                answer("Stored before", schema::<SendMessageResponse>(g)),
            ),
        ],
        vec![],
    );
    let messages = op(
        &error,
        "listMessages",
        "A page of a session's messages, oldest first",
        None,
        &[("200", answer("A page", schema::<MessagePage>(g)))],
        vec![
            query("afterSeq", seq.clone(), "Messages after this seq"),
            query("beforeSeq", seq, "Messages before this seq"),
            query("limit", page_limit, "Page size (50 when absent)"),
        ],
    );
    let stop = op(
        &error,
        "stopTurn",
        "Stop the running turn and wait up to 3 s for it to close",
        None,
        &[
            (
                "202",
                answer("A turn was running", schema::<SessionEnvelope>(g)),
            ),
            (
                "200",
                answer("No turn was running", schema::<SessionEnvelope>(g)),
            ),
        ],
        vec![],
    );
    let answer_request = op(
        &error,
        "answerRequest",
        "Answer a request the running turn waits on (allow, allow for the session, deny, or the chosen options); the first answer wins",
        Some(schema::<confab_protocol::rest::AnswerRequest>(g)),
        &[
            (
                "200",
                answer(
                    "This answer came first: the request as answered",
                    schema::<confab_protocol::rest::RequestEnvelope>(g),
                ),
            ),
            (
                "409",
                answer(
                    "Answered already: `conflict`, with `request` as it was answered",
                    error.clone(),
                ),
            ),
        ],
        vec![],
    );
    let edit_queued = op(
        &error,
        "editQueued",
        "New text for a queued message, until it starts",
        Some(schema::<confab_protocol::rest::EditQueuedRequest>(g)),
        &[
            (
                "200",
                answer(
                    "The message as it waits now",
                    schema::<confab_protocol::rest::QueuedEnvelope>(g),
                ),
            ),
            ("409", answer("It has started (`conflict`)", error.clone())),
        ],
        vec![],
    );
    let cancel_queued = op(
        &error,
        "cancelQueued",
        "Cancel a queued message, until it starts",
        None,
        &[
            ("204", json!({ "description": "Cancelled" })),
            ("409", answer("It has started (`conflict`)", error.clone())),
        ],
        vec![],
    );
    let start_queued = op(
        &error,
        "startQueued",
        "Send a queued message now: the running turn is asked to stop and this message starts when it ends",
        None,
        &[
            (
                "200",
                answer(
                    "No turn was running: the message started",
                    schema::<SendMessageResponse>(g),
                ),
            ),
            (
                "202",
                answer(
                    "The running turn was asked to stop; the message is first in the queue",
                    schema::<confab_protocol::rest::QueueEnvelope>(g),
                ),
            ),
            ("409", answer("It has started (`conflict`)", error.clone())),
        ],
        vec![],
    );
    let message_id = json!({
        "name": "messageId",
        "in": "path",
        "required": true,
        "schema": schema::<confab_protocol::MessageId>(g),
    });
    let request_id = json!({
        "name": "requestId",
        "in": "path",
        "required": true,
        "schema": schema::<confab_protocol::RequestId>(g),
    });
    let export_json = json!({
        "type": "object",
        "required": ["session", "messages"],
        "properties": {
            "session": schema::<SessionSummary>(g),
            "messages": { "type": "array", "items": schema::<Message>(g) },
        },
    });
    let mut export = op(
        &error,
        "exportSession",
        "The whole session as a Markdown or JSON file",
        None,
        &[],
        vec![query(
            "format",
            json!({ "type": "string", "enum": ["md", "json"] }),
            "md when absent",
        )],
    );
    export["responses"]["200"] = json!({
        "description": "The file (Content-Disposition: attachment)",
        "content": {
            "text/markdown": { "schema": { "type": "string" } },
            "application/json": { "schema": export_json },
        },
    });
    let socket_ticket = op(
        &error,
        "socketTicket",
        "A one-use ticket that opens the socket (/ws?ticket=) within 60 s, as the caller, until their token expires",
        None,
        &[(
            "201",
            answer(
                "The ticket",
                schema::<confab_protocol::rest::SocketTicket>(g),
            ),
        )],
        vec![],
    );
    let openapi_doc = json!({
        "operationId": "openapi",
        "summary": "This document",
        "security": [],
        "responses": { "200": answer("OpenAPI 3.1", json!({ "type": "object" })) },
    });
    let public = |mut o: Value| {
        o["security"] = json!([]);
        o
    };
    let paths = json!({
        routes::HEALTH: { "get": public(health) },
        routes::CONFIG: { "get": public(config) },
        routes::OPENAPI: { "get": openapi_doc },
        routes::PROJECTS: { "get": projects },
        routes::SESSIONS: { "post": create, "get": list },
        routes::SESSION: { "parameters": [sid.clone()], "get": detail, "patch": update, "delete": delete },
        routes::MESSAGES: { "parameters": [sid.clone()], "post": send, "get": messages },
        routes::STOP: { "parameters": [sid.clone()], "post": stop },
        routes::REQUEST: { "parameters": [sid.clone(), request_id], "post": answer_request },
        routes::QUEUED: { "parameters": [sid.clone(), message_id.clone()], "patch": edit_queued, "delete": cancel_queued },
        routes::QUEUED_START: { "parameters": [sid.clone(), message_id], "post": start_queued },
        routes::EXPORT: { "parameters": [sid], "get": export },
        routes::SOCKET_TICKET: { "post": socket_ticket },
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Confab",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sessions with an AI agent: create one with a first message, send more, stop a turn. Events stream over the WebSocket (docs/asyncapi.json).",
        },
        "paths": paths,
        "components": {
            "schemas": g.take_definitions(true),
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
            },
        },
        "security": [{ "bearer": [] }],
    })
}

/// The socket as an AsyncAPI 3.0 document: what a client sends, what the
/// server pushes.
pub fn asyncapi() -> Value {
    let g = &mut generator();
    let client = schema::<ClientFrame>(g);
    let server = schema::<ServerEvent>(g);
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Confab socket",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Events of the caller's sessions. Connect with ?ticket=<ticket> (from POST /api/socket-ticket) when auth is on; the socket is closed, after an error frame with code token_expired, when its token expires; send hello, wait for ready, then subscribe. Frames are JSON text, at most 8 KiB from a client and 32 KiB from the server.",
        },
        "servers": {
            "local": { "host": "127.0.0.1:8787", "pathname": "/ws", "protocol": "ws" },
        },
        "channels": {
            "socket": {
                "address": "/ws",
                "messages": {
                    "clientFrame": { "$ref": "#/components/messages/ClientFrame" },
                    "serverEvent": { "$ref": "#/components/messages/ServerEvent" },
                },
            },
        },
        "operations": {
            "sendFrame": {
                "action": "send",
                "channel": { "$ref": "#/channels/socket" },
                "messages": [{ "$ref": "#/channels/socket/messages/clientFrame" }],
            },
            "receiveEvent": {
                "action": "receive",
                "channel": { "$ref": "#/channels/socket" },
                "messages": [{ "$ref": "#/channels/socket/messages/serverEvent" }],
            },
        },
        "components": {
            "messages": {
                "ClientFrame": { "contentType": "application/json", "payload": client },
                "ServerEvent": { "contentType": "application/json", "payload": server },
            },
            "schemas": g.take_definitions(true),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// `docs/<name>` holds `doc`; with `CONFAB_WRITE_DOCS=1` it is written.
    fn kept_in_docs(name: &str, doc: &Value) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(name);
        let want = serde_json::to_string_pretty(doc).unwrap() + "\n";
        if std::env::var_os("CONFAB_WRITE_DOCS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/{name} is not the contract the code has: run \
             `CONFAB_WRITE_DOCS=1 cargo test -p confab-functions contract` and commit it"
        );
    }

    #[test]
    fn docs_hold_the_openapi_document() {
        let doc = openapi();
        // Every route of the router is described, and every reference resolves.
        for r in [
            routes::HEALTH,
            routes::CONFIG,
            routes::OPENAPI,
            routes::PROJECTS,
            routes::SESSIONS,
            routes::SESSION,
            routes::MESSAGES,
            routes::STOP,
            routes::REQUEST,
            routes::QUEUED,
            routes::QUEUED_START,
            routes::EXPORT,
            routes::SOCKET_TICKET,
        ] {
            assert!(doc["paths"][r].is_object(), "{r}");
        }
        assert_refs_resolve(&doc, &doc);
        kept_in_docs("openapi.json", &doc);
    }

    #[test]
    fn docs_hold_the_asyncapi_document() {
        let doc = asyncapi();
        assert_refs_resolve(&doc, &doc);
        let events = serde_json::to_string(&doc["components"]).unwrap();
        for ty in [
            "message.delta",
            "session.updated",
            "request.created",
            "request.resolved",
            "subscribe",
            "hello",
        ] {
            assert!(events.contains(ty), "{ty}");
        }
        kept_in_docs("asyncapi.json", &doc);
    }

    fn assert_refs_resolve(root: &Value, v: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    let pointer = r.strip_prefix('#').expect("a local reference");
                    assert!(root.pointer(pointer).is_some(), "{r} resolves");
                }
                m.values().for_each(|v| assert_refs_resolve(root, v));
            }
            Value::Array(a) => a.iter().for_each(|v| assert_refs_resolve(root, v)),
            _ => {}
        }
    }
}

//! `http_api` as Lambda runs it: `cargo lambda watch` emulates the Lambda
//! runtime API, and `cargo lambda invoke` sends it the HTTP API request
//! that ships in `aws_lambda_events`, over DynamoDB on moto.

use confab_tests::harness::{SECRET, token};
use confab_tests::moto;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Kills `cargo lambda watch` and the function processes it started.
struct Watch(std::process::Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn request(path: &str, auth: Option<&str>) -> Value {
    let f = root().join("tests/fixtures/aws/example-apigw-v2-request-no-authorizer.json");
    let mut ev: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
    ev["rawPath"] = path.into();
    ev["routeKey"] = "ANY /api/{proxy+}".into();
    ev["requestContext"]["routeKey"] = "ANY /api/{proxy+}".into();
    ev["requestContext"]["http"]["path"] = path.into();
    if let Some(t) = auth {
        ev["headers"]["authorization"] = format!("Bearer {t}").into();
    }
    ev
}

fn invoke(cargo_lambda: &Path, port: u16, event: &Value) -> Value {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), event.to_string()).unwrap();
    let out = Command::new(cargo_lambda)
        .args(["lambda", "invoke", "http_api", "--invoke-port"])
        .arg(port.to_string())
        .arg("--data-file")
        .arg(file.path())
        .current_dir(root())
        .output()
        .expect("cargo lambda invoke");
    assert!(
        out.status.success(),
        "cargo lambda invoke failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_answers_an_api_gateway_request_under_cargo_lambda_watch() {
    let cargo_lambda = moto::venv_tool("cargo-lambda", moto::CARGO_LAMBDA);
    let tables = moto::fresh_tables();
    let store = confab_functions::store::dynamo::DynamoStore::from_settings(
        &moto::settings(tables.clone()),
        Default::default(),
    )
    .await;
    store.create_tables().await.unwrap();
    let sid = confab_tests::conformance::idle_session(&store, "alice", 1).await;
    // The token secret is in Secrets Manager, never in the environment: the
    // function reads it when it starts.
    let secret_arn = moto::create_secret(SECRET).await;

    let env = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        env.path(),
        format!(
            "CONFAB_AUTH=jwt\nCONFAB_JWT_SECRET_ARN={secret_arn}\nCONFAB_AWS_ENDPOINT={}\n\
             CONFAB_SESSIONS_TABLE={}\nCONFAB_MESSAGES_TABLE={}\nCONFAB_CONNECTIONS_TABLE={}\n\
             CONFAB_WORKER_FUNCTION=turn_worker\nCONFAB_PUSH_ENDPOINT=http://127.0.0.1:9\n\
             AWS_REGION=us-east-1\nRUST_LOG=warn\n",
            moto::moto().url,
            tables.sessions,
            tables.messages,
            tables.connections
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(&cargo_lambda);
    cmd.args([
        "lambda",
        "watch",
        "--ignore-changes",
        "-p",
        "confab-functions",
        "--invoke-port",
    ])
    .arg(port.to_string())
    .arg("--env-file")
    .arg(env.path())
    .current_dir(root())
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let _watch = Watch(cmd.spawn().expect("cargo lambda watch"));
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "cargo lambda watch did not listen"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let r = invoke(
        &cargo_lambda,
        port,
        &request("/api/sessions", Some(&token("alice"))),
    );
    assert_eq!(r["statusCode"], 200, "{r}");
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    let ids: Vec<&str> = body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![sid.as_str()]);

    // Another user sees none of it; no token is a 401.
    let r = invoke(
        &cargo_lambda,
        port,
        &request("/api/sessions", Some(&token("bob"))),
    );
    assert_eq!(r["statusCode"], 200, "{r}");
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert!(body["sessions"].as_array().unwrap().is_empty());
    let r = invoke(&cargo_lambda, port, &request("/api/sessions", None));
    assert_eq!(r["statusCode"], 401, "{r}");
}

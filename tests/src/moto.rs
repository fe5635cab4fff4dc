//! A DynamoDB emulator for tests: `moto_server`, installed from PyPI into a
//! virtual environment under `target/` when missing, started once per test
//! process on a free port, and stopped when that process ends.

use confab_functions::aws::{AwsSettings, AwsStats};
use confab_functions::store::dynamo::{DynamoStore, Tables};
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

/// The PyPI tools the AWS tests use, at the versions they were written
/// against (`cargo xtask test` installs the same).
pub const MOTO: &str = "moto[server]==5.2.1";
pub const CARGO_LAMBDA: &str = "cargo-lambda==1.9.2";
pub const CFN_LINT: &str = "cfn-lint==1.58.0";
pub const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// `bin` of the virtual environment, with `package` installed there when
/// missing.
pub fn venv_tool(bin: &str, package: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let venv = venv();
    let path = venv.join("bin").join(bin);
    if !path.is_file() {
        let ok = (venv.join("bin/pip").is_file()
            || Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success()))
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", package])
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "installing {package} into {} failed", venv.display());
    }
    path
}

/// `moto_server`, installed on first use.
pub fn moto_server_bin() -> PathBuf {
    venv_tool("moto_server", MOTO)
}

/// A running emulator.
pub struct Moto {
    pub url: String,
    /// Kept, never waited on: the process outlives every test and is
    /// stopped by the watcher below when this process ends.
    _child: std::sync::Mutex<std::process::Child>,
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
        moto_server_bin();
        let port = free_port();
        let child = Command::new(venv().join("bin/python"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("moto_server.py"))
            .arg(port.to_string())
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
        Moto {
            url,
            _child: std::sync::Mutex::new(child),
        }
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
        region: "us-east-1".into(),
        credentials: None,
    }
}

/// A store on new, empty tables in the emulator.
pub async fn dynamo_store() -> (DynamoStore, Arc<AwsStats>) {
    let stats = Arc::new(AwsStats::default());
    let store = DynamoStore::from_settings(&settings(fresh_tables()), stats.clone()).await;
    store.create_tables().await.expect("creating tables");
    (store, stats)
}

/// Creates a plain-string secret in Secrets Manager on moto; returns its ARN.
pub async fn create_secret(value: &str) -> String {
    let sdk = settings(fresh_tables()).sdk_config();
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let out = client
        .create_secret()
        .name(format!("confab-test-{}", uuid::Uuid::now_v7().simple()))
        .secret_string(value)
        .send()
        .await
        .expect("creating a secret on moto");
    out.arn().expect("the secret's ARN").to_string()
}

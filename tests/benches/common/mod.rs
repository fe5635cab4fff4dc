//! What both benchmarks share: a gateway run in this process, so that its
//! counters can be read.

use confab_functions::config::{AgentConfig, AuthConfig, Config};

/// Starts the gateway in this process with the demo agent pausing
/// `delay_ms` between words; it runs until the process ends.
pub async fn in_process(
    delay_ms: u64,
    web_dir: Option<std::path::PathBuf>,
    aws_emulated: bool,
) -> (confab_local::Started, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        auth: AuthConfig::None,
        agent: AgentConfig::demo(delay_ms),
        limits: confab_functions::ports::Limits::unreachable(),
        max_permission_mode: confab_protocol::model::PermissionMode::Default,
        max_sockets_per_owner: 100_000,
        max_turns: 100_000,
        socket_idle_secs: 600,
        request_timeout_secs: 1_800,
        header_read_secs: 10,
        max_connections: 100_000,
    };
    let opts = confab_local::Options {
        addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        web_dir,
        aws_emulated,
        allow_remote_without_auth: false,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        confab_local::run(opts, config, std::future::pending(), Some(tx))
            .await
            .expect("gateway");
    });
    (rx.await.expect("gateway started"), dir)
}

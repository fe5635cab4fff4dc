//! Confab on one machine: the composition root. It wires the library's
//! adapters (the SQLite store, or the AWS adapters against an emulator) to
//! the gateway that stands in for API Gateway, with push and dispatch in this
//! process.

pub mod dispatch;
#[cfg(feature = "aws")]
pub mod emulated;
pub mod gateway;
pub mod registry;
pub mod serve;

use anyhow::Context as _;
use confab_functions::api::auth::Auth;
use confab_functions::api::rest::{ApiState, router as api_router};
use confab_functions::config::Config;
use confab_functions::domain::runner::RunnerConfig;
use confab_functions::domain::sessions::recover_interrupted;
use confab_functions::ports::{Ports, Push, Store};
use confab_functions::store::sqlite;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Options {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub web_dir: Option<PathBuf>,
    /// Run the AWS adapters against an emulator (`CONFAB_AWS_ENDPOINT`)
    /// instead of SQLite and in-process push and dispatch.
    pub aws_emulated: bool,
    /// With auth off, listen where other machines can reach, and answer
    /// them: `--allow-remote-without-auth`.
    pub allow_remote_without_auth: bool,
}

/// Why the gateway will not listen where it was asked to.
#[derive(Debug, thiserror::Error)]
#[error(
    "auth is off (CONFAB_AUTH=none) and {0} can be reached from other machines: anyone who reaches it could run the agent as you. \
     Listen on 127.0.0.1, turn auth on (CONFAB_AUTH=jwt), or pass --allow-remote-without-auth if you mean it"
)]
pub struct RemoteWithoutAuth(pub SocketAddr);

/// Writes `text` to a file only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new();
    f.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
    let mut file = f
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// What a started gateway tells whoever embeds it.
#[derive(Debug, Clone)]
pub struct Started {
    pub addr: SocketAddr,
    /// SQLite's write counts (absent in emulated-AWS mode).
    pub store: Option<Arc<sqlite::Counters>>,
    /// What the AWS adapters asked of AWS (emulated-AWS mode only).
    #[cfg(feature = "aws")]
    pub aws: Option<Arc<confab_functions::aws::AwsStats>>,
}

/// The adapters one run uses.
struct Backend {
    store: Arc<dyn Store>,
    push: Arc<dyn Push>,
    /// What the REST router and socket handlers start turns with.
    /// None: the in-process runner.
    dispatch: Option<Arc<dyn confab_functions::ports::Dispatch>>,
    counters: Option<Arc<sqlite::Counters>>,
    #[cfg(feature = "aws")]
    aws: Option<Arc<confab_functions::aws::AwsStats>>,
    extra: Option<axum::Router>,
}

/// Runs the gateway until `shutdown` resolves, then ends running turns as
/// interrupted, closes the sockets and returns. `ready` hears where it
/// listens once it does.
pub async fn run(
    opts: Options,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<Started>>,
) -> anyhow::Result<()> {
    let auth_off = matches!(config.auth, confab_functions::config::AuthConfig::None);
    if auth_off && !opts.addr.ip().is_loopback() && !opts.allow_remote_without_auth {
        return Err(RemoteWithoutAuth(opts.addr).into());
    }
    if auth_off && opts.allow_remote_without_auth {
        tracing::warn!(addr = %opts.addr, "auth is off and other machines may connect (--allow-remote-without-auth)");
    }
    // The management endpoint's key; written below, once this gateway
    // holds the data directory.
    let management_key = format!("{:032x}", rand::random::<u128>());
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .with_context(|| format!("listening on {}", opts.addr))?;
    let local = listener.local_addr()?;
    let agent = confab_functions::agents::from_config(&config.agent)?;
    let registry = Arc::new(registry::Registry::default());

    // Turns run as tasks here, in both modes; only who asks differs.
    let runner_parts: (Arc<dyn Store>, Arc<dyn Push>);
    let backend = if opts.aws_emulated {
        #[cfg(feature = "aws")]
        {
            let em = emulated::connect().await?;
            let store: Arc<dyn Store> = em.store.clone();
            let push = em.push(local, &management_key);
            runner_parts = (store.clone(), push.clone());
            Backend {
                store,
                push,
                dispatch: Some(em.dispatch(local)),
                counters: None,
                aws: Some(em.stats.clone()),
                extra: None,
            }
        }
        #[cfg(not(feature = "aws"))]
        anyhow::bail!(
            "this confab was built without the `aws` feature; build with `--features aws`"
        )
    } else {
        let store = sqlite::SqliteStore::open(&opts.data_dir)
            .with_context(|| format!("opening the database in {}", opts.data_dir.display()))?;
        let counters = store.counters();
        store
            .clear_connections()
            .await
            .context("clearing stale connections")?;
        let store: Arc<dyn Store> = Arc::new(store);
        let push: Arc<dyn Push> = Arc::new(registry::LocalPush(registry.clone()));
        runner_parts = (store.clone(), push.clone());
        Backend {
            store,
            push,
            dispatch: None,
            counters: Some(counters),
            #[cfg(feature = "aws")]
            aws: None,
            extra: None,
        }
    };
    // Where this machine's own tools (and tests) find the management key:
    // the data directory, private to the user.
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating {}", opts.data_dir.display()))?;
    write_private(&opts.data_dir.join("management-key"), &management_key)?;
    let runner = Arc::new(dispatch::LocalDispatch::new(
        runner_parts.0,
        runner_parts.1,
        agent.clone(),
        // Emulated AWS streams at the cadence the worker uses on AWS.
        RunnerConfig {
            request_timeout: std::time::Duration::from_secs(config.request_timeout_secs),
            limits: config.limits,
            ..if opts.aws_emulated {
                RunnerConfig::serverless()
            } else {
                RunnerConfig::default()
            }
        },
        config.max_turns,
    ));
    #[cfg(feature = "aws")]
    let backend = {
        let mut b = backend;
        if opts.aws_emulated {
            b.extra = Some(emulated::invoke_routes(
                runner.clone(),
                b.store.clone(),
                b.push.clone(),
            ));
        }
        b
    };
    #[cfg(feature = "aws")]
    let backend_aws = backend.aws.clone();
    let Backend {
        store,
        push,
        dispatch,
        counters,
        extra,
        ..
    } = backend;

    let recovered = recover_interrupted(&*store, &*push)
        .await
        .context("closing interrupted turns")?;
    if recovered > 0 {
        tracing::info!(
            count = recovered,
            "closed turns interrupted by the last shutdown"
        );
    }

    let auth = Arc::new(Auth::from_config(&config.auth));
    let api = api_router(Arc::new(ApiState {
        ports: Ports {
            store: store.clone(),
            push: push.clone(),
            dispatch: dispatch.unwrap_or_else(|| runner.clone()),
            agent: agent.clone(),
            limits: config.limits,
            max_permission_mode: config.max_permission_mode,
        },
        auth: auth.clone(),
    }));
    let api = match extra {
        Some(r) => api.merge(r),
        None => api,
    };
    let gw = Arc::new(gateway::Gateway {
        store: store.clone(),
        push: push.clone(),
        registry: registry.clone(),
        auth,
        local_only: auth_off && !opts.allow_remote_without_auth,
        max_sockets_per_owner: config.max_sockets_per_owner,
        management_key,
        store_writes: counters.clone(),
    });
    let web = match (&config.auth, &*gw.auth) {
        (confab_functions::config::AuthConfig::Oidc(o), Auth::Oidc(verifier)) => gateway::WebApp {
            auth: Some(serde_json::json!({
                "issuer": o.issuer,
                "clientId": o.client_id,
                "scopes": o.scopes,
            })),
            connect_src: verifier.browser_origins().await,
        },
        _ => gateway::WebApp::default(),
    };
    let app = gateway::router(gw, api, opts.web_dir.clone(), web);

    // Scripts and tests read this line to find the port.
    println!("confab listening on http://{local}");
    if let Some(ready) = ready {
        let _ = ready.send(Started {
            addr: local,
            store: counters,
            #[cfg(feature = "aws")]
            aws: backend_aws,
        });
    }
    let mode = if opts.aws_emulated {
        "emulated AWS"
    } else {
        "SQLite"
    };
    tracing::info!(agent = agent.provider(), auth = ?config.auth, mode, data = %opts.data_dir.display(), "Confab is running at http://{local}");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let limits = serve::ServerLimits {
        header_read: std::time::Duration::from_secs(config.header_read_secs),
        max_connections: config.max_connections,
    };
    let server = tokio::spawn(serve::serve(listener, app, limits, async move {
        let _ = stop_rx.await;
    }));
    // Sockets whose heartbeat stopped are closed, as API Gateway closes
    // idle ones (the web app pings every 30 s).
    let idle = std::time::Duration::from_secs(config.socket_idle_secs);
    let sweeper = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval((idle / 4).max(std::time::Duration::from_millis(250)));
            loop {
                tick.tick().await;
                let before = confab_functions::clock::now_ms() - idle.as_millis() as i64;
                let n = registry.close_idle(before);
                if n > 0 {
                    tracing::info!(closed = n, "closed idle sockets");
                }
            }
        })
    };
    shutdown.await;
    sweeper.abort();
    tracing::info!("shutting down: closing running turns");
    runner.drain().await;
    registry.close_all();
    let _ = stop_tx.send(());
    server.await.context("server task")?.context("server")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

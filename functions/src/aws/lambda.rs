//! The Lambda functions: configuration read once at start, the socket event
//! handlers, and the `main` of each binary.

pub use super::secrets::Role;
use super::{ApiGatewayPush, AwsSettings, AwsStats, LambdaDispatch, worker};
use crate::api::auth::Auth;
use crate::api::rest::{ApiState, router};
use crate::config::{AuthConfig, Config};
use crate::domain::runner::RunnerConfig;
use crate::ports::{Agent, Dispatch, Ports, Push, Store};
use crate::store::dynamo::DynamoStore;
pub use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use aws_types::SdkConfig;
use confab_protocol::ConnectionId;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Everything a function needs, built once per cold start.
pub struct Shared {
    pub config: Config,
    pub settings: AwsSettings,
    pub sdk: SdkConfig,
    pub stats: Arc<AwsStats>,
    pub store: Arc<DynamoStore>,
    pub auth: Arc<Auth>,
}

/// A configuration a function cannot start with.
#[derive(Debug, thiserror::Error)]
#[error("Confab cannot start: {0}")]
pub struct StartError(String);

impl Shared {
    /// The configuration of the function `role`, from its environment and
    /// the secrets it reads (`secrets`).
    pub async fn from_env(role: Role) -> Result<Shared, StartError> {
        let settings = AwsSettings::from_env().map_err(|e| StartError(e.to_string()))?;
        let env = |k: &str| std::env::var(k).ok();
        let secrets = super::secrets::resolve(&settings.sdk_config(), role, env)
            .await
            .map_err(|e| {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "reading a secret failed"
                );
                StartError(e.to_string())
            })?;
        let config = Config::from_lookup(|k| secrets.get(k).cloned().or_else(|| env(k)))
            .map_err(|e| StartError(e.to_string()))?;
        Ok(Shared::new(config, settings).await)
    }

    pub async fn new(config: Config, settings: AwsSettings) -> Shared {
        let sdk = settings.sdk_config();
        let stats = Arc::new(AwsStats::default());
        let store = Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            settings.tables.clone(),
            stats.clone(),
        ));
        let auth = Arc::new(Auth::from_config(&config.auth));
        if matches!(config.auth, AuthConfig::None) {
            tracing::warn!("CONFAB_AUTH is none: every caller is the same user");
        }
        Shared {
            config,
            settings,
            sdk,
            stats,
            store,
            auth,
        }
    }

    /// The push for functions that are not called by a socket event.
    fn configured_push(&self) -> Result<Arc<dyn Push>, StartError> {
        let endpoint = self.settings.push_endpoint.as_deref().ok_or_else(|| {
            StartError("CONFAB_PUSH_ENDPOINT must be the WebSocket API's https URL".into())
        })?;
        Ok(Arc::new(ApiGatewayPush::new(
            &self.sdk,
            endpoint,
            self.stats.clone(),
        )))
    }

    fn agent(&self) -> Result<Arc<dyn Agent>, StartError> {
        crate::agents::from_config(&self.config.agent).map_err(|e| StartError(e.to_string()))
    }

    /// The REST router as `http_api` serves it.
    pub fn api(&self) -> Result<axum::Router, StartError> {
        let worker = self
            .settings
            .worker_function
            .as_deref()
            .ok_or_else(|| StartError("CONFAB_WORKER_FUNCTION must name the worker".into()))?;
        Ok(router(Arc::new(ApiState {
            ports: Ports {
                store: self.store.clone(),
                push: self.configured_push()?,
                dispatch: Arc::new(LambdaDispatch::new(&self.sdk, worker, self.stats.clone())),
                agent: self.agent()?,
                limits: self.config.limits,
                max_permission_mode: self.config.max_permission_mode,
            },
            auth: self.auth.clone(),
        })))
    }

    pub fn sockets(&self) -> SocketApp {
        let mut app = SocketApp::new(
            self.store.clone(),
            self.auth.clone(),
            self.sdk.clone(),
            self.stats.clone(),
            self.settings.push_endpoint.clone(),
        );
        app.max_sockets_per_owner = self.config.max_sockets_per_owner;
        app
    }
}

/// The three socket routes over API Gateway's WebSocket events.
pub struct SocketApp {
    pub store: Arc<dyn Store>,
    pub auth: Arc<Auth>,
    pub sdk: SdkConfig,
    pub stats: Arc<AwsStats>,
    /// Overrides the event's own domain and stage.
    pub push_endpoint: Option<String>,
    /// Sockets one owner may hold at once.
    pub max_sockets_per_owner: usize,
    pushes: Mutex<HashMap<String, Arc<ApiGatewayPush>>>,
}

fn respond(status: i64, body: &str) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = status;
    r.body = (!body.is_empty()).then(|| Body::Text(body.to_string()));
    r
}

/// The event's connection id, if it has a valid one.
fn connection_id(ev: &ApiGatewayWebsocketProxyRequest) -> Option<ConnectionId> {
    ev.request_context
        .connection_id
        .as_deref()
        .and_then(|c| ConnectionId::parse(c).ok())
}

impl SocketApp {
    pub fn new(
        store: Arc<dyn Store>,
        auth: Arc<Auth>,
        sdk: SdkConfig,
        stats: Arc<AwsStats>,
        push_endpoint: Option<String>,
    ) -> SocketApp {
        SocketApp {
            store,
            auth,
            sdk,
            stats,
            push_endpoint,
            max_sockets_per_owner: crate::api::socket::MAX_SOCKETS_PER_OWNER,
            pushes: Mutex::default(),
        }
    }

    fn push_for(&self, ev: &ApiGatewayWebsocketProxyRequest) -> Option<Arc<ApiGatewayPush>> {
        let endpoint = match &self.push_endpoint {
            Some(e) => e.clone(),
            None => {
                let ctx = &ev.request_context;
                ApiGatewayPush::endpoint_for(ctx.domain_name.as_deref()?, ctx.stage.as_deref()?)
            }
        };
        let mut pushes = self.pushes.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            pushes
                .entry(endpoint.clone())
                .or_insert_with(|| {
                    Arc::new(ApiGatewayPush::new(
                        &self.sdk,
                        &endpoint,
                        self.stats.clone(),
                    ))
                })
                .clone(),
        )
    }

    /// `$connect`: 200 keeps the socket; 401 refuses it.
    pub async fn connect(&self, ev: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        let Some(conn) = connection_id(&ev) else {
            return respond(400, "no connection id");
        };
        let handshake = crate::api::socket::Handshake {
            ticket: ev.query_string_parameters.first("ticket"),
            token: ev.query_string_parameters.first("token"),
        };
        match crate::api::socket::connect(
            &*self.store,
            &self.auth,
            &conn,
            handshake,
            self.max_sockets_per_owner,
        )
        .await
        {
            Ok(_) => respond(200, ""),
            Err(crate::error::ServiceError::Unauthorized(m)) => respond(401, m),
            Err(crate::error::ServiceError::TooMany(m)) => respond(429, &m),
            Err(e) => {
                tracing::error!(error = &e as &dyn std::error::Error, "connect failed");
                respond(500, "")
            }
        }
    }

    pub async fn disconnect(&self, ev: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        let Some(conn) = connection_id(&ev) else {
            return respond(400, "no connection id");
        };
        match crate::api::socket::disconnect(&*self.store, &conn).await {
            Ok(()) => respond(200, ""),
            Err(e) => {
                tracing::error!(error = &e as &dyn std::error::Error, "disconnect failed");
                respond(500, "")
            }
        }
    }

    /// Every client frame. Answers go out through the management API; the
    /// response body is not sent to the client.
    pub async fn route(&self, ev: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        let Some(conn) = connection_id(&ev) else {
            return respond(400, "no connection id");
        };
        let Some(push) = self.push_for(&ev) else {
            tracing::error!("socket event without domain or stage, and no CONFAB_PUSH_ENDPOINT");
            return respond(500, "");
        };
        let body = match (&ev.body, ev.is_base64_encoded) {
            (Some(b), false) => b.clone(),
            (Some(b), true) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .ok()
                    .and_then(|v| String::from_utf8(v).ok())
                    .unwrap_or_default()
            }
            (None, _) => String::new(),
        };
        match crate::api::socket::route(&*self.store, &*push, &conn, &body).await {
            Ok(()) => respond(200, ""),
            Err(e) => {
                tracing::error!(error = &e as &dyn std::error::Error, "socket frame failed");
                respond(500, "")
            }
        }
    }
}

fn init_tracing() {
    // Lambda adds its own timestamps; JSON-free lines keep logs readable.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .without_time()
        .with_ansi(false)
        .try_init();
}

async fn start(role: Role) -> Result<Shared, Error> {
    init_tracing();
    Shared::from_env(role).await.map_err(|e| {
        tracing::error!("{e}");
        Error::from(e)
    })
}

pub async fn http_api() -> Result<(), Error> {
    let shared = start(Role::Api).await?;
    let app = shared.api()?;
    lambda_http::run(app).await
}

async fn socket_fn<F, Fut>(f: F) -> Result<(), Error>
where
    F: Fn(Arc<SocketApp>, ApiGatewayWebsocketProxyRequest) -> Fut,
    Fut: std::future::Future<Output = ApiGatewayProxyResponse>,
{
    let shared = start(Role::Socket).await?;
    let app = Arc::new(shared.sockets());
    lambda_runtime::run(service_fn(
        |ev: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
            let fut = f(app.clone(), ev.payload);
            async move { Ok::<_, Error>(fut.await) }
        },
    ))
    .await
}

pub async fn ws_connect() -> Result<(), Error> {
    socket_fn(|app, ev| async move { app.connect(ev).await }).await
}

pub async fn ws_disconnect() -> Result<(), Error> {
    socket_fn(|app, ev| async move { app.disconnect(ev).await }).await
}

pub async fn ws_route() -> Result<(), Error> {
    socket_fn(|app, ev| async move { app.route(ev).await }).await
}

pub async fn turn_worker() -> Result<(), Error> {
    let shared = start(Role::Worker).await?;
    let push = shared.configured_push()?;
    let agent = shared.agent()?;
    let runner = RunnerConfig {
        request_timeout: std::time::Duration::from_secs(shared.config.request_timeout_secs),
        limits: shared.config.limits,
        ..RunnerConfig::serverless()
    };
    let store: Arc<dyn Store> = shared.store.clone();
    // The next queued turn goes to a fresh invocation of this function
    // (Lambda names it in the environment).
    let next: Option<Arc<dyn Dispatch>> =
        std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok().map(|name| {
            Arc::new(LambdaDispatch::new(
                &shared.sdk,
                &name,
                shared.stats.clone(),
            )) as Arc<dyn Dispatch>
        });
    lambda_runtime::run(service_fn(|ev: LambdaEvent<worker::WorkerEvent>| {
        let (store, push, agent, runner, next) = (
            store.clone(),
            push.clone(),
            agent.clone(),
            runner.clone(),
            next.clone(),
        );
        async move {
            let remaining = ev
                .context
                .deadline()
                .duration_since(std::time::SystemTime::now())
                .ok();
            worker::Worker {
                store: &*store,
                push: &*push,
                agent: &*agent,
                runner: &runner,
                next: next.as_deref(),
            }
            .handle(ev.payload, remaining)
            .await
            .map_err(Error::from)
        }
    }))
    .await
}

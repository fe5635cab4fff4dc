//! Emulated AWS (`confab --aws-emulated`): the AWS adapters run here. The
//! store is `DynamoStore` on a DynamoDB emulator (moto), pushes go through
//! `ApiGatewayPush` to this gateway's own `@connections`, and turns start
//! through `LambdaDispatch`, whose asynchronous `Invoke` this gateway answers
//! the way Lambda does (202) before running the worker's event.

use crate::dispatch::LocalDispatch;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use confab_functions::aws::worker::WorkerEvent;
use confab_functions::aws::{ApiGatewayPush, AwsSettings, AwsStats, LambdaDispatch};
use confab_functions::domain::sessions::sweep_stale;
use confab_functions::ports::{Dispatch, Push, Store};
use confab_functions::store::dynamo::DynamoStore;
use std::net::SocketAddr;
use std::sync::Arc;

/// The worker's name in emulated mode.
pub const WORKER: &str = "confab-turn-worker";

/// The AWS adapters, set up against the emulator and this gateway.
pub struct Emulated {
    pub store: Arc<DynamoStore>,
    pub stats: Arc<AwsStats>,
    pub settings: AwsSettings,
    pub sdk: confab_functions::aws::SdkConfig,
}

/// Reads the emulator's address and the table names (defaults
/// `confab-sessions`, `confab-messages`, `confab-connections`), and creates
/// the tables when they are missing.
pub async fn connect() -> anyhow::Result<Emulated> {
    let settings = AwsSettings::from_lookup(|k| {
        std::env::var(k).ok().or_else(|| match k {
            "CONFAB_SESSIONS_TABLE" => Some("confab-sessions".into()),
            "CONFAB_MESSAGES_TABLE" => Some("confab-messages".into()),
            "CONFAB_CONNECTIONS_TABLE" => Some("confab-connections".into()),
            _ => None,
        })
    })?;
    anyhow::ensure!(
        settings.aws_endpoint.is_some(),
        "--aws-emulated needs CONFAB_AWS_ENDPOINT, the emulator's URL (such as http://127.0.0.1:5000 for `moto_server -p 5000`)"
    );
    let sdk = settings.sdk_config();
    let stats = Arc::new(AwsStats::default());
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb_client(&sdk),
        settings.tables.clone(),
        stats.clone(),
    ));
    store.create_tables().await.map_err(|e| {
        anyhow::anyhow!(
            "creating the tables in the emulator at {}: {e}",
            settings.aws_endpoint.as_deref().unwrap_or_default()
        )
    })?;
    Ok(Emulated {
        store,
        stats,
        settings,
        sdk,
    })
}

fn aws_sdk_dynamodb_client(
    sdk: &confab_functions::aws::SdkConfig,
) -> confab_functions::store::dynamo::Client {
    confab_functions::store::dynamo::Client::new(sdk)
}

impl Emulated {
    /// Push through the management API of the gateway at `addr`, under its
    /// management key.
    pub fn push(&self, addr: SocketAddr, key: &str) -> Arc<dyn Push> {
        let endpoint = self
            .settings
            .push_endpoint
            .clone()
            .unwrap_or_else(|| format!("http://{addr}/{key}"));
        Arc::new(ApiGatewayPush::new(
            &self.sdk,
            &endpoint,
            self.stats.clone(),
        ))
    }

    /// Dispatch by asynchronous invocation of the gateway at `addr`.
    pub fn dispatch(&self, addr: SocketAddr) -> Arc<dyn Dispatch> {
        Arc::new(LambdaDispatch::with_endpoint(
            &self.sdk,
            &format!("http://{addr}"),
            WORKER,
            self.stats.clone(),
        ))
    }
}

#[derive(Clone)]
struct Worker {
    runner: Arc<LocalDispatch>,
    store: Arc<dyn Store>,
    push: Arc<dyn Push>,
    /// Invocations still to refuse: `CONFAB_EMULATED_INVOKE_FAILURES`, so
    /// that a refused dispatch can be exercised end to end.
    refuse: Arc<std::sync::atomic::AtomicUsize>,
}

/// Fault injection for the emulated `Invoke`: this many of the first
/// invocations are refused, as Lambda refuses one while the function is
/// being updated (409 `ResourceConflictException`, which the SDK does not
/// retry).
pub const INVOKE_FAILURES_VAR: &str = "CONFAB_EMULATED_INVOKE_FAILURES";

/// How often the emulated schedule sweeps, in seconds (EventBridge's
/// `rate(1 minute)` on AWS): `CONFAB_EMULATED_SWEEP_SECS`, 60 by default.
pub const SWEEP_SECS_VAR: &str = "CONFAB_EMULATED_SWEEP_SECS";

/// Lambda's `Invoke` for the worker: `POST
/// /2015-03-31/functions/{name}/invocations`, loopback only. Also starts
/// the worker's schedule: a sweep every `CONFAB_EMULATED_SWEEP_SECS`.
pub fn invoke_routes(
    runner: Arc<LocalDispatch>,
    store: Arc<dyn Store>,
    push: Arc<dyn Push>,
) -> Router {
    let every = std::env::var(SWEEP_SECS_VAR)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(60);
    {
        let (runner, store, push) = (runner.clone(), store.clone(), push.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(every));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = sweep_stale(&*store, &*push, Some(&*runner)).await {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "scheduled sweep failed"
                    );
                }
            }
        });
    }
    Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke).layer(axum::middleware::from_fn(crate::gateway::loopback_only)),
        )
        .with_state(Worker {
            runner,
            store,
            push,
            refuse: Arc::new(std::sync::atomic::AtomicUsize::new(
                std::env::var(INVOKE_FAILURES_VAR)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
        })
}

fn lambda_error(status: StatusCode, kind: &'static str, message: &str) -> Response {
    (
        status,
        [("x-amzn-ErrorType", kind)],
        axum::Json(serde_json::json!({ "Type": "User", "message": message })),
    )
        .into_response()
}

async fn invoke(
    State(w): State<Worker>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if name != WORKER {
        return lambda_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "Function not found",
        );
    }
    let asynchronous = headers
        .get("x-amz-invocation-type")
        .is_some_and(|v| v == "Event");
    if !asynchronous {
        return lambda_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            "the worker is invoked with InvocationType Event",
        );
    }
    let refused = w
        .refuse
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        )
        .is_ok();
    if refused {
        return lambda_error(
            StatusCode::CONFLICT,
            "ResourceConflictException",
            "The operation cannot be performed at this time. The function is currently in the following state: Pending",
        );
    }
    let event: WorkerEvent = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(_) => {
            return lambda_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                "Could not parse request body into json",
            );
        }
    };
    match event {
        WorkerEvent::Turn(job) => {
            if let Err(e) = w.runner.dispatch(job).await {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "worker refused a turn"
                );
                return lambda_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceException",
                    "the worker is shutting down",
                );
            }
        }
        WorkerEvent::Scheduled(_) => {
            tokio::spawn(async move {
                match sweep_stale(&*w.store, &*w.push, Some(&*w.runner)).await {
                    Ok(n) => tracing::info!(closed = n, "swept stale turns"),
                    Err(e) => tracing::warn!(error = &e as &dyn std::error::Error, "sweep failed"),
                }
            });
        }
    }
    StatusCode::ACCEPTED.into_response()
}

//! The REST API as one axum Router, served by lambda_http on AWS and by
//! axum::serve locally.

use super::auth::{Auth, AuthError};
use crate::domain::queue::{self, StartedNow};
use crate::domain::records::Principal;
use crate::domain::requests::{self, Answered};
use crate::domain::sessions::ExportFormat;
use crate::domain::sessions::{self, Created, Sent, Stopped};
use crate::error::ServiceError;
use crate::ports::Ports;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, patch, post};
use axum::{Json, Router};
use confab_protocol::rest::{
    AgentInfo, AnswerRequest, AuthInfo, ConfigResponse, CreateSessionRequest, ErrorBody, ErrorCode,
    ErrorDetail, Health, Limits, RequestEnvelope, SendMessageRequest, SessionEnvelope,
    UpdateSessionRequest,
};
use confab_protocol::rest::{EditQueuedRequest, QueuedEnvelope};
use confab_protocol::{MessageId, RequestId, SessionId, routes, validate};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;

/// Everything the REST handlers reach: the ports, and who may call.
pub struct ApiState {
    pub ports: Ports,
    pub auth: Arc<Auth>,
}

type AppState = Arc<ApiState>;

/// The REST boundary's one error type.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code();
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &self.0 {
            ServiceError::Internal(source) => {
                tracing::error!(
                    error = &**source as &dyn std::error::Error,
                    "request failed"
                );
                "something went wrong on our side; try again".to_string()
            }
            other => other.to_string(),
        };
        let mut res = (
            status,
            Json(ErrorBody {
                error: ErrorDetail { code, message },
                request: None,
            }),
        )
            .into_response();
        if let ServiceError::RateLimited {
            retry_after_secs, ..
        } = self.0
            && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        res
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The authenticated caller.
pub struct Caller(pub String);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Bearer::from_request_parts(parts, state)
            .await
            .map(|Bearer(who)| Caller(who.owner))
    }
}

/// The authenticated caller with their token's expiry.
pub struct Bearer(pub Principal);

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        state
            .auth
            .principal_from_header(header)
            .await
            .map(Bearer)
            .map_err(refused)
    }
}

fn refused(e: AuthError) -> ApiError {
    ApiError(match e {
        AuthError::Missing => ServiceError::Unauthorized("a bearer token is required"),
        AuthError::Invalid => ServiceError::Unauthorized("the token is not valid"),
        AuthError::Expired => ServiceError::TokenExpired,
        AuthError::Unavailable => ServiceError::Unavailable(
            "the identity provider cannot be reached to check your token; try again shortly".into(),
        ),
    })
}

/// A JSON body of at most 64 KiB, with clear errors.
pub struct Body64<T>(pub T);

/// A body over the limit is still read, and dropped as it comes, up to
/// this much, so that a client still sending it gets its 413 rather than a
/// connection closed under it. Past this the connection is closed.
const DRAIN_MAX_BYTES: usize = 1024 * 1024;

async fn drain(mut body: axum::body::BodyDataStream) {
    let mut seen = 0;
    while let Some(Ok(chunk)) = body.next().await {
        seen += chunk.len();
        if seen > DRAIN_MAX_BYTES {
            break;
        }
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body64<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let too_large = || {
            ApiError(ServiceError::TooLarge(format!(
                "request body is over the limit of {} bytes",
                validate::MAX_BODY_BYTES
            )))
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut body = req.into_body().into_data_stream();
        if declared.is_some_and(|n| n > validate::MAX_BODY_BYTES) {
            drain(body).await;
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|_| {
                ApiError(ServiceError::Invalid(
                    "request body could not be read".into(),
                ))
            })?;
            if bytes.len() + chunk.len() > validate::MAX_BODY_BYTES {
                drain(body).await;
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        if bytes.is_empty() {
            return Err(ApiError(ServiceError::Invalid(
                "request body must be a JSON object".into(),
            )));
        }
        serde_json::from_slice(&bytes).map(Body64).map_err(|e| {
            let message = format!("request body is not valid: {e}");
            // A value over its limit (message text) is a 413, as the body is.
            ApiError(if validate::names_too_large(&message) {
                ServiceError::TooLarge(message)
            } else {
                ServiceError::Invalid(message)
            })
        })
    }
}

/// The session id of a path such as `/api/sessions/{id}`, checked: a
/// malformed one is a 400 before any handler runs.
pub struct SessionPath(pub SessionId);

impl<S: Send + Sync> FromRequestParts<S> for SessionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError(ServiceError::Invalid("the path is not valid".into())))?;
        SessionId::parse(raw)
            .map(SessionPath)
            .map_err(|e| ApiError(e.into()))
    }
}

/// The session and request ids of `/api/sessions/{id}/requests/{requestId}`,
/// checked.
pub struct RequestPath(pub SessionId, pub RequestId);

impl<S: Send + Sync> FromRequestParts<S> for RequestPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((sid, rid)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError(ServiceError::Invalid("the path is not valid".into())))?;
        let sid = SessionId::parse(sid).map_err(|e| ApiError(e.into()))?;
        let rid = RequestId::parse(rid).map_err(|e| ApiError(e.into()))?;
        Ok(RequestPath(sid, rid))
    }
}

/// The session and message ids of `/api/sessions/{id}/queue/{messageId}`,
/// checked.
pub struct QueuedPath(pub SessionId, pub MessageId);

impl<S: Send + Sync> FromRequestParts<S> for QueuedPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((sid, mid)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError(ServiceError::Invalid("the path is not valid".into())))?;
        let sid = SessionId::parse(sid).map_err(|e| ApiError(e.into()))?;
        let mid = MessageId::parse(mid).map_err(|e| ApiError(e.into()))?;
        Ok(QueuedPath(sid, mid))
    }
}

/// Query parameters as strings; parsed by each handler with clear errors.
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|_| ApiError(ServiceError::Invalid("query string is not valid".into())))
    }
}

impl Params {
    fn text(&self, k: &str) -> Option<String> {
        self.0.get(k).cloned()
    }

    /// A value of a checked type (an id), with the type's own error.
    fn parsed<T: std::str::FromStr<Err = validate::Invalid>>(
        &self,
        k: &str,
    ) -> Result<Option<T>, ApiError> {
        self.0
            .get(k)
            .map(|v| v.parse::<T>())
            .transpose()
            .map_err(|e| ApiError(e.into()))
    }

    fn number<T: std::str::FromStr>(&self, k: &'static str) -> Result<Option<T>, ApiError> {
        match self.0.get(k) {
            None => Ok(None),
            Some(v) => v.parse::<T>().map(Some).map_err(|_| {
                ApiError(ServiceError::Invalid(format!("{k} must be a whole number")))
            }),
        }
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route(routes::HEALTH, get(health))
        .route(routes::CONFIG, get(config))
        .route(routes::OPENAPI, get(openapi))
        .route(routes::PROJECTS, get(projects))
        .route(routes::SESSIONS, post(create).get(list))
        .route(routes::SESSION, get(detail).patch(update).delete(remove))
        .route(routes::MESSAGES, post(send).get(messages))
        .route(routes::STOP, post(stop))
        .route(routes::REQUEST, post(answer_request))
        .route(routes::QUEUED, patch(edit_queued).delete(cancel_queued))
        .route(routes::QUEUED_START, post(start_queued))
        .route(routes::EXPORT, get(export_session))
        .route(routes::SOCKET_TICKET, post(socket_ticket))
        // Unknown API paths stay JSON 404s even where a web app serves `/`.
        .route(routes::PREFIX, any(not_found))
        .route(&format!("{}/{{*rest}}", routes::PREFIX), any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError(ServiceError::NotFound)
}

async fn method_not_allowed() -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: confab_protocol::rest::ErrorCode::InvalidRequest,
            message: "this method is not allowed here".into(),
        },
        request: None,
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// The OpenAPI document, built once.
async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| super::contract::openapi().to_string());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        doc.clone(),
    )
        .into_response()
}

async fn health() -> Json<Health> {
    Json(Health { ok: true })
}

async fn config(State(st): State<AppState>) -> Json<ConfigResponse> {
    Json(ConfigResponse {
        agent: AgentInfo {
            provider: st.ports.agent.provider().to_string(),
            model: st.ports.agent.model().to_string(),
        },
        auth: AuthInfo {
            mode: st.auth.mode().into(),
        },
        limits: Limits {
            max_message_bytes: validate::MAX_MESSAGE_BYTES,
            max_title_chars: validate::MAX_TITLE_CHARS,
            max_permission_mode: st.ports.max_permission_mode,
            sessions_per_minute: st.ports.limits.creates_per_minute,
            messages_per_minute: st.ports.limits.sends_per_minute,
            turns_at_once: st.ports.limits.turns_per_owner,
            daily_tokens: st.ports.limits.daily_tokens,
        },
    })
}

async fn socket_ticket(State(st): State<AppState>, Bearer(who): Bearer) -> ApiResult<Response> {
    let ticket = super::socket::ticket(&*st.ports.store, &who).await?;
    Ok((StatusCode::CREATED, Json(ticket)).into_response())
}

async fn projects(State(st): State<AppState>, Caller(owner): Caller) -> ApiResult<Response> {
    Ok(Json(sessions::projects(&*st.ports.store, &owner).await?).into_response())
}

async fn create(
    State(st): State<AppState>,
    Caller(owner): Caller,
    Body64(req): Body64<CreateSessionRequest>,
) -> ApiResult<Response> {
    Ok(
        match sessions::create_session(&st.ports, &owner, req).await? {
            Created::Created(body) => (StatusCode::CREATED, Json(body)).into_response(),
            Created::AlreadyExisted(body) => (StatusCode::OK, Json(body)).into_response(),
        },
    )
}

async fn list(State(st): State<AppState>, Caller(owner): Caller, p: Params) -> ApiResult<Response> {
    let page = sessions::list(
        &*st.ports.store,
        &owner,
        p.parsed("projectId")?,
        p.text("q"),
        p.number("limit")?,
        p.text("cursor"),
    )
    .await?;
    Ok(Json(page).into_response())
}

async fn detail(
    State(st): State<AppState>,
    Caller(owner): Caller,
    SessionPath(id): SessionPath,
) -> ApiResult<Response> {
    Ok(Json(sessions::detail(&*st.ports.store, &owner, &id).await?).into_response())
}

async fn messages(
    State(st): State<AppState>,
    Caller(owner): Caller,
    SessionPath(id): SessionPath,
    p: Params,
) -> ApiResult<Response> {
    let page = sessions::messages(
        &*st.ports.store,
        &owner,
        &id,
        p.number("afterSeq")?,
        p.number("beforeSeq")?,
        p.number("limit")?,
    )
    .await?;
    Ok(Json(page).into_response())
}

async fn update(
    State(st): State<AppState>,
    Caller(owner): Caller,
    SessionPath(id): SessionPath,
    Body64(req): Body64<UpdateSessionRequest>,
) -> ApiResult<Response> {
    let session = sessions::update(&st.ports, &owner, &id, req).await?;
    Ok(Json(SessionEnvelope { session }).into_response())
}

async fn remove(
    State(st): State<AppState>,
    Caller(owner): Caller,
    SessionPath(id): SessionPath,
) -> ApiResult<Response> {
    sessions::delete(&st.ports, &owner, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn send(
    State(st): State<AppState>,
    Caller(owner): Caller,
    SessionPath(id): SessionPath,
    Body64(req): Body64<SendMessageRequest>,
) -> ApiResult<Response> {
    Ok(
        match sessions::send_message(&st.ports, &owner, &id, req).await? {
            Sent::Started(body) => (StatusCode::ACCEPTED, Json(body)).into_response(),
            Sent::AlreadyStored(body) => (StatusCode::OK, Json(body)).into_response(),
            Sent::Queued(body) => (StatusCode::ACCEPTED, Json(body)).into_response(),
        },
    )
}

/// `PATCH /api/sessions/{id}/queue/{messageId}`: 200 with the message as
/// edited; 409 once it started.
async fn edit_queued(
    State(st): State<AppState>,
    Caller(owner): Caller,
    QueuedPath(id, message_id): QueuedPath,
    Body64(body): Body64<EditQueuedRequest>,
) -> ApiResult<Json<QueuedEnvelope>> {
    let queued = queue::edit(&st.ports, &owner, &id, &message_id, body.text).await?;
    Ok(Json(QueuedEnvelope { queued }))
}

/// `DELETE /api/sessions/{id}/queue/{messageId}`: 204; 409 once it started.
async fn cancel_queued(
    State(st): State<AppState>,
    Caller(owner): Caller,
    QueuedPath(id, message_id): QueuedPath,
) -> ApiResult<StatusCode> {
    queue::cancel(&st.ports, &owner, &id, &message_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/sessions/{id}/queue/{messageId}/start`: 200 with the message
/// and its turn when none ran; 202 with the queue when the running turn was
/// asked to stop and this message starts next.
async fn start_queued(
    State(st): State<AppState>,
    Caller(owner): Caller,
    QueuedPath(id, message_id): QueuedPath,
) -> ApiResult<Response> {
    Ok(
        match queue::start_now(&st.ports, &owner, &id, &message_id).await? {
            StartedNow::Started(body) => (StatusCode::OK, Json(body)).into_response(),
            StartedNow::Next(body) => (StatusCode::ACCEPTED, Json(body)).into_response(),
        },
    )
}

async fn stop(
    State(st): State<AppState>,
    Caller(owner): Caller,
    SessionPath(id): SessionPath,
) -> ApiResult<Response> {
    let (status, session) = match sessions::stop(&st.ports, &owner, &id).await? {
        Stopped::Stopped(session) => (StatusCode::ACCEPTED, session),
        Stopped::WasIdle(session) => (StatusCode::OK, session),
    };
    Ok((status, Json(SessionEnvelope { session })).into_response())
}

/// `POST /api/sessions/{id}/requests/{requestId}`: 200 with the request as
/// answered; 409 with the answer that came first.
async fn answer_request(
    State(st): State<AppState>,
    Caller(owner): Caller,
    RequestPath(id, request_id): RequestPath,
    Body64(body): Body64<AnswerRequest>,
) -> ApiResult<Response> {
    Ok(
        match requests::answer(&st.ports, &owner, &id, &request_id, body).await? {
            Answered::Now(request) => {
                (StatusCode::OK, Json(RequestEnvelope { request })).into_response()
            }
            Answered::Already(request) => (
                StatusCode::CONFLICT,
                Json(ErrorBody {
                    error: ErrorDetail {
                        code: ErrorCode::Conflict,
                        message: "this request was answered already".into(),
                    },
                    request: Some(request),
                }),
            )
                .into_response(),
        },
    )
}

async fn export_session(
    State(st): State<AppState>,
    Caller(owner): Caller,
    SessionPath(id): SessionPath,
    p: Params,
) -> ApiResult<Response> {
    let format = p.text("format").unwrap_or_else(|| "md".into());
    let (kind, content_type) = match format.as_str() {
        "md" => (ExportFormat::Markdown, "text/markdown; charset=utf-8"),
        "json" => (ExportFormat::Json, "application/json"),
        _ => {
            return Err(ApiError(ServiceError::Invalid(
                "format must be md or json".into(),
            )));
        }
    };
    let (session, body) =
        sessions::export_stream(st.ports.store.clone(), &owner, &id, kind).await?;
    let body = body.map(|chunk| {
        chunk.map_err(|e| {
            tracing::error!(
                error = &e as &dyn std::error::Error,
                "export failed part way"
            );
            std::io::Error::other("the export could not be read to its end")
        })
    });
    let disposition = format!("attachment; filename=\"confab-{}.{format}\"", session.id);
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).map_err(ServiceError::internal)?,
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

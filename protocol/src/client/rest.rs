//! One typed REST client for every client of the API (the web app, the test
//! harness): each call of the contract, its path from `routes`, its body and
//! its answer, over whatever carries HTTP (`Transport`: the browser's fetch,
//! reqwest). No I/O here.

use crate::ids::SessionId;
use crate::model::{PermissionMode, SessionSummary};
use crate::rest::{
    ConfigResponse, CreateSessionRequest, ErrorBody, ErrorCode, MessagePage, NewMessage,
    SendAnswer, SendMessageRequest, SessionDetail, SessionEnvelope, SessionPage,
    SessionWithMessages, UpdateSessionRequest,
};
use crate::routes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::future::Future;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A request as the transport sends it: the path under the API's base,
/// and a JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: Method,
    pub path: String,
    pub body: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// What carries a request: it adds the base URL and the credentials.
pub trait Transport {
    /// Why a request got no answer.
    type Error: fmt::Display;
    fn send(&self, request: HttpRequest)
    -> impl Future<Output = Result<HttpResponse, Self::Error>>;
}

/// Why a call failed, in words for the person using the app.
#[derive(Clone, Debug, PartialEq)]
pub enum RestError {
    /// No answer: the server could not be reached.
    Unreachable(String),
    NotFound,
    /// The server refused, with its reason.
    Refused {
        status: u16,
        code: Option<ErrorCode>,
        message: String,
    },
    /// The answer could not be read.
    Unreadable,
}

impl fmt::Display for RestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestError::Unreachable(_) => {
                f.write_str("The server could not be reached. Check your connection and try again.")
            }
            RestError::NotFound => f.write_str("This session does not exist."),
            RestError::Refused { message, .. } => f.write_str(message),
            RestError::Unreadable => f.write_str("The server's answer could not be read."),
        }
    }
}

impl std::error::Error for RestError {}

/// A successful answer with its status: a create answers 201, or 200 when
/// it was done before.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer<T> {
    pub status: u16,
    pub value: T,
}

pub struct RestClient<T> {
    pub transport: T,
}

impl<T: Transport> RestClient<T> {
    pub fn new(transport: T) -> RestClient<T> {
        RestClient { transport }
    }

    async fn exchange(
        &self,
        method: Method,
        path: String,
        body: Option<String>,
    ) -> Result<HttpResponse, RestError> {
        let r = self
            .transport
            .send(HttpRequest { method, path, body })
            .await
            .map_err(|e| RestError::Unreachable(e.to_string()))?;
        match r.status {
            200..=299 => Ok(r),
            404 => Err(RestError::NotFound),
            status => {
                let refusal = serde_json::from_str::<serde_json::Value>(&r.body)
                    .and_then(serde_json::from_value::<ErrorBody>)
                    .ok();
                Err(RestError::Refused {
                    status,
                    code: refusal.as_ref().map(|b| b.error.code),
                    message: refusal
                        .map(|b| b.error.message)
                        .unwrap_or_else(|| format!("The server answered {status}.")),
                })
            }
        }
    }

    async fn call<R: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<String>,
    ) -> Result<Answer<R>, RestError> {
        let r = self.exchange(method, path, body).await?;
        // Through a `Value`, as socket events are read: each type then has
        // one reader in the web app rather than one per source.
        let value = serde_json::from_str::<serde_json::Value>(&r.body)
            .and_then(serde_json::from_value)
            .map_err(|_| RestError::Unreadable)?;
        Ok(Answer {
            status: r.status,
            value,
        })
    }

    fn json<B: Serialize>(body: &B) -> Result<Option<String>, RestError> {
        serde_json::to_string(body)
            .map(Some)
            .map_err(|_| RestError::Unreadable)
    }

    /// A one-use ticket to open the socket with.
    pub async fn socket_ticket(&self) -> Result<crate::rest::SocketTicket, RestError> {
        Ok(self
            .call(Method::Post, routes::SOCKET_TICKET.into(), None)
            .await?
            .value)
    }

    pub async fn config(&self) -> Result<ConfigResponse, RestError> {
        Ok(self
            .call(Method::Get, routes::CONFIG.into(), None)
            .await?
            .value)
    }

    /// The newest `limit` sessions.
    pub async fn list_sessions(&self, limit: usize) -> Result<SessionPage, RestError> {
        let path = routes::session_page(limit);
        Ok(self.call(Method::Get, path, None).await?.value)
    }

    pub async fn session(&self, id: &SessionId) -> Result<SessionDetail, RestError> {
        Ok(self
            .call(Method::Get, routes::session(id), None)
            .await?
            .value)
    }

    /// A page of messages: after seq `after`, or before seq `before`.
    pub async fn messages(
        &self,
        id: &SessionId,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<MessagePage, RestError> {
        let path = routes::message_page(id, after, before, limit);
        Ok(self.call(Method::Get, path, None).await?.value)
    }

    /// Creates session `id` in `project_id` with its first message.
    pub async fn create_session(
        &self,
        request: &CreateSessionRequest,
    ) -> Result<Answer<SessionWithMessages>, RestError> {
        let body = Self::json(request)?;
        self.call(Method::Post, routes::SESSIONS.into(), body).await
    }

    pub async fn send_message(
        &self,
        id: &SessionId,
        message: NewMessage,
        permission_mode: Option<PermissionMode>,
    ) -> Result<Answer<SendAnswer>, RestError> {
        let body = Self::json(&SendMessageRequest {
            id: message.id,
            text: message.text,
            permission_mode,
        })?;
        self.call(Method::Post, routes::messages(id), body).await
    }

    /// New text for a queued message; a 409 (`conflict`) once it started.
    pub async fn edit_queued(
        &self,
        id: &SessionId,
        message_id: &crate::MessageId,
        text: crate::MessageText,
    ) -> Result<crate::model::QueuedMessage, RestError> {
        let body = Self::json(&crate::rest::EditQueuedRequest { text })?;
        let a: Answer<crate::rest::QueuedEnvelope> = self
            .call(Method::Patch, routes::queued(id, message_id), body)
            .await?;
        Ok(a.value.queued)
    }

    /// Cancels a queued message; a 409 (`conflict`) once it started.
    pub async fn cancel_queued(
        &self,
        id: &SessionId,
        message_id: &crate::MessageId,
    ) -> Result<(), RestError> {
        self.exchange(Method::Delete, routes::queued(id, message_id), None)
            .await
            .map(|_| ())
    }

    /// Starts a queued message now, stopping the running turn first: 200
    /// when it started, 202 when it starts as the running turn ends. What
    /// changed comes to every tab as events, so the body is not read here.
    pub async fn start_queued(
        &self,
        id: &SessionId,
        message_id: &crate::MessageId,
    ) -> Result<u16, RestError> {
        let r = self
            .exchange(Method::Post, routes::queued_start(id, message_id), None)
            .await?;
        Ok(r.status)
    }

    /// Stops the running turn; 202 when one was running.
    pub async fn stop(&self, id: &SessionId) -> Result<Answer<SessionSummary>, RestError> {
        let a: Answer<SessionEnvelope> = self.call(Method::Post, routes::stop(id), None).await?;
        Ok(Answer {
            status: a.status,
            value: a.value.session,
        })
    }

    /// Answers a request the running turn waits on. A 409 (answered
    /// already, in another tab) is `Refused` with code `conflict`.
    pub async fn answer_request(
        &self,
        id: &SessionId,
        request_id: &crate::RequestId,
        answer: &crate::rest::AnswerRequest,
    ) -> Result<crate::model::PendingRequest, RestError> {
        let body = Self::json(answer)?;
        let a: Answer<crate::rest::RequestEnvelope> = self
            .call(Method::Post, routes::request(id, request_id), body)
            .await?;
        Ok(a.value.request)
    }

    pub async fn update(
        &self,
        id: &SessionId,
        request: &UpdateSessionRequest,
    ) -> Result<SessionSummary, RestError> {
        let body = Self::json(request)?;
        let a: Answer<SessionEnvelope> =
            self.call(Method::Patch, routes::session(id), body).await?;
        Ok(a.value.session)
    }

    pub async fn delete(&self, id: &SessionId) -> Result<(), RestError> {
        self.exchange(Method::Delete, routes::session(id), None)
            .await
            .map(|_| ())
    }

    /// The session as a file's text (`md` or `json`).
    pub async fn export(&self, id: &SessionId, format: &str) -> Result<String, RestError> {
        let r = self
            .exchange(Method::Get, routes::export(id, format), None)
            .await?;
        Ok(r.body)
    }
}

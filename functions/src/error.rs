//! The domain's one error type. REST and the socket each map it at their
//! boundary; internal failures keep their source and are logged there, never
//! shown.

use crate::ports::{BoxError, StoreError};
use confab_protocol::rest::ErrorCode;
use confab_protocol::validate::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("the token has expired: sign in again")]
    TokenExpired,
    #[error("session not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("a turn is running in this session: stop it or wait for it to end")]
    TurnRunning,
    /// An owner's limit, counted in the store; the message names it.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// A limit on how much one owner holds at once (sockets).
    #[error("{0}")]
    TooMany(String),
    /// Stored, but not carried on; the same request again finishes it.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ServiceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::Invalid(_) => ErrorCode::InvalidRequest,
            ServiceError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            ServiceError::Unauthorized(_) => ErrorCode::Unauthorized,
            ServiceError::TokenExpired => ErrorCode::TokenExpired,
            ServiceError::NotFound => ErrorCode::NotFound,
            ServiceError::Conflict(_) => ErrorCode::Conflict,
            ServiceError::TurnRunning => ErrorCode::TurnRunning,
            ServiceError::RateLimited { .. } | ServiceError::TooMany(_) => ErrorCode::RateLimited,
            ServiceError::Unavailable(_) => ErrorCode::Unavailable,
            ServiceError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> ServiceError {
        ServiceError::Internal(Box::new(e))
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Internal(Box::new(e))
    }
}

impl From<Invalid> for ServiceError {
    fn from(e: Invalid) -> Self {
        if e.too_large {
            ServiceError::TooLarge(e.to_string())
        } else {
            ServiceError::Invalid(e.to_string())
        }
    }
}

//! The error of a composed operation: a code, a message for the client and, for input
//! errors, the field. Made from peer statuses and edge checks through the one mapping in
//! `oba_kit::error`; the GraphQL and REST adapters each render it their way.

use oba_kit::ServiceError;
use oba_kit::error::{ErrorCode, field_of, retry_after_of};
use tonic::Status;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// With TOO_MANY_REQUESTS: seconds after which to try again.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::BadUserInput,
            message: message.into(),
            field: Some(field.to_owned()),
            retry_after_secs: None,
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }
}

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        let code = ErrorCode::of_status(&status);
        let message = match code {
            ErrorCode::Unavailable => "a service is temporarily unavailable, try again".to_owned(),
            ErrorCode::Internal => {
                tracing::error!(status = ?status, "peer failed");
                "internal error".to_owned()
            }
            _ => status.message().to_owned(),
        };
        Self {
            code,
            message,
            field: field_of(&status).map(str::to_owned),
            retry_after_secs: retry_after_of(&status),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        let code = err.code();
        match err {
            ServiceError::InvalidInput { field, message }
            | ServiceError::Conflict { field, message } => Self {
                code,
                message,
                field: Some(field.to_owned()),
                retry_after_secs: None,
            },
            ServiceError::TooManyRequests {
                message,
                retry_after_secs,
            } => Self {
                code,
                message,
                field: None,
                retry_after_secs: Some(retry_after_secs),
            },
            ServiceError::Internal(detail) => {
                tracing::error!(%detail, "edge failed");
                Self::new(code, "internal error")
            }
            other => Self::new(code, other.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

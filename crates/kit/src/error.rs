//! One set of error codes for the whole system, and the one mapping between them.
//!
//! A service returns [`ServiceError`]; it crosses gRPC as a `tonic::Status` (the field name of
//! an input error travels in the `oba-field` metadata entry); the edge turns the status back
//! into an [`ErrorCode`] for GraphQL `extensions.code` and REST statuses. Internal details
//! are logged where they happen and never sent to a client.

use tonic::{Code, Status};

/// Metadata key carrying the name of the input field an error is about.
pub const FIELD_METADATA: &str = "oba-field";

/// Metadata key carrying, with RESOURCE_EXHAUSTED, the seconds after which to try again.
pub const RETRY_AFTER_METADATA: &str = "retry-after";

/// The codes a client sees, as GraphQL `extensions.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    NotFound,
    BadUserInput,
    /// Over a rate or concurrency limit: try again after a while (HTTP 429).
    TooManyRequests,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::TooManyRequests => "TOO_MANY_REQUESTS",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }

    /// The code of a status received from a peer service.
    pub fn of_status(status: &Status) -> Self {
        match status.code() {
            Code::InvalidArgument | Code::AlreadyExists | Code::OutOfRange => Self::BadUserInput,
            Code::FailedPrecondition => Self::BadUserInput,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::Forbidden,
            Code::NotFound => Self::NotFound,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Self::Unavailable,
            // No service answers UNKNOWN on purpose: tonic reports a connection reset or a
            // peer dying mid-answer that way, so it is the peer being unavailable.
            Code::Unknown => Self::Unavailable,
            Code::ResourceExhausted => Self::TooManyRequests,
            _ => Self::Internal,
        }
    }

    /// The HTTP status the REST API answers with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Unauthenticated => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::BadUserInput => 422,
            Self::TooManyRequests => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

/// The error every service operation returns.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Input that breaks a rule; `field` names the offending input.
    #[error("{field}: {message}")]
    InvalidInput {
        field: &'static str,
        message: String,
    },
    /// A value that must be unique is taken.
    #[error("{field}: {message}")]
    Conflict {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Over a rate or concurrency limit; worth trying again after `retry_after_secs`.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// A dependency (database, peer service) cannot be reached right now.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the message is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            field,
            message: message.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidInput { .. } | Self::Conflict { .. } => ErrorCode::BadUserInput,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::TooManyRequests { .. } => ErrorCode::TooManyRequests,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<sea_orm::DbErr> for ServiceError {
    fn from(err: sea_orm::DbErr) -> Self {
        if crate::db::is_unavailable(&err) {
            tracing::warn!(error = %err, "database unavailable");
            Self::Unavailable("database".into())
        } else {
            tracing::error!(error = %err, "database error");
            Self::Internal("database".into())
        }
    }
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::InvalidInput { field, message } => {
                with_field(Status::invalid_argument(message), field)
            }
            ServiceError::Conflict { field, message } => {
                with_field(Status::already_exists(message), field)
            }
            ServiceError::Unauthenticated(m) => Status::unauthenticated(m),
            ServiceError::Forbidden(m) => Status::permission_denied(m),
            ServiceError::NotFound(what) => Status::not_found(format!("{what} not found")),
            ServiceError::TooManyRequests {
                message,
                retry_after_secs,
            } => {
                let mut status = Status::resource_exhausted(message);
                status.metadata_mut().insert(
                    RETRY_AFTER_METADATA,
                    tonic::metadata::MetadataValue::from(retry_after_secs),
                );
                status
            }
            ServiceError::Unavailable(what) => {
                Status::unavailable(format!("{what} is temporarily unavailable"))
            }
            // The detail was logged where it happened; clients get no internals.
            ServiceError::Internal(_) => Status::internal("internal error"),
        }
    }
}

fn with_field(mut status: Status, field: &'static str) -> Status {
    status.metadata_mut().insert(
        FIELD_METADATA,
        tonic::metadata::MetadataValue::from_static(field),
    );
    status
}

/// Parses an id sent by a peer; a malformed one is the caller's input error.
pub fn parse_id(field: &'static str, raw: &str) -> Result<uuid::Uuid, ServiceError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ServiceError::invalid(field, "is not a valid id"))
}

/// Parses a list of ids sent by a peer.
pub fn parse_ids(field: &'static str, raw: &[String]) -> Result<Vec<uuid::Uuid>, ServiceError> {
    raw.iter().map(|id| parse_id(field, id)).collect()
}

/// Parses an id that may be empty (an anonymous viewer).
pub fn parse_optional_id(
    field: &'static str,
    raw: &str,
) -> Result<Option<uuid::Uuid>, ServiceError> {
    if raw.is_empty() {
        Ok(None)
    } else {
        parse_id(field, raw).map(Some)
    }
}

/// The seconds after which a peer's RESOURCE_EXHAUSTED says to try again, if it said.
pub fn retry_after_of(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(RETRY_AFTER_METADATA)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The input field a peer's status is about, if it named one.
pub fn field_of(status: &Status) -> Option<&str> {
    status.metadata().get(FIELD_METADATA)?.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_keep_their_field_across_grpc() {
        let status = Status::from(ServiceError::invalid("title", "must not be empty"));
        assert_eq!(ErrorCode::of_status(&status), ErrorCode::BadUserInput);
        assert_eq!(field_of(&status), Some("title"));
        assert_eq!(status.message(), "must not be empty");
    }

    #[test]
    fn too_many_requests_says_when_to_retry() {
        let status = Status::from(ServiceError::TooManyRequests {
            message: "slow down".into(),
            retry_after_secs: 7,
        });
        assert_eq!(ErrorCode::of_status(&status), ErrorCode::TooManyRequests);
        assert_eq!(retry_after_of(&status), Some(7));
        assert_eq!(ErrorCode::TooManyRequests.http_status(), 429);
    }

    #[test]
    fn a_transport_failure_is_unavailable_not_internal() {
        let reset = Status::unknown("transport error");
        assert_eq!(ErrorCode::of_status(&reset), ErrorCode::Unavailable);
        assert_eq!(ErrorCode::of_status(&reset).http_status(), 503);
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let status = Status::from(ServiceError::Internal("disk full at /secret".into()));
        assert_eq!(ErrorCode::of_status(&status), ErrorCode::Internal);
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn every_code_maps_round_trip() {
        let cases = [
            (
                ServiceError::Unauthenticated("x".into()),
                ErrorCode::Unauthenticated,
            ),
            (ServiceError::Forbidden("x".into()), ErrorCode::Forbidden),
            (
                ServiceError::TooManyRequests {
                    message: "slow down".into(),
                    retry_after_secs: 3,
                },
                ErrorCode::TooManyRequests,
            ),
            (ServiceError::NotFound("post"), ErrorCode::NotFound),
            (
                ServiceError::Unavailable("db".into()),
                ErrorCode::Unavailable,
            ),
            (
                ServiceError::Conflict {
                    field: "email",
                    message: "taken".into(),
                },
                ErrorCode::BadUserInput,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code);
            assert_eq!(ErrorCode::of_status(&Status::from(err)), code);
        }
    }
}

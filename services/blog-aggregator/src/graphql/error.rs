//! GraphQL errors with `extensions.code` (and `extensions.field` for input errors), made from
//! peer statuses and edge errors through the one mapping in `oba_kit::error`.

use async_graphql::ErrorExtensions;
use oba_kit::ServiceError;
use oba_kit::error::{ErrorCode, field_of};
use tonic::Status;

pub fn coded(
    code: ErrorCode,
    message: impl Into<String>,
    field: Option<&str>,
) -> async_graphql::Error {
    let field = field.map(str::to_owned);
    async_graphql::Error::new(message).extend_with(|_, ext| {
        ext.set("code", code.as_str());
        if let Some(field) = &field {
            ext.set("field", field.as_str());
        }
    })
}

pub fn from_status(status: &Status) -> async_graphql::Error {
    let code = ErrorCode::of_status(status);
    let message = match code {
        ErrorCode::Unavailable => "a service is temporarily unavailable, try again".to_owned(),
        ErrorCode::Internal => {
            tracing::error!(status = ?status, "peer failed");
            "internal error".to_owned()
        }
        _ => status.message().to_owned(),
    };
    coded(code, message, field_of(status))
}

pub fn from_service_error(err: &ServiceError) -> async_graphql::Error {
    let field = match err {
        ServiceError::InvalidInput { field, .. } | ServiceError::Conflict { field, .. } => {
            Some(*field)
        }
        _ => None,
    };
    let message = match err {
        ServiceError::InvalidInput { message, .. } | ServiceError::Conflict { message, .. } => {
            message.clone()
        }
        ServiceError::Internal(_) => "internal error".to_owned(),
        other => other.to_string(),
    };
    coded(err.code(), message, field)
}

/// `?` on a peer call or an edge check inside a resolver.
pub trait OrGraphqlError<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> OrGraphqlError<T> for Result<T, Status> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|s| from_status(&s))
    }
}

impl<T> OrGraphqlError<T> for Result<T, ServiceError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| from_service_error(&e))
    }
}

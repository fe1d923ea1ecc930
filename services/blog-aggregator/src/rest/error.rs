//! REST errors in the RealWorld shape: `{"errors": {"<field>": ["message"]}}`, with the
//! status the spec names (401, 403, 404, 422), from the same `ApiError` GraphQL uses.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use oba_kit::ErrorCode;
use serde_json::json;

use crate::compose::ApiError;

/// An error answered by the REST API.
#[derive(Debug)]
pub struct RestError {
    status: StatusCode,
    field: String,
    message: String,
    retry_after_secs: Option<u64>,
}

impl RestError {
    pub fn new(status: StatusCode, field: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            field: field.to_owned(),
            message: message.into(),
            retry_after_secs: None,
        }
    }
}

impl From<ApiError> for RestError {
    fn from(err: ApiError) -> Self {
        let status = StatusCode::from_u16(err.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let field = match (&err.field, err.code) {
            (Some(field), ErrorCode::BadUserInput) => field.clone(),
            _ => "body".to_owned(),
        };
        Self {
            status,
            field,
            message: err.message,
            retry_after_secs: err.retry_after_secs,
        }
    }
}

/// A body that is not JSON, or JSON of the wrong shape.
impl From<JsonRejection> for RestError {
    fn from(rejection: JsonRejection) -> Self {
        let status = match rejection {
            JsonRejection::JsonSyntaxError(_) => StatusCode::BAD_REQUEST,
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::BytesRejection(ref e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, "body", rejection.body_text())
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "errors": { self.field: [self.message] } })),
        )
            .into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

pub type RestResult<T> = Result<T, RestError>;

/// Gives the body-limit layer's plain-text 413 the RealWorld error shape.
pub async fn realworld_413(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        let limit = crate::BODY_LIMIT_BYTES;
        return RestError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body",
            format!("is larger than {limit} bytes"),
        )
        .into_response();
    }
    response
}

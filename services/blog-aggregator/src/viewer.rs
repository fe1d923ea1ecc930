//! Who is asking: the verified bearer of the request's token, if any.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use oba_kit::ServiceError;
use oba_kit::auth::{Claims, TokenError, TokenVerifier};

#[derive(Debug, Clone)]
pub enum Viewer {
    Anonymous,
    User(Claims),
}

impl Viewer {
    /// Reads `Authorization: Bearer <jwt>` (or RealWorld's `Token <jwt>`). A token that is
    /// present but bad is an error, never a silent fall-back to anonymous.
    pub fn from_headers(headers: &HeaderMap, verifier: &TokenVerifier) -> Result<Self, TokenError> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Ok(Self::Anonymous);
        };
        let value = value.to_str().map_err(|_| TokenError::Invalid)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("Token "))
            .ok_or(TokenError::Invalid)?;
        verifier.verify(token.trim()).map(Self::User)
    }

    /// The signed-in user, or UNAUTHENTICATED.
    pub fn require(&self) -> Result<&Claims, ServiceError> {
        match self {
            Self::User(claims) => Ok(claims),
            Self::Anonymous => Err(ServiceError::Unauthenticated(
                "sign in to do this: send Authorization: Bearer <token>".into(),
            )),
        }
    }
}

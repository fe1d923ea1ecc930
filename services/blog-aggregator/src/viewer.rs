//! Who is asking: the verified bearer of the request's token, if any.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use oba_kit::ServiceError;
use oba_kit::auth::{Claims, Credential, TokenError, TokenVerifier, Verified, token_of};

#[derive(Debug, Clone)]
pub enum Viewer {
    Anonymous,
    /// A signed-in user: the claims the edge verified, and the token itself, which the
    /// edge forwards so that every service verifies it again.
    User {
        claims: Claims,
        credential: Credential,
    },
}

impl Viewer {
    /// Reads `Authorization: Bearer <jwt>` (or RealWorld's `Token <jwt>`). A token that is
    /// present but bad is an error, never a silent fall-back to anonymous.
    pub fn from_headers(headers: &HeaderMap, verifier: &TokenVerifier) -> Result<Self, TokenError> {
        let value = headers
            .get(AUTHORIZATION)
            .map(|v| v.to_str().map_err(|_| TokenError::Invalid))
            .transpose()?;
        Self::from_authorization(value, verifier)
    }

    /// As [`Viewer::from_headers`], for a value sent another way (a WebSocket's
    /// `connection_init` payload).
    pub fn from_authorization(
        value: Option<&str>,
        verifier: &TokenVerifier,
    ) -> Result<Self, TokenError> {
        let Some(value) = value else {
            return Ok(Self::Anonymous);
        };
        // RealWorld clients send `Token <jwt>`; everyone else `Bearer <jwt>`.
        let token = token_of(value, &["Bearer", "Token"])?;
        // A service credential is not a session.
        let Verified::User(claims) = verifier.verified(token)? else {
            return Err(TokenError::Invalid);
        };
        let credential = Credential::bearer(token).ok_or(TokenError::Invalid)?;
        Ok(Self::User { claims, credential })
    }

    /// The signed-in user, or UNAUTHENTICATED.
    pub fn require(&self) -> Result<&Claims, ServiceError> {
        match self {
            Self::User { claims, .. } => Ok(claims),
            Self::Anonymous => Err(ServiceError::Unauthenticated(
                "sign in to do this: send Authorization: Bearer <token>".into(),
            )),
        }
    }

    /// What the edge forwards to the services on this viewer's behalf.
    pub fn credential(&self) -> Option<Credential> {
        match self {
            Self::User { credential, .. } => Some(credential.clone()),
            Self::Anonymous => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_authorization_is_refused_not_anonymous() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (files, _) = oba_kit::auth::ensure_dev_keypair(dir.path()).expect("keys");
        let verifier =
            TokenVerifier::from_pem_file(&oba_kit::config::Setting::new("K", files.public_key))
                .expect("verifier");
        for bad in ["", "Bearer", "Bearer x.y.z", "Basic abc", "garbage"] {
            assert!(
                Viewer::from_authorization(Some(bad), &verifier).is_err(),
                "{bad:?} must be refused"
            );
        }
        assert!(matches!(
            Viewer::from_authorization(None, &verifier),
            Ok(Viewer::Anonymous)
        ));
    }
}

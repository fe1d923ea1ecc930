//! Tokens and callers: user-service signs tokens with an Ed25519 private key, every service
//! verifies them with the public key only, and takes the actor of a call from them.
//!
//! Two kinds of token share the key: a user's session (claims [`Claims`], no audience) and a
//! service credential (claims [`ServiceClaims`], audience [`SERVICE_AUDIENCE`]) for calls
//! made on nobody's behalf, such as the edge's cleanup after a post is deleted. Neither
//! passes for the other. A service reads its [`Caller`] from the verified credential of each
//! request ([`crate::server`] verifies it once, for every gRPC call), never from the request
//! body: a reachable port grants nothing.
//!
//! Keys are PEM files named by configuration. For a newcomer's `oba up`,
//! [`ensure_dev_keypair`] creates a pair in the data directory on first start.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{ConfigError, Setting};
use crate::error::ServiceError;

/// The `aud` of service credentials. User tokens carry no audience, so a service credential
/// never verifies as a user's token, nor a user's token as a service credential.
pub const SERVICE_AUDIENCE: &str = "oba-service";

/// What a user may do beyond their own resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    User,
    Admin,
}

/// The user a call is made for, as their verified token says; what services check
/// ownership against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub user_id: Uuid,
    pub admin: bool,
}

impl Actor {
    pub fn from_claims(claims: &Claims) -> Self {
        Self {
            user_id: claims.sub,
            admin: claims.role == Role::Admin,
        }
    }

    /// Authors change their own resources; admins change anybody's.
    pub fn may_change(self, owners: &[Uuid]) -> Result<(), ServiceError> {
        if self.admin || owners.contains(&self.user_id) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(
                "only the author or an admin may do this".into(),
            ))
        }
    }
}

/// The claims of an oba token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    pub username: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
}

/// The claims of a service credential: which service calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceClaims {
    /// The calling service's name, e.g. `blog-aggregator`.
    pub svc: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// Why a token was refused; shown to the client, so it says nothing about keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    #[error("token is malformed or its signature is invalid")]
    Invalid,
}

/// Signs tokens; only user-service holds one.
#[derive(Clone)]
pub struct TokenSigner {
    key: EncodingKey,
    ttl: Duration,
}

impl TokenSigner {
    pub fn from_pem_file(path: &Setting<PathBuf>, ttl: Duration) -> Result<Self, ConfigError> {
        let pem = read_key_file(path)?;
        let key = EncodingKey::from_ed_pem(&pem)
            .map_err(|e| path.problem(format!("not an Ed25519 private key in PEM: {e}")))?;
        Ok(Self { key, ttl })
    }

    pub fn sign(&self, user_id: Uuid, username: &str, role: Role) -> Result<String, TokenError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            username: username.to_owned(),
            role,
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
            .map_err(|_| TokenError::Invalid)
    }

    /// A credential for `service`'s calls made on nobody's behalf, valid for `ttl`.
    pub fn sign_service(&self, service: &str, ttl: Duration) -> Result<String, TokenError> {
        let now = chrono::Utc::now().timestamp();
        let claims = ServiceClaims {
            svc: service.to_owned(),
            aud: SERVICE_AUDIENCE.to_owned(),
            iat: now,
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
            .map_err(|_| TokenError::Invalid)
    }
}

/// Verifies tokens with the public key. Cheap to clone (every request's layer holds one).
#[derive(Clone)]
pub struct TokenVerifier {
    rules: Arc<VerificationRules>,
    verified: Arc<VerifiedTokens>,
}

/// The key and the claims each kind of token must carry.
struct VerificationRules {
    key: DecodingKey,
    validation: Validation,
    service_validation: Validation,
}

/// Credentials this process has verified, by token, until they expire. A service sees the
/// same few tokens on every call (the edge's credential, a signed-in user's session) and an
/// Ed25519 check costs tens of microseconds, on every hop; a hit costs a map lookup. Only
/// valid tokens are kept, at most [`VERIFIED_TOKENS`], least recently used evicted first.
struct VerifiedTokens {
    entries: Mutex<lru::LruCache<Box<str>, Verified>>,
}

/// What a valid token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    User(Claims),
    Service(ServiceClaims),
}

impl Verified {
    fn expires_at(&self) -> i64 {
        match self {
            Self::User(claims) => claims.exp,
            Self::Service(claims) => claims.exp,
        }
    }
}

/// How many verified tokens a process remembers (a few hundred bytes each).
const VERIFIED_TOKENS: NonZeroUsize = NonZeroUsize::new(10_000).expect("non-zero");

impl TokenVerifier {
    pub fn from_pem_file(path: &Setting<PathBuf>) -> Result<Self, ConfigError> {
        let pem = read_key_file(path)?;
        let key = DecodingKey::from_ed_pem(&pem)
            .map_err(|e| path.problem(format!("not an Ed25519 public key in PEM: {e}")))?;
        Ok(Self::new(key))
    }

    fn new(key: DecodingKey) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Expiry is exact: a token is dead from the second it names (`exp == now` is refused).
        validation.leeway = 0;
        validation.reject_tokens_expiring_in_less_than = 1;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let mut service_validation = validation.clone();
        service_validation.set_required_spec_claims(&["exp", "aud"]);
        service_validation.set_audience(&[SERVICE_AUDIENCE]);
        Self {
            rules: Arc::new(VerificationRules {
                key,
                validation,
                service_validation,
            }),
            verified: Arc::new(VerifiedTokens {
                entries: Mutex::new(lru::LruCache::new(VERIFIED_TOKENS)),
            }),
        }
    }

    /// What a token proves, a user's session or a service credential: verified, or found
    /// verified earlier and not expired since.
    pub fn verified(&self, token: &str) -> Result<Verified, TokenError> {
        let now = chrono::Utc::now().timestamp();
        let known = self
            .verified
            .entries
            .lock()
            .ok()
            .and_then(|mut entries| entries.get(token).cloned());
        if let Some(verified) = known {
            // As exact as the check itself: a token is dead from the second it names.
            return if now < verified.expires_at() {
                Ok(verified)
            } else {
                Err(TokenError::Expired)
            };
        }
        let verified = match self.verify(token) {
            Ok(claims) => Verified::User(claims),
            Err(TokenError::Expired) => return Err(TokenError::Expired),
            Err(TokenError::Invalid) => Verified::Service(self.verify_service(token)?),
        };
        if let Ok(mut entries) = self.verified.entries.lock() {
            entries.put(token.into(), verified.clone());
        }
        Ok(verified)
    }

    /// A user's session token.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        decode(token, &self.rules.key, &self.rules.validation)
    }

    /// A service credential.
    pub fn verify_service(&self, token: &str) -> Result<ServiceClaims, TokenError> {
        decode(token, &self.rules.key, &self.rules.service_validation)
    }
}

fn decode<C: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<C, TokenError> {
    use jsonwebtoken::errors::ErrorKind;
    jsonwebtoken::decode::<C>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid,
        })
}

/// The token of an `Authorization` value `<scheme> <token>`, for one of `schemes`.
pub fn token_of<'a>(value: &'a str, schemes: &[&str]) -> Result<&'a str, TokenError> {
    schemes
        .iter()
        .find_map(|scheme| value.strip_prefix(scheme)?.strip_prefix(' '))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or(TokenError::Invalid)
}

/// Who calls a service, as the request's verified credential proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credential: public reads only.
    Anonymous,
    /// A signed-in user, from their session token.
    User(Actor),
    /// Another oba service acting on nobody's behalf, from its service credential.
    Service(String),
}

impl Caller {
    /// Reads an `authorization: Bearer <token>` value: a user's token or a service
    /// credential. A credential that is present but bad is an error, never anonymous.
    pub fn from_authorization(
        value: Option<&str>,
        verifier: &TokenVerifier,
    ) -> Result<Self, TokenError> {
        let Some(value) = value else {
            return Ok(Self::Anonymous);
        };
        Ok(match verifier.verified(token_of(value, &["Bearer"])?)? {
            Verified::User(claims) => Self::User(Actor::from_claims(&claims)),
            Verified::Service(claims) => Self::Service(claims.svc),
        })
    }

    /// The caller of a gRPC request, as the server's authentication layer recorded it.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or(Self::Anonymous)
    }

    /// The user the call is made for, or UNAUTHENTICATED.
    pub fn user(&self) -> Result<Actor, ServiceError> {
        match self {
            Self::User(actor) => Ok(*actor),
            _ => Err(ServiceError::Unauthenticated(
                "this call needs a user's token".into(),
            )),
        }
    }

    /// The signed-in user, if any: whose `following`/`liked` flags a read shows.
    pub fn viewer(&self) -> Option<Uuid> {
        match self {
            Self::User(actor) => Some(actor.user_id),
            _ => None,
        }
    }

    /// Refuses anyone but one of the `allowed` services.
    pub fn require_service(&self, allowed: &[&str]) -> Result<(), ServiceError> {
        match self {
            Self::Service(name) if allowed.contains(&name.as_str()) => Ok(()),
            Self::Service(_) | Self::User(_) => Err(ServiceError::Forbidden(
                "only an oba service may do this".into(),
            )),
            Self::Anonymous => Err(ServiceError::Unauthenticated(
                "this call needs a service credential".into(),
            )),
        }
    }
}

/// A bearer credential to forward on calls to peers: a user's token, or a service's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Credential {
    /// `Bearer <token>`; None for a token that cannot be a header value.
    pub fn bearer(token: &str) -> Option<Self> {
        format!("Bearer {token}").parse().ok().map(Self)
    }

    pub fn header_value(&self) -> &tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
        &self.0
    }
}

fn read_key_file(path: &Setting<PathBuf>) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(&path.value)
        .map_err(|e| path.problem(format!("cannot read {}: {e}", path.value.display())))
}

/// Paths of a key pair.
#[derive(Debug, Clone)]
pub struct KeyPairFiles {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
}

/// The dev key pair in `dir`, created on first use; `Ok((files, true))` when it was just made.
pub fn ensure_dev_keypair(dir: &Path) -> std::io::Result<(KeyPairFiles, bool)> {
    let files = KeyPairFiles {
        private_key: dir.join("dev-token-key.pem"),
        public_key: dir.join("dev-token-key.pub.pem"),
    };
    if files.private_key.exists() && files.public_key.exists() {
        return Ok((files, false));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&secret);
    let private_pem = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(std::io::Error::other)?;
    let public_pem = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    write_private(&files.private_key, private_pem.as_bytes())?;
    std::fs::write(&files.public_key, public_pem)?;
    Ok((files, true))
}

/// Writes a secret file readable by its owner only.
#[cfg(unix)]
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// Writes a secret file.
#[cfg(not(unix))]
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (tempfile::TempDir, TokenSigner, TokenVerifier) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (files, created) = ensure_dev_keypair(dir.path()).expect("keypair");
        assert!(created);
        let signer = TokenSigner::from_pem_file(
            &Setting::new("K", files.private_key),
            Duration::from_secs(60),
        )
        .expect("signer");
        let verifier =
            TokenVerifier::from_pem_file(&Setting::new("P", files.public_key)).expect("verifier");
        (dir, signer, verifier)
    }

    #[test]
    fn signed_token_verifies_with_public_key() {
        let (_dir, signer, verifier) = pair();
        let id = Uuid::now_v7();
        let token = signer.sign(id, "alice", Role::User).expect("sign");
        let claims = verifier.verify(&token).expect("verify");
        assert_eq!(claims.sub, id);
        assert_eq!(claims.username, "alice");
        assert_eq!(claims.role, Role::User);
    }

    #[test]
    fn tampered_token_is_refused() {
        let (_dir, signer, verifier) = pair();
        let token = signer
            .sign(Uuid::now_v7(), "alice", Role::User)
            .expect("sign");
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].chars().rev().collect();
        assert_eq!(verifier.verify(&parts.join(".")), Err(TokenError::Invalid));
        assert_eq!(verifier.verify("not-a-token"), Err(TokenError::Invalid));
    }

    #[test]
    fn token_of_another_key_is_refused() {
        let (_d1, signer, _) = pair();
        let (_d2, _, other_verifier) = pair();
        let token = signer
            .sign(Uuid::now_v7(), "alice", Role::Admin)
            .expect("sign");
        assert_eq!(other_verifier.verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn existing_dev_keypair_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, created) = ensure_dev_keypair(dir.path()).expect("first");
        let before = std::fs::read(&first.private_key).expect("read");
        let (_, created_again) = ensure_dev_keypair(dir.path()).expect("second");
        assert!(created && !created_again);
        assert_eq!(std::fs::read(&first.private_key).expect("read"), before);
    }

    /// A session of alice's that expires at `exp` (Unix seconds), and its claims.
    fn alice_until(signer: &TokenSigner, exp: i64) -> (Claims, String) {
        let claims = Claims {
            sub: Uuid::now_v7(),
            username: "alice".into(),
            role: Role::User,
            iat: exp - 10,
            exp,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &signer.key)
            .expect("sign");
        (claims, token)
    }

    #[test]
    fn a_remembered_token_still_expires_on_time() {
        let (_dir, signer, verifier) = pair();
        let (claims, token) = alice_until(&signer, chrono::Utc::now().timestamp() + 2);
        assert_eq!(
            verifier.verified(&token),
            Ok(Verified::User(claims.clone()))
        );
        // Now answered from memory, as long as the token lives.
        assert_eq!(verifier.verified(&token), Ok(Verified::User(claims)));
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(verifier.verified(&token), Err(TokenError::Expired));
        // A token that never verified is never remembered.
        let mut forged = token.clone().into_bytes();
        let at = forged.len() - 10;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        assert_eq!(verifier.verified(&forged), Err(TokenError::Invalid));
        assert_eq!(verifier.verified(&forged), Err(TokenError::Invalid));
    }

    #[test]
    fn a_token_expiring_now_is_refused() {
        let (_dir, signer, verifier) = pair();
        let (_, token) = alice_until(&signer, chrono::Utc::now().timestamp());
        assert_eq!(verifier.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn service_credentials_and_user_tokens_never_pass_for_each_other() {
        let (_dir, signer, verifier) = pair();
        let service = signer
            .sign_service("blog-aggregator", Duration::from_secs(60))
            .expect("sign");
        let user = signer
            .sign(Uuid::now_v7(), "alice", Role::Admin)
            .expect("sign");
        assert_eq!(
            verifier.verify_service(&service).expect("service").svc,
            "blog-aggregator"
        );
        assert_eq!(verifier.verify(&service), Err(TokenError::Invalid));
        assert_eq!(verifier.verify_service(&user), Err(TokenError::Invalid));
        let caller = |value: &str| Caller::from_authorization(Some(value), &verifier);
        assert_eq!(
            caller(&format!("Bearer {service}")),
            Ok(Caller::Service("blog-aggregator".into()))
        );
        assert!(matches!(caller(&format!("Bearer {user}")), Ok(Caller::User(a)) if a.admin));
        assert_eq!(caller("Bearer forged"), Err(TokenError::Invalid));
        assert_eq!(caller(&format!("Token {user}")), Err(TokenError::Invalid));
        assert_eq!(
            Caller::from_authorization(None, &verifier),
            Ok(Caller::Anonymous)
        );
    }

    #[test]
    fn only_the_named_services_pass_a_service_check() {
        let edge = Caller::Service("blog-aggregator".into());
        assert!(edge.require_service(&["blog-aggregator"]).is_ok());
        let other = Caller::Service("rank-service".into());
        assert_eq!(
            other
                .require_service(&["blog-aggregator"])
                .map_err(|e| e.code()),
            Err(crate::ErrorCode::Forbidden)
        );
        let user = Caller::User(Actor {
            user_id: Uuid::now_v7(),
            admin: true,
        });
        assert_eq!(
            user.require_service(&["blog-aggregator"])
                .map_err(|e| e.code()),
            Err(crate::ErrorCode::Forbidden)
        );
        assert_eq!(
            Caller::Anonymous.user().map_err(|e| e.code()),
            Err(crate::ErrorCode::Unauthenticated)
        );
    }

    #[test]
    fn only_owners_and_admins_may_change() {
        let (owner, other) = (Uuid::now_v7(), Uuid::now_v7());
        let actor = |user_id, admin| Actor { user_id, admin };
        assert!(actor(owner, false).may_change(&[owner]).is_ok());
        assert!(actor(other, true).may_change(&[owner]).is_ok());
        let refused = actor(other, false)
            .may_change(&[owner])
            .expect_err("not the owner");
        assert_eq!(refused.code(), crate::ErrorCode::Forbidden);
    }

    #[test]
    fn missing_key_file_names_the_setting() {
        let err = TokenVerifier::from_pem_file(&Setting::new(
            "OBA_TOKEN_PUBLIC_KEY_FILE",
            PathBuf::from("/nonexistent/key.pem"),
        ))
        .err()
        .expect("must fail");
        assert!(
            err.to_string()
                .contains("OBA_TOKEN_PUBLIC_KEY_FILE: cannot read")
        );
    }
}

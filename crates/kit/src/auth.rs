//! Tokens: user-service signs them with an Ed25519 private key, every other service verifies
//! them with the public key only.
//!
//! Keys are PEM files named by configuration. For a newcomer's `oba up`,
//! [`ensure_dev_keypair`] creates a pair in the data directory on first start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{ConfigError, Setting};
use crate::error::{ServiceError, parse_id};

/// What a user may do beyond their own resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    User,
    Admin,
}

/// Who performs a write, as the edge verified it; what the services check ownership against.
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

    /// Reads the actor of a request; a write without one is refused.
    pub fn parse(actor: Option<&oba_proto::common::v1::Actor>) -> Result<Self, ServiceError> {
        let actor = actor.ok_or_else(|| ServiceError::Unauthenticated("no actor".into()))?;
        Ok(Self {
            user_id: parse_id("actor", &actor.user_id)?,
            admin: actor.admin,
        })
    }

    pub fn message(self) -> oba_proto::common::v1::Actor {
        oba_proto::common::v1::Actor {
            user_id: self.user_id.to_string(),
            admin: self.admin,
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
}

/// Verifies tokens with the public key.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn from_pem_file(path: &Setting<PathBuf>) -> Result<Self, ConfigError> {
        let pem = read_key_file(path)?;
        let key = DecodingKey::from_ed_pem(&pem)
            .map_err(|e| path.problem(format!("not an Ed25519 public key in PEM: {e}")))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Expiry is exact: a token is dead the second it expires.
        validation.leeway = 0;
        Ok(Self { key, validation })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
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

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

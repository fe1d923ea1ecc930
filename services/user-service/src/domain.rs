//! The rules of accounts, free of I/O: what a valid username, email and password are, and
//! how passwords are hashed and checked.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use oba_kit::ServiceError;

pub const USERNAME_MAX: usize = 32;
pub const EMAIL_MAX: usize = 254;
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 128;
pub const BIO_MAX: usize = 1_000;
pub const IMAGE_URL_MAX: usize = 2_048;

/// 1–32 characters: letters, digits, `_`, `-`, `.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ServiceError::invalid("username", "can't be blank"));
        }
        if s.chars().count() > USERNAME_MAX {
            return Err(ServiceError::invalid(
                "username",
                format!("is too long (maximum is {USERNAME_MAX} characters)"),
            ));
        }
        if !s
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(ServiceError::invalid(
                "username",
                "may contain only letters, digits, '_', '-' and '.'",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An address with one `@`, a non-empty local part and a dotted domain; stored lower-case
/// so that uniqueness ignores case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        let s = raw.trim().to_lowercase();
        if s.is_empty() {
            return Err(ServiceError::invalid("email", "can't be blank"));
        }
        if s.len() > EMAIL_MAX {
            return Err(ServiceError::invalid("email", "is too long"));
        }
        let valid = match s.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !s.chars().any(char::is_whitespace)
            }
            None => false,
        };
        if !valid {
            return Err(ServiceError::invalid("email", "is invalid"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password as typed: 8–128 characters. Never stored, only hashed.
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        let n = raw.chars().count();
        if n < PASSWORD_MIN {
            return Err(ServiceError::invalid(
                "password",
                format!("is too short (minimum is {PASSWORD_MIN} characters)"),
            ));
        }
        if n > PASSWORD_MAX {
            return Err(ServiceError::invalid(
                "password",
                format!("is too long (maximum is {PASSWORD_MAX} characters)"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// An argon2id PHC string with a fresh salt. CPU-heavy: call off the async runtime.
    pub fn hash(&self) -> Result<String, ServiceError> {
        let hash: PasswordHash = Argon2::default()
            .hash_password(self.0.as_bytes())
            .map_err(|e| ServiceError::Internal(format!("hashing password: {e}")))?;
        Ok(hash.to_string())
    }
}

/// A short text about the user, at most 1000 characters; empty clears it.
pub fn parse_bio(raw: &str) -> Result<String, ServiceError> {
    let s = raw.trim();
    if s.chars().count() > BIO_MAX {
        return Err(ServiceError::invalid(
            "bio",
            format!("is too long (maximum is {BIO_MAX} characters)"),
        ));
    }
    Ok(s.to_owned())
}

/// An absolute `http(s)` URL of at most 2048 characters; empty clears the image.
pub fn parse_image_url(raw: &str) -> Result<String, ServiceError> {
    let s = raw.trim();
    if s.is_empty() {
        return Ok(String::new());
    }
    if s.len() > IMAGE_URL_MAX {
        return Err(ServiceError::invalid("image", "is too long"));
    }
    let host = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
    match host {
        Some(host)
            if !host.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(s.to_owned())
        }
        _ => Err(ServiceError::invalid(
            "image",
            "must be an http or https URL",
        )),
    }
}

/// Whether `password` matches the stored PHC string. CPU-heavy: call off the async runtime.
pub fn password_matches(password: &str, stored_hash: &str) -> bool {
    match PasswordHash::new(stored_hash) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_is_trimmed_and_checked() {
        assert_eq!(
            Username::parse("  alice ").expect("valid").as_str(),
            "alice"
        );
        assert!(Username::parse("").is_err());
        assert!(Username::parse("has space").is_err());
        assert!(Username::parse(&"a".repeat(USERNAME_MAX + 1)).is_err());
        assert!(Username::parse(&"a".repeat(USERNAME_MAX)).is_ok());
    }

    #[test]
    fn email_is_lowercased_and_needs_a_domain() {
        assert_eq!(
            Email::parse("Alice@Example.COM").expect("valid").as_str(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "a@b",
            "a@@b.c",
            "a b@c.d",
            "a@.c",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn image_must_be_an_http_url() {
        assert_eq!(
            parse_image_url(" https://example.com/a.png ").expect("valid"),
            "https://example.com/a.png"
        );
        assert_eq!(parse_image_url("").expect("clears"), "");
        for bad in [
            "javascript:alert(1)",
            "ftp://x.org/a",
            "https://",
            "http:// spaced.org",
            "not a url",
        ] {
            assert!(parse_image_url(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn bio_length_is_bounded() {
        assert!(parse_bio(&"b".repeat(BIO_MAX)).is_ok());
        assert!(parse_bio(&"b".repeat(BIO_MAX + 1)).is_err());
    }

    #[test]
    fn password_length_is_bounded() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"p".repeat(PASSWORD_MAX + 1)).is_err());
        assert!(Password::parse("password").is_ok());
    }

    #[test]
    fn hashed_password_matches_only_itself() {
        let hash = Password::parse("correct horse")
            .expect("valid")
            .hash()
            .expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(password_matches("correct horse", &hash));
        assert!(!password_matches("wrong horse", &hash));
        assert!(!password_matches("correct horse", "not a hash"));
    }

    #[test]
    fn same_password_hashes_differently() {
        let p = Password::parse("same password").expect("valid");
        assert_ne!(p.hash().expect("hash"), p.hash().expect("hash"));
    }
}

//! The rules of comments, free of I/O.

use oba_kit::ServiceError;

pub const BODY_MAX: usize = 5_000;

/// A comment's text: 1–5000 characters after trimming.
pub fn parse_body(raw: &str) -> Result<String, ServiceError> {
    let body = raw.trim();
    if body.is_empty() {
        return Err(ServiceError::invalid("body", "can't be blank"));
    }
    if body.chars().count() > BODY_MAX {
        return Err(ServiceError::invalid(
            "body",
            format!("is too long (maximum is {BODY_MAX} characters)"),
        ));
    }
    Ok(body.to_owned())
}

/// A comment cursor is its id: comments list oldest first, and ids only grow.
pub fn parse_cursor(raw: &str) -> Result<Option<i64>, ServiceError> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse()
        .map(Some)
        .map_err(|_| ServiceError::invalid("after", "is not a valid cursor"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_trimmed_and_bounded() {
        assert_eq!(parse_body("  nice post ").expect("valid"), "nice post");
        assert!(parse_body("   ").is_err());
        assert!(parse_body(&"c".repeat(BODY_MAX + 1)).is_err());
    }

    #[test]
    fn cursor_is_an_id_or_nothing() {
        assert_eq!(parse_cursor("").expect("empty"), None);
        assert_eq!(parse_cursor("42").expect("id"), Some(42));
        assert!(parse_cursor("abc").is_err());
    }
}

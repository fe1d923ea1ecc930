//! Who is signed in to the pages, and proof that a form was sent from them.
//!
//! The session is the same token the APIs take, in an `HttpOnly`, `SameSite=Lax` cookie
//! (`Secure` unless `OBA_WEB_SECURE_COOKIES=false`, as `oba up` sets on plain http): no
//! script can read it and other sites' forms do not carry it. On top of that every form
//! carries a CSRF token that must equal the `oba_csrf` cookie (double submit): a page of
//! this origin has both, another site can send neither. The token is made on the first
//! page a browser gets and kept for the browser's session.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::WebError;

/// The session cookie: the same token the APIs take, kept where scripts cannot read it.
pub const SESSION_COOKIE: &str = "oba_session";
/// The CSRF cookie, and the name of the hidden field every form repeats it in.
pub const CSRF_COOKIE: &str = "oba_csrf";
pub const CSRF_FIELD: &str = "csrf";

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// This request's CSRF token (from its cookie, or made for it), for the forms it renders.
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

/// A new random token: 128 bits, hex.
fn new_token() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `token` is one this module could have made (so a cookie set by someone else
/// cannot smuggle anything into the pages).
fn well_formed(token: &str) -> bool {
    token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Middleware: gives every request its [`CsrfToken`], and a browser without one its cookie.
pub async fn csrf_cookie(mut request: Request, next: Next) -> Response {
    let existing = cookie(request.headers(), CSRF_COOKIE)
        .filter(|token| well_formed(token))
        .map(str::to_owned);
    let (token, fresh) = match existing {
        Some(token) => (token, false),
        None => match new_token() {
            Some(token) => (token, true),
            None => {
                return WebError::new(StatusCode::INTERNAL_SERVER_ERROR, "no randomness")
                    .into_response();
            }
        },
    };
    request.extensions_mut().insert(CsrfToken(token.clone()));
    let mut response = next.run(request).await;
    if fresh
        && let Ok(value) = HeaderValue::from_str(&format!(
            "{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
        ))
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The `Set-Cookie` value that signs a browser in with `token` for `max_age_secs`.
pub fn session_cookie(token: &str, max_age_secs: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        max_age_secs.max(0)
    ))
    .ok()
}

/// The `Set-Cookie` value that signs a browser out.
pub fn cleared_session(secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"
    ))
    .unwrap_or(HeaderValue::from_static("oba_session=; Path=/; Max-Age=0"))
}

/// A posted form whose CSRF field matches the browser's CSRF cookie; anything else (no
/// cookie, no field, another value, an unreadable body) is refused with 403 or 400 before
/// the handler runs, so nothing changes.
pub struct CheckedForm<T>(pub T);

#[derive(Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    fields: T,
}

impl<S, T> FromRequest<S> for CheckedForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = WebError;

    async fn from_request(request: Request, state: &S) -> Result<Self, WebError> {
        let expected = cookie(request.headers(), CSRF_COOKIE)
            .filter(|token| well_formed(token))
            .map(str::to_owned);
        let axum::Form(form) = axum::Form::<WithCsrf<T>>::from_request(request, state)
            .await
            .map_err(|e| WebError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        match expected {
            Some(expected) if constant_time_eq(expected.as_bytes(), form.csrf.as_bytes()) => {
                Ok(Self(form.fields))
            }
            _ => Err(WebError::new(
                StatusCode::FORBIDDEN,
                "This form was not sent from this site's page (its security token is \
                 missing or stale). Reload the page and try again.",
            )),
        }
    }
}

/// Compares without stopping at the first difference, so timing tells nothing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_is_read_from_its_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            "theme=dark; oba_session=abc.def".parse().expect("ascii"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc.def"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn tokens_are_random_hex_and_only_such_are_taken() {
        let (a, b) = (new_token().expect("a"), new_token().expect("b"));
        assert!(well_formed(&a) && well_formed(&b) && a != b);
        assert!(!well_formed("\"><script>"));
        assert!(constant_time_eq(a.as_bytes(), a.as_bytes()));
        assert!(!constant_time_eq(a.as_bytes(), b.as_bytes()));
        assert!(!constant_time_eq(a.as_bytes(), &a.as_bytes()[1..]));
    }

    #[test]
    fn the_session_cookie_is_http_only_lax_and_secure_outside_plain_http() {
        let cookie = session_cookie("t.o.k", 60, true).expect("a header");
        assert_eq!(
            cookie,
            "oba_session=t.o.k; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        let local = session_cookie("t.o.k", 60, false).expect("a header");
        assert!(!local.to_str().expect("ascii").contains("Secure"));
        assert!(
            cleared_session(true)
                .to_str()
                .expect("ascii")
                .contains("Max-Age=0")
        );
    }
}

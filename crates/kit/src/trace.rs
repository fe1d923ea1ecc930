//! W3C trace context (`traceparent`) carried from a request at the edge, through the gRPC
//! calls it makes, into the envelopes of the events it causes, so an event can be tied to
//! the request that produced it.
//!
//! Every server scopes each request in a task-local holding its `traceparent` (the caller's,
//! or a new one); gRPC clients built with [`crate::peer::Outgoing`] send it on; the outbox copies
//! it into `Envelope.trace_context`.

use std::future::Future;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static TRACEPARENT: String;
}

pub const HEADER: &str = "traceparent";

/// The traceparent of the request being served, if any.
pub fn current() -> Option<String> {
    TRACEPARENT.try_with(Clone::clone).ok()
}

/// Runs `f` as part of the trace `traceparent`.
pub async fn scope<F: Future>(traceparent: String, f: F) -> F::Output {
    TRACEPARENT.scope(traceparent, f).await
}

/// A well-formed `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, or None.
pub fn parse(header: &str) -> Option<String> {
    let parts: Vec<&str> = header.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1] != "0".repeat(32)
        && hex(parts[2], 16)
        && parts[2] != "0".repeat(16)
        && hex(parts[3], 2);
    valid.then(|| header.trim().to_ascii_lowercase())
}

/// A new trace with a random id.
pub fn new_traceparent() -> String {
    let mut bytes = [0u8; 24];
    // Without randomness a fixed id still keeps requests apart by time; never fail a request.
    let _ = getrandom::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("00-{}-{}-01", &hex[..32], &hex[32..])
}

/// Middleware: serve the request inside its trace (the caller's `traceparent`, or a new one).
pub async fn propagate(request: Request, next: Next) -> Response {
    let traceparent = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse)
        .unwrap_or_else(new_traceparent);
    scope(traceparent, next.run(request)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_taken() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse(good).as_deref(), Some(good));
        for bad in [
            "",
            "garbage",
            "00-4bf9-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(parse(&new_traceparent()).is_some());
    }

    #[tokio::test]
    async fn the_scope_is_visible_inside_and_gone_outside() {
        assert_eq!(current(), None);
        let inside = scope("00-x".to_owned(), async { current() }).await;
        assert_eq!(inside.as_deref(), Some("00-x"));
    }
}

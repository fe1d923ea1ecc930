//! GraphiQL at `/graphiql`, with every asset compiled into the binary: it works offline and
//! loads nothing from another origin, which its Content-Security-Policy enforces.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Scripts, styles and connections from this origin only; inline styles (React sets them)
/// and `data:` fonts and images (GraphiQL's stylesheet embeds them).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; font-src 'self' data:; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../../assets/graphiql/index.html");

/// The assets by file name, with their content type.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
    ),
    (
        "init.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/init.js"),
    ),
    (
        "page.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/graphiql/page.css"),
    ),
];

/// `GET /graphiql`: the in-browser IDE.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        INDEX,
    )
        .into_response()
}

/// `GET /graphiql/assets/{file}`: one of the compiled-in assets, cacheable for a day.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => {
            let mut response = (*bytes).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            response
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_assets_that_exist_and_nothing_from_elsewhere() {
        for src in INDEX
            .split(['"', '\''])
            .filter(|s| s.starts_with("/graphiql/assets/"))
        {
            let name = src.trim_start_matches("/graphiql/assets/");
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "{src} is not compiled in"
            );
        }
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
    }
}

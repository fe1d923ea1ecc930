//! Article bodies are Markdown written by anyone: rendered with pulldown-cmark, then
//! sanitized with ammonia, so whatever HTML or URL an author puts in comes out inert.

use std::sync::LazyLock;

use pulldown_cmark::{Options, Parser, html};

/// The sanitizer: ammonia's safe defaults (no scripts, no event handlers, no `style`,
/// only http, https and mailto links), every link marked `nofollow noopener noreferrer`.
static CLEANER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut cleaner = ammonia::Builder::default();
    cleaner.link_rel(Some("nofollow noopener noreferrer"));
    cleaner
});

/// Safe HTML for a Markdown text.
pub fn to_safe_html(markdown: &str) -> String {
    let mut options = Options::empty();
    options.insert(Options::ENABLE_TABLES);
    options.insert(Options::ENABLE_STRIKETHROUGH);
    let mut unsafe_html = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut unsafe_html, Parser::new_ext(markdown, options));
    CLEANER.clean(&unsafe_html).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_becomes_html() {
        let html = to_safe_html("# Title\n\nSome *emphasis* and [a link](https://example.com).");
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(html.contains("<em>emphasis</em>"), "{html}");
        assert!(
            html.contains(
                r#"<a href="https://example.com" rel="nofollow noopener noreferrer">a link</a>"#
            ),
            "{html}"
        );
    }

    #[test]
    fn scripts_handlers_and_script_urls_come_out_inert() {
        for payload in [
            "<script>window.__xss = 1</script>",
            "<img src=x onerror=\"window.__xss = 1\">",
            "[click](javascript:window.__xss=1)",
            "<a href=\"javascript:window.__xss=1\">click</a>",
            "<iframe src=\"https://evil.example\"></iframe>",
            "<svg onload=\"window.__xss=1\"></svg>",
            "<div style=\"background:url(javascript:alert(1))\">x</div>",
        ] {
            let html = to_safe_html(payload);
            for dangerous in [
                "<script",
                "onerror",
                "onload",
                "javascript:",
                "<iframe",
                "style=",
            ] {
                assert!(!html.contains(dangerous), "{payload} gave {html}");
            }
        }
    }
}

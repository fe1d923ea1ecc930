//! What one GraphQL document may cost, checked before it costs anything.
//!
//! async-graphql's parser recurses once per nested list, object or selection, so a few KB of
//! `[[[[…]]]]` would overflow a worker's stack and abort the process (every service with it in
//! `oba up`). [`DocumentLimits`] therefore measures the nesting of the raw text — outside
//! strings and comments — before the parser sees it, for HTTP and WebSocket alike, and
//! afterwards caps the root fields of an operation, aliases included. Query cost is capped by
//! the schema's complexity limit, where a list field costs its page size times its children
//! ([`page_cost`]).

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection};
use async_graphql::{ServerError, ServerResult, Variables};
use oba_kit::ErrorCode;

/// Deepest nesting of `{`, `[` and `(` a document may have: far above any real query (the
/// standard introspection query nests 9 deep), far below what the parser's stack survives.
pub const MAX_NESTING: usize = 64;

/// Most fields (aliases included) at the root of one operation.
pub const MAX_ROOT_FIELDS: usize = 16;

/// The deepest nesting of brackets in a GraphQL document, ignoring those in strings, block
/// strings and comments.
pub fn nesting_depth(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    // An escaped triple quote does not end a block string.
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// The cost of a list field: its page size (1 to 100, default 20) times what each item
/// selects, plus the call itself.
pub fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let first = usize::try_from(first.unwrap_or(20).clamp(1, 100)).unwrap_or(100);
    first.saturating_mul(child_complexity).saturating_add(1)
}

/// The extension enforcing [`MAX_NESTING`] and [`MAX_ROOT_FIELDS`].
pub struct DocumentLimits;

impl ExtensionFactory for DocumentLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DocumentLimits)
    }
}

fn refused(message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", ErrorCode::BadUserInput.as_str());
    error.extensions = Some(extensions);
    error
}

#[async_graphql::async_trait::async_trait]
impl Extension for DocumentLimits {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let depth = nesting_depth(query);
        if depth > MAX_NESTING {
            return Err(refused(format!(
                "the document nests {depth} deep; at most {MAX_NESTING} is allowed"
            )));
        }
        let document = next.run(ctx, query, variables).await?;
        for (_, operation) in document.operations.iter() {
            let root_fields = operation
                .node
                .selection_set
                .node
                .items
                .iter()
                .filter(|s| matches!(s.node, Selection::Field(_)))
                .count();
            if root_fields > MAX_ROOT_FIELDS {
                return Err(refused(format!(
                    "an operation may have at most {MAX_ROOT_FIELDS} root fields \
                     (aliases included), this one has {root_fields}"
                )));
            }
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_counts_brackets_outside_strings_and_comments() {
        assert_eq!(nesting_depth("{ posts { nodes { id } } }"), 3);
        assert_eq!(nesting_depth("{ a(tag: [[[\"x\"]]]) }"), 5);
        assert_eq!(nesting_depth("{ a(s: \"{{{{[[[[\") }"), 2);
        assert_eq!(
            nesting_depth("{ a(s: \"\"\" {{{{ \\\"\"\" [[[[ \"\"\") }"),
            2
        );
        assert_eq!(nesting_depth("# {{{{{{\n{ a }"), 1);
        assert_eq!(nesting_depth("{ a(s: \"\\\"{{{{\") }"), 2);
    }

    #[test]
    fn a_hostile_nesting_is_measured_without_recursion() {
        let deep = format!(
            "{{ posts(tag: {}\"x\"{}) {{ totalCount }} }}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(nesting_depth(&deep), 100_002);
    }

    #[test]
    fn page_cost_multiplies_by_the_page_size() {
        assert_eq!(page_cost(Some(100), 10), 1001);
        assert_eq!(page_cost(None, 10), 201);
        assert_eq!(page_cost(Some(100_000), 10), 1001);
        assert_eq!(page_cost(Some(-5), 10), 11);
    }
}

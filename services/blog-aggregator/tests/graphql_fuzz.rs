//! A bounded fuzz pass over hostile GraphQL documents: whatever the text, the schema answers
//! with errors or data and never crashes. In particular nesting far beyond what a worker's
//! stack survives in a recursive parser is refused before parsing. Runs in every
//! `cargo test` (256 generated documents per property; `PROPTEST_CASES` raises it).

use blog_aggregator::graphql::{introspection_schema, limits, schema};
use proptest::prelude::*;

/// Pieces a hostile document is made of: brackets of every kind, strings and block strings
/// (whose brackets must not count), comments, names, arguments and fragments.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("\"".to_owned()),
        Just("\"\"\"".to_owned()),
        Just("\\".to_owned()),
        Just("#".to_owned()),
        Just("\n".to_owned()),
        Just("posts".to_owned()),
        Just("tag:".to_owned()),
        Just("a: ".to_owned()),
        Just("...F ".to_owned()),
        Just("fragment F on Post ".to_owned()),
        Just("$v".to_owned()),
        Just(",".to_owned()),
        "[a-z]{1,6}",
    ]
}

/// A document: random pieces, or a deep run of one bracket kind inside a real query.
fn document() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(piece(), 0..400).prop_map(|p| p.concat()),
        (1usize..6000, prop_oneof![Just('['), Just('{'), Just('(')]).prop_map(|(n, open)| {
            let close = match open {
                '[' => ']',
                '{' => '}',
                _ => ')',
            };
            format!(
                "{{ posts(tag: {}\"x\"{}) {{ totalCount }} }}",
                open.to_string().repeat(n),
                close.to_string().repeat(n)
            )
        }),
        (1usize..3000).prop_map(|n| format!(
            "mutation {{ createPost(input: {}title: \"t\"{}) {{ slug }} }}",
            "{a: ".repeat(n),
            "}".repeat(n)
        )),
    ]
}

proptest! {
    #[test]
    fn no_document_crashes_the_schema(text in document()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (data_schema, introspection) = (schema(), introspection_schema());
        let refused_as_too_deep = runtime.block_on(async {
            let mut refused = Vec::new();
            for schema in [&data_schema, &introspection] {
                // No BlogApi is given, so nothing may succeed past validation; what matters
                // is that an answer comes back at all.
                let response = schema.execute(text.as_str()).await;
                refused.push(response.errors.iter().any(|e| e.message.contains("nests")));
            }
            refused
        });
        let too_deep = limits::nesting_depth(&text) > limits::MAX_NESTING;
        prop_assert_eq!(refused_as_too_deep, vec![too_deep, too_deep]);
    }
}

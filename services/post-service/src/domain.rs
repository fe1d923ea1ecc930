//! The rules of posts, free of I/O: field limits, tag normalisation and slugs.

use oba_kit::ServiceError;

pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 1_000;
pub const BODY_MAX: usize = 100_000;
pub const TAGS_MAX: usize = 10;
pub const TAG_MAX: usize = 32;
pub const SLUG_BASE_MAX: usize = 80;

/// A post's content, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostContent {
    pub title: String,
    pub description: String,
    pub body: String,
    pub tags: Vec<String>,
}

impl PostContent {
    pub fn parse(
        title: &str,
        description: &str,
        body: &str,
        tags: &[String],
    ) -> Result<Self, ServiceError> {
        Ok(Self {
            title: text("title", title, 1, TITLE_MAX)?,
            description: text("description", description, 0, DESCRIPTION_MAX)?,
            body: text("body", body, 1, BODY_MAX)?,
            tags: parse_tags(tags)?,
        })
    }
}

/// Changes to a post's content; `None` keeps a field.
#[derive(Debug, Default, Clone)]
pub struct PostChanges {
    pub title: Option<String>,
    pub description: Option<String>,
    pub body: Option<String>,
    pub tags: Option<Vec<String>>,
}

impl PostContent {
    /// The content after `changes`, validated like new content.
    pub fn with_changes(self, changes: PostChanges) -> Result<Self, ServiceError> {
        Self::parse(
            changes.title.as_deref().unwrap_or(&self.title),
            changes.description.as_deref().unwrap_or(&self.description),
            changes.body.as_deref().unwrap_or(&self.body),
            changes.tags.as_deref().unwrap_or(&self.tags),
        )
    }
}

/// Which posts a listing includes; `None` means no restriction.
#[derive(Debug, Default, Clone)]
pub struct PostFilter {
    pub tag: Option<String>,
    pub author_ids: Option<Vec<uuid::Uuid>>,
    pub post_ids: Option<Vec<uuid::Uuid>>,
}

impl PostFilter {
    /// An empty id set can match nothing: no need to ask the database.
    pub fn matches_nothing(&self) -> bool {
        self.author_ids.as_ref().is_some_and(Vec::is_empty)
            || self.post_ids.as_ref().is_some_and(Vec::is_empty)
    }
}

fn text(field: &'static str, raw: &str, min: usize, max: usize) -> Result<String, ServiceError> {
    let s = raw.trim();
    let n = s.chars().count();
    if n < min {
        return Err(ServiceError::invalid(field, "can't be blank"));
    }
    if n > max {
        return Err(ServiceError::invalid(
            field,
            format!("is too long (maximum is {max} characters)"),
        ));
    }
    Ok(s.to_owned())
}

/// Trimmed, blank ones dropped, duplicates removed keeping first-seen order.
pub fn parse_tags(raw: &[String]) -> Result<Vec<String>, ServiceError> {
    let mut tags: Vec<String> = Vec::new();
    for tag in raw.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if tag.chars().count() > TAG_MAX {
            return Err(ServiceError::invalid(
                "tags",
                format!("a tag is too long (maximum is {TAG_MAX} characters)"),
            ));
        }
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    if tags.len() > TAGS_MAX {
        return Err(ServiceError::invalid(
            "tags",
            format!("too many tags (maximum is {TAGS_MAX})"),
        ));
    }
    Ok(tags)
}

/// The readable part of a slug: lower-case letters and digits joined by single hyphens.
pub fn slug_base(title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            if slug.chars().count() >= SLUG_BASE_MAX {
                break;
            }
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "post".to_owned()
    } else {
        slug.to_owned()
    }
}

/// The slug to try after `base` was taken: a short random suffix, unique in practice and
/// retried on the rare collision.
pub fn slug_with_suffix(base: &str, suffix: &str) -> String {
    format!("{base}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn slug_is_lowercase_words_joined_by_hyphens() {
        assert_eq!(
            slug_base("How to Train Your Dragon"),
            "how-to-train-your-dragon"
        );
        assert_eq!(slug_base("  Rust: 2024 -- edition!  "), "rust-2024-edition");
        assert_eq!(slug_base("Café Größe"), "café-größe");
        assert_eq!(slug_base("!!!"), "post");
    }

    #[test]
    fn long_titles_give_bounded_slugs() {
        let slug = slug_base(&"word ".repeat(100));
        assert!(slug.chars().count() <= SLUG_BASE_MAX);
        assert!(!slug.ends_with('-'));
    }

    #[test]
    fn empty_title_or_body_is_refused() {
        let err = PostContent::parse("  ", "d", "b", &[]).expect_err("blank title");
        assert!(matches!(
            err,
            ServiceError::InvalidInput { field: "title", .. }
        ));
        let err = PostContent::parse("t", "d", "", &[]).expect_err("blank body");
        assert!(matches!(
            err,
            ServiceError::InvalidInput { field: "body", .. }
        ));
    }

    #[test]
    fn over_long_fields_are_refused() {
        assert!(PostContent::parse(&"t".repeat(TITLE_MAX + 1), "", "b", &[]).is_err());
        assert!(PostContent::parse("t", &"d".repeat(DESCRIPTION_MAX + 1), "b", &[]).is_err());
        assert!(PostContent::parse("t", "", &"b".repeat(BODY_MAX + 1), &[]).is_err());
        assert!(PostContent::parse(&"t".repeat(TITLE_MAX), "", "b", &[]).is_ok());
    }

    #[test]
    fn tags_are_trimmed_and_deduplicated_in_order() {
        let parsed = parse_tags(&tags(&[" rust ", "dragons", "rust", "", "  "])).expect("valid");
        assert_eq!(parsed, tags(&["rust", "dragons"]));
    }

    #[test]
    fn too_many_or_too_long_tags_are_refused() {
        let many: Vec<String> = (0..=TAGS_MAX).map(|i| format!("t{i}")).collect();
        assert!(parse_tags(&many).is_err());
        assert!(parse_tags(&tags(&[&"x".repeat(TAG_MAX + 1)])).is_err());
    }

    #[test]
    fn changes_keep_what_they_do_not_mention() {
        let content = PostContent::parse("Title", "desc", "body", &tags(&["a"])).expect("valid");
        let changed = content
            .clone()
            .with_changes(PostChanges {
                body: Some("new body".into()),
                ..PostChanges::default()
            })
            .expect("valid");
        assert_eq!(changed.title, "Title");
        assert_eq!(changed.body, "new body");
        assert_eq!(changed.tags, tags(&["a"]));
        let blanked = content.with_changes(PostChanges {
            title: Some(" ".into()),
            ..PostChanges::default()
        });
        assert!(blanked.is_err(), "changes are validated like new posts");
    }

    #[test]
    fn empty_id_sets_match_nothing() {
        assert!(!PostFilter::default().matches_nothing());
        let filter = PostFilter {
            author_ids: Some(vec![]),
            ..PostFilter::default()
        };
        assert!(filter.matches_nothing());
    }
}

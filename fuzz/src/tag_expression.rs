//! `tag_expression`: the subscription-expression parser and the two-stage tag filter.
//!
//! Input: UTF-8 text `EXPRESSION` or `EXPRESSION\0TAG` (anything else is skipped).
//!
//! Properties checked:
//! * no input panics, and a refusal is always `Error::Invalid`;
//! * a parsed expression's `Display` parses back to the same expression;
//! * a parsed tag list is non-empty, sorted, deduplicated, within `EXPRESSION_TAGS_MAX`, and each
//!   tag is non-empty, trimmed, at most `TAG_BYTES_MAX` bytes and free of `|`;
//! * the filter never loses a match: a tag the expression matches exactly also passes the
//!   tag-hash pre-check, and the exact check matches exactly the listed tags.

use tern_engine::limits::TAG_BYTES_MAX;
use tern_engine::tag::{fnv1a_64, EXPRESSION_TAGS_MAX};
use tern_engine::{Error, Expression, Filter};

/// The check.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (expression_text, candidate) = text.split_once('\0').unwrap_or((text, ""));
    let expression = match Expression::parse(expression_text) {
        Ok(e) => e,
        Err(e) => {
            assert!(
                matches!(e, Error::Invalid { .. }),
                "a refused expression must be Error::Invalid, got {e:?}"
            );
            let _ = e.to_string();
            return;
        }
    };

    let shown = expression.to_string();
    let reparsed = Expression::parse(&shown)
        .unwrap_or_else(|e| panic!("Display output {shown:?} does not parse: {e}"));
    assert_eq!(reparsed, expression, "Display round trip via {shown:?}");

    if let Expression::Tags(tags) = &expression {
        assert!(!tags.is_empty());
        assert!(tags.len() <= EXPRESSION_TAGS_MAX);
        assert!(
            tags.windows(2).all(|w| w[0] < w[1]),
            "not sorted and unique"
        );
        for tag in tags {
            assert!(!tag.is_empty() && tag.len() <= TAG_BYTES_MAX);
            assert_eq!(tag.trim(), tag);
            assert!(!tag.contains('|'));
        }
    }

    let filter = Filter::new(expression.clone(), fnv1a_64);
    if let Expression::Tags(tags) = &expression {
        for tag in tags {
            assert!(filter.may_match_hash(fnv1a_64(tag.as_bytes())));
            assert!(filter.matches_tag(tag.as_bytes()));
        }
    }
    let exact = filter.matches_tag(candidate.as_bytes());
    let expected = match &expression {
        Expression::All => true,
        Expression::Tags(tags) => tags.iter().any(|t| t == candidate),
    };
    assert_eq!(exact, expected, "exact tag check for {candidate:?}");
    if exact {
        assert!(
            filter.may_match_hash(fnv1a_64(candidate.as_bytes())),
            "the hash pre-check dropped a matching tag {candidate:?}"
        );
    }
}

//! Tags: the stable tag hash and subscription expressions.
//!
//! # Tag hash
//! The consume-queue entry stores a 64-bit hash of the message's tag so that filtering can skip
//! non-matching messages without touching the commitlog. The hash is **FNV-1a, 64-bit**, over the
//! tag's UTF-8 bytes (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`); a message
//! without a tag hashes the empty string. The function is part of the on-disk format: it never
//! changes within a format version. A hash match is always re-checked against the stored tag, so a
//! collision can cost a read but never delivers a wrong-tag message.
//!
//! # Expressions
//! `*` (or an empty expression) matches every message; `TagA || TagB || …` matches messages whose
//! tag is exactly one of the listed tags. Spaces around tags are ignored.

use crate::error::{Error, Result};
use crate::limits::TAG_BYTES_MAX;

/// A tag-hash function. The engine's default is [`fnv1a_64`]; tests inject others to force
/// collisions.
pub type TagHasher = fn(&[u8]) -> u64;

/// FNV-1a 64-bit hash of `bytes`: the format's tag hash.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Most tags one expression may list.
pub const EXPRESSION_TAGS_MAX: usize = 64;

/// A parsed subscription expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expression {
    /// `*`: every message.
    All,
    /// `A || B`: messages whose tag is one of these (sorted, deduplicated).
    Tags(Vec<String>),
}

impl Expression {
    /// Parse `*` or `TagA || TagB || …`.
    pub fn parse(text: &str) -> Result<Expression> {
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed == "*" {
            return Ok(Expression::All);
        }
        let mut tags = Vec::new();
        for part in trimmed.split("||") {
            let tag = part.trim();
            if tag.is_empty() {
                return Err(Error::invalid(
                    format!("expression {text:?} has an empty tag"),
                    "expression: `*` or `TagA || TagB`",
                ));
            }
            if tag == "*" {
                return Err(Error::invalid(
                    format!("expression {text:?} mixes `*` with tags"),
                    "expression: `*` or `TagA || TagB`",
                ));
            }
            if tag.len() > TAG_BYTES_MAX {
                return Err(Error::invalid(
                    format!("tag of {} bytes in expression", tag.len()),
                    "TAG_BYTES_MAX (255)",
                ));
            }
            if tag.contains('|') {
                return Err(Error::invalid(
                    format!("expression {text:?}: tags are separated by `||`"),
                    "expression: `*` or `TagA || TagB`",
                ));
            }
            tags.push(tag.to_owned());
        }
        if tags.len() > EXPRESSION_TAGS_MAX {
            return Err(Error::invalid(
                format!("expression lists {} tags", tags.len()),
                "EXPRESSION_TAGS_MAX (64)",
            ));
        }
        tags.sort();
        tags.dedup();
        Ok(Expression::Tags(tags))
    }

    /// Does a message with `tag` match (exact comparison)?
    pub fn matches_tag(&self, tag: &[u8]) -> bool {
        match self {
            Expression::All => true,
            Expression::Tags(tags) => tags.iter().any(|t| t.as_bytes() == tag),
        }
    }
}

impl std::fmt::Display for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expression::All => f.write_str("*"),
            Expression::Tags(tags) => f.write_str(&tags.join(" || ")),
        }
    }
}

/// An expression compiled against a hasher: hash pre-check, exact re-check.
#[derive(Debug, Clone)]
pub struct Filter {
    expression: Expression,
    hashes: Vec<u64>,
}

impl Filter {
    /// Compile `expression` with `hasher`.
    pub fn new(expression: Expression, hasher: TagHasher) -> Filter {
        let mut hashes = match &expression {
            Expression::All => Vec::new(),
            Expression::Tags(tags) => tags.iter().map(|t| hasher(t.as_bytes())).collect(),
        };
        hashes.sort_unstable();
        hashes.dedup();
        Filter { expression, hashes }
    }

    /// The expression.
    pub fn expression(&self) -> &Expression {
        &self.expression
    }

    /// True when the filter passes every message.
    pub fn is_all(&self) -> bool {
        matches!(self.expression, Expression::All)
    }

    /// First stage: could a message with this tag hash match? (No commitlog access.)
    #[inline]
    pub fn may_match_hash(&self, tag_hash: u64) -> bool {
        self.is_all() || self.hashes.contains(&tag_hash)
    }

    /// Second stage: does the stored tag match exactly?
    #[inline]
    pub fn matches_tag(&self, tag: &[u8]) -> bool {
        self.expression.matches_tag(tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden vectors: these values are part of the on-disk format and must never change.
    #[test]
    fn tag_hash_golden_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a_64(b"TagA"), 0x03aa_2efb_08df_e196);
        assert_eq!(fnv1a_64(b"TagB"), 0x03aa_2dfb_08df_dfe3);
    }

    #[test]
    fn expression_parses_all_and_lists() {
        assert_eq!(Expression::parse("*").unwrap(), Expression::All);
        assert_eq!(Expression::parse("  ").unwrap(), Expression::All);
        assert_eq!(
            Expression::parse("B || A ||A").unwrap(),
            Expression::Tags(vec!["A".into(), "B".into()])
        );
        for bad in ["A ||", "|| A", "A | B", "A || *", "A |||| B"] {
            assert!(
                matches!(Expression::parse(bad), Err(Error::Invalid { .. })),
                "{bad:?} should be rejected"
            );
        }
        let long = "x".repeat(256);
        assert!(Expression::parse(&long).is_err());
    }

    #[test]
    fn filter_rechecks_exact_tag() {
        let collide: TagHasher = |_| 7;
        let f = Filter::new(Expression::parse("A").unwrap(), collide);
        assert!(f.may_match_hash(7));
        assert!(f.matches_tag(b"A"));
        assert!(!f.matches_tag(b"B"));
    }
}

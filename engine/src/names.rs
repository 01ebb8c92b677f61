//! Topic and group names. They become directory names, so only `[A-Za-z0-9_-]` is ever accepted
//! from a user; names starting with `%` are reserved for the engine's system topics.

use crate::error::{Error, Result};
use crate::limits::NAME_BYTES_MAX;

/// Prefix of retry topics: `%RETRY%{group}`.
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of dead-letter topics: `%DLQ%{group}`.
pub const DLQ_PREFIX: &str = "%DLQ%";
/// The schedule (delay level) topic: one queue per level.
pub const SCHEDULE_TOPIC: &str = "%SCHEDULE%";
/// The exact-time timer topic.
pub const TIMER_TOPIC: &str = "%TIMER%";

fn check_plain(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(
            format!("{kind} name is empty"),
            "NAME_BYTES_MAX (1..=127 bytes of [A-Za-z0-9_-])",
        ));
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(Error::invalid(
            format!("{kind} name is {} bytes long", name.len()),
            "NAME_BYTES_MAX (1..=127 bytes of [A-Za-z0-9_-])",
        ));
    }
    // Bytes, not chars: every allowed character is ASCII, and this runs on every put.
    if let Some(at) = name
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        let bad = name[at..].chars().next().unwrap_or('?');
        let what = if name.starts_with('%') {
            format!("{kind} name {name:?} starts with '%', which is reserved for system topics")
        } else {
            format!("{kind} name {name:?} contains {bad:?}")
        };
        return Err(Error::invalid(
            what,
            "NAME_BYTES_MAX (1..=127 bytes of [A-Za-z0-9_-])",
        ));
    }
    Ok(())
}

/// Validate a topic name given by a user.
pub fn check_user_topic(name: &str) -> Result<()> {
    check_plain("topic", name)
}

/// Validate a consumer-group name.
pub fn check_group(name: &str) -> Result<()> {
    check_plain("group", name)
}

/// Validate any topic name the engine may hold: a user name or a system name
/// (`%RETRY%{group}`, `%DLQ%{group}`, `%SCHEDULE%`).
pub fn check_any_topic(name: &str) -> Result<()> {
    if name == SCHEDULE_TOPIC || name == TIMER_TOPIC {
        return Ok(());
    }
    if let Some(group) = name
        .strip_prefix(RETRY_PREFIX)
        .or_else(|| name.strip_prefix(DLQ_PREFIX))
    {
        return check_group(group);
    }
    check_user_topic(name)
}

/// The retry topic of a group.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// The dead-letter topic of a group.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_strict() {
        for good in ["a", "Orders_2024-x", &"x".repeat(127)] {
            check_user_topic(good).unwrap();
        }
        for bad in [
            "",
            "../x",
            "a/b",
            ".",
            "..",
            "a b",
            "é",
            "%RETRY%x",
            &"x".repeat(128),
            "a\0b",
        ] {
            assert!(
                matches!(check_user_topic(bad), Err(Error::Invalid { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn system_names() {
        check_any_topic("%RETRY%g1").unwrap();
        check_any_topic("%DLQ%g1").unwrap();
        check_any_topic(SCHEDULE_TOPIC).unwrap();
        assert!(check_any_topic("%RETRY%../x").is_err());
        assert!(check_any_topic("%OTHER%x").is_err());
    }
}

//! On-disk formats, one module per format. `docs/FORMAT.md` is the reader's guide to all of them.

pub mod checkpoint;
pub mod cq;
pub mod record;

/// A data file's name: its first byte offset, zero-padded to 20 decimal digits.
pub fn file_name(start_offset: u64) -> String {
    format!("{start_offset:020}")
}

/// Parse a 20-digit file name back to its offset; `None` for anything else.
pub fn parse_file_name(name: &str) -> Option<u64> {
    if name.len() != 20 || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(1 << 30), "00000000001073741824");
        assert_eq!(parse_file_name("00000000001073741824"), Some(1 << 30));
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "",
            "1073741824",
            "0000000000107374182x",
            "000000000010737418240",
            "+0000000001073741824",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad:?}");
        }
    }
}

//! The consume-queue entry: exactly 20 bytes, little-endian, no padding.
//!
//! ```text
//! offset size field
//!      0    8 commitlog_offset  position of the record in the commitlog
//!      8    4 size              the record's total_size
//!     12    8 tag_hash          FNV-1a 64 of the tag (schedule queues: delivery time, ms)
//! ```
//!
//! A consume-queue file `consumequeue/{topic}/{queue_id}/{20-digit start}` is a dense array of
//! entries; entry `i` of the queue lives in the file whose name is `≤ i × 20` at byte
//! `i × 20 − start`. Bytes never written are zero; an all-zero entry is "not written". An entry
//! with `size == 0` and `tag_hash == HOLE_TAG_HASH` is a *hole*: recovery found a queue offset
//! whose record was corrupt, and readers skip it.
//!
//! Consume-queue files carry no header (their fixed layout is the format); what identifies their
//! version is the commitlog's record version and `checkpoint` (see docs/FORMAT.md).

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes per entry.
pub const ENTRY_LEN: usize = 20;
/// `tag_hash` of a hole entry.
pub const HOLE_TAG_HASH: u64 = u64::MAX;

/// One consume-queue entry, exactly as on disk.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq, Debug,
)]
#[repr(C)]
pub struct CqEntry {
    pub commitlog_offset: U64,
    pub size: U32,
    pub tag_hash: U64,
}

const _: () = assert!(std::mem::size_of::<CqEntry>() == ENTRY_LEN);
const _: () = assert!(std::mem::align_of::<CqEntry>() == 1);

impl CqEntry {
    /// An entry pointing at a record.
    pub fn new(commitlog_offset: u64, size: u32, tag_hash: u64) -> CqEntry {
        CqEntry {
            commitlog_offset: U64::new(commitlog_offset),
            size: U32::new(size),
            tag_hash: U64::new(tag_hash),
        }
    }

    /// A hole: the queue offset exists but its record was lost to corruption.
    pub fn hole(commitlog_offset: u64) -> CqEntry {
        CqEntry::new(commitlog_offset, 0, HOLE_TAG_HASH)
    }

    /// All zero: never written.
    pub fn is_unwritten(&self) -> bool {
        self.as_bytes().iter().all(|&b| b == 0)
    }

    /// A hole entry.
    pub fn is_hole(&self) -> bool {
        self.size.get() == 0 && self.tag_hash.get() == HOLE_TAG_HASH
    }

    /// Decode an entry from exactly 20 bytes (`None` for any other length).
    pub fn decode(bytes: &[u8]) -> Option<CqEntry> {
        CqEntry::read_from_bytes(bytes).ok()
    }

    /// View a byte slice whose length is a multiple of 20 as entries, without copying.
    pub fn slice_from(bytes: &[u8]) -> Option<&[CqEntry]> {
        <[CqEntry]>::ref_from_bytes(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_and_layout_is_pinned() {
        let e = CqEntry::new(0x0102_0304_0506_0708, 0x0a0b_0c0d, 0x1112_1314_1516_1718);
        let bytes = e.as_bytes();
        assert_eq!(bytes.len(), 20);
        assert_eq!(&bytes[0..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[8..12], &[0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(
            &bytes[12..20],
            &[0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11]
        );
        assert_eq!(CqEntry::decode(bytes), Some(e));
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let e = CqEntry::new(1, 2, 3);
        let bytes = e.as_bytes();
        for len in 0..bytes.len() {
            assert_eq!(CqEntry::decode(&bytes[..len]), None);
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(CqEntry::decode(&long), None);
        assert!(CqEntry::slice_from(&long).is_none());
        assert_eq!(CqEntry::slice_from(&[0u8; 40]).unwrap().len(), 2);
    }

    #[test]
    fn holes_and_unwritten() {
        assert!(CqEntry::new(0, 0, 0).is_unwritten());
        assert!(CqEntry::hole(5).is_hole());
        assert!(!CqEntry::new(5, 10, HOLE_TAG_HASH).is_hole());
    }
}

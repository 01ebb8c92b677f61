//! `cq_entry_decode`: the consume-queue entry and the checkpoint file.
//!
//! Input: one mode byte, then bytes read both as consume-queue entries and as a checkpoint file.
//! With the mode's low bit set the checkpoint slots' CRCs are repaired first
//! ([`crate::fixup::fix_checkpoint_crcs`]).
//!
//! Properties checked:
//! * no input panics;
//! * `CqEntry::decode` accepts exactly 20 bytes and gives them back unchanged (`as_bytes`);
//! * `CqEntry::slice_from` accepts exactly the multiples of 20 and agrees entry by entry with
//!   `decode` on each 20-byte chunk;
//! * a checkpoint that decodes satisfies `cq_durable <= commitlog_durable` (what `encode` asserts),
//!   re-encodes, and the re-encoded slot decodes to the same checkpoint.

use tern_engine::format::checkpoint::{Checkpoint, FILE_LEN};
use tern_engine::format::cq::{CqEntry, ENTRY_LEN, HOLE_TAG_HASH};
use zerocopy::IntoBytes;

use crate::fixup;

/// The check.
pub fn run(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    check_entries(bytes);
    if mode & 1 == 1 {
        let mut owned = bytes.to_vec();
        fixup::fix_checkpoint_crcs(&mut owned);
        check_checkpoint(&owned);
    } else {
        check_checkpoint(bytes);
    }
}

fn check_entry(entry: &CqEntry, raw: &[u8]) {
    assert_eq!(entry.as_bytes(), raw, "an entry must give back its bytes");
    assert_eq!(entry.is_unwritten(), raw.iter().all(|&b| b == 0));
    assert_eq!(
        entry.is_hole(),
        entry.size.get() == 0 && entry.tag_hash.get() == HOLE_TAG_HASH
    );
    let rebuilt = CqEntry::new(
        entry.commitlog_offset.get(),
        entry.size.get(),
        entry.tag_hash.get(),
    );
    assert_eq!(&rebuilt, entry);
}

fn check_entries(bytes: &[u8]) {
    match CqEntry::decode(bytes) {
        Some(entry) => {
            assert_eq!(
                bytes.len(),
                ENTRY_LEN,
                "decode accepted {} bytes",
                bytes.len()
            );
            check_entry(&entry, bytes);
        }
        None => assert_ne!(bytes.len(), ENTRY_LEN, "decode refused 20 bytes"),
    }
    match CqEntry::slice_from(bytes) {
        Some(entries) => {
            assert_eq!(bytes.len() % ENTRY_LEN, 0);
            assert_eq!(entries.len(), bytes.len() / ENTRY_LEN);
            for (entry, raw) in entries.iter().zip(bytes.chunks_exact(ENTRY_LEN)) {
                assert_eq!(CqEntry::decode(raw).as_ref(), Some(entry));
                check_entry(entry, raw);
            }
        }
        None => assert_ne!(
            bytes.len() % ENTRY_LEN,
            0,
            "slice_from refused a multiple of 20"
        ),
    }
}

fn check_checkpoint(bytes: &[u8]) {
    let Ok(cp) = Checkpoint::decode_file(bytes) else {
        return;
    };
    assert!(
        cp.cq_durable <= cp.commitlog_durable,
        "decoded a checkpoint that encode would refuse: {cp:?}"
    );
    let (at, slot) = cp.encode();
    let at = at as usize;
    assert!(at + slot.len() <= FILE_LEN);
    let mut file = vec![0u8; FILE_LEN];
    file[at..at + slot.len()].copy_from_slice(&slot);
    assert_eq!(
        Checkpoint::decode_file(&file),
        Ok(cp),
        "checkpoint round trip"
    );
}

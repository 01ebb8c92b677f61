//! Checksum repair, so mutated inputs get past the CRC checks.

use tern_engine::format::checkpoint::SLOT_LEN;
use tern_engine::format::record::{CRC_START, HEADER_LEN, RECORD_MAGIC};

/// Offset of the CRC field in a record.
const RECORD_CRC_AT: usize = 8;
/// Bytes of a checkpoint slot covered by its CRC; the CRC follows them.
const CHECKPOINT_CRC_COVERS: usize = 56;

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Recompute the CRC of every record-looking span of `buf`: a position holding the record magic
/// whose `total_size` is at least a header and fits in what is left. Scanning resumes after each
/// repaired record (records never overlap) or one byte further. Returns how many were repaired.
pub fn fix_record_crcs(buf: &mut [u8]) -> usize {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut fixed = 0;
    let mut pos = 0;
    while pos + HEADER_LEN <= buf.len() {
        let total = u32_at(buf, pos) as usize;
        if buf[pos + 4..pos + 8] == magic && total >= HEADER_LEN && total <= buf.len() - pos {
            let crc = crc32c::crc32c(&buf[pos + CRC_START..pos + total]);
            buf[pos + RECORD_CRC_AT..pos + RECORD_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
            fixed += 1;
            pos += total;
        } else {
            pos += 1;
        }
    }
    fixed
}

/// Recompute the CRC of each whole 64-byte slot of a checkpoint file.
pub fn fix_checkpoint_crcs(buf: &mut [u8]) {
    for slot in buf.chunks_exact_mut(SLOT_LEN).take(2) {
        let crc = crc32c::crc32c(&slot[..CHECKPOINT_CRC_COVERS]);
        slot[CHECKPOINT_CRC_COVERS..CHECKPOINT_CRC_COVERS + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

//! The `checkpoint` file: what is known to be durable.
//!
//! The file is 128 bytes: two 64-byte slots, written alternately (slot = sequence % 2) in place and
//! fdatasync'd. A reader takes the valid slot with the higher sequence, so a torn write of one slot
//! always leaves the previous checkpoint readable.
//!
//! ```text
//! offset size field (each slot)
//!      0    4 magic              0x504B4354, the bytes "TCKP"
//!      4    2 version            1
//!      6    2 flags              bit 0: written by a clean shutdown
//!      8    8 sequence           increases by one per write
//!     16    8 commitlog_durable  every commitlog byte below this offset was fdatasync'd
//!     24    8 cq_durable         every consume-queue entry of a record below this commitlog
//!                                offset was fdatasync'd (cq_durable <= commitlog_durable)
//!     32    8 timestamp_ms       engine clock when written
//!     40   16 reserved           0
//!     56    4 crc32c             of bytes [0, 56)
//!     60    4 reserved           0 (outside the CRC; a slot with non-zero bytes here is invalid)
//! ```

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// "TCKP".
pub const CHECKPOINT_MAGIC: u32 = u32::from_le_bytes(*b"TCKP");
/// Checkpoint format version.
pub const CHECKPOINT_VERSION: u16 = 1;
/// Bytes of one slot.
pub const SLOT_LEN: usize = 64;
/// Bytes of the whole file.
pub const FILE_LEN: usize = 2 * SLOT_LEN;
/// Flag: written by a clean shutdown.
pub const FLAG_CLEAN: u16 = 1;

/// One slot, as on disk.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
struct Slot {
    magic: U32,
    version: U16,
    flags: U16,
    sequence: U64,
    commitlog_durable: U64,
    cq_durable: U64,
    timestamp_ms: U64,
    reserved: [u8; 16],
    crc32c: U32,
    reserved2: U32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_LEN);

/// A decoded checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub sequence: u64,
    pub commitlog_durable: u64,
    pub cq_durable: u64,
    pub timestamp_ms: u64,
    pub clean: bool,
}

/// Why a checkpoint file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointError {
    /// Neither slot is valid.
    NoValidSlot,
    /// A slot has a valid checksum but a version this build does not read.
    UnsupportedVersion(u16),
}

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointError::NoValidSlot => f.write_str("no valid checkpoint slot"),
            CheckpointError::UnsupportedVersion(v) => {
                write!(f, "unsupported checkpoint version {v}")
            }
        }
    }
}

impl Checkpoint {
    /// Encode into its slot; returns (byte offset in the file, 64 bytes).
    pub fn encode(&self) -> (u64, [u8; SLOT_LEN]) {
        assert!(
            self.cq_durable <= self.commitlog_durable,
            "cq_durable ahead of the commitlog"
        );
        let mut slot = Slot {
            magic: U32::new(CHECKPOINT_MAGIC),
            version: U16::new(CHECKPOINT_VERSION),
            flags: U16::new(if self.clean { FLAG_CLEAN } else { 0 }),
            sequence: U64::new(self.sequence),
            commitlog_durable: U64::new(self.commitlog_durable),
            cq_durable: U64::new(self.cq_durable),
            timestamp_ms: U64::new(self.timestamp_ms),
            reserved: [0; 16],
            crc32c: U32::new(0),
            reserved2: U32::new(0),
        };
        let crc = crate::format::crc32c(&slot.as_bytes()[..56]);
        slot.crc32c = U32::new(crc);
        let mut out = [0u8; SLOT_LEN];
        out.copy_from_slice(slot.as_bytes());
        ((self.sequence % 2) * SLOT_LEN as u64, out)
    }

    /// Decode the whole file (any length; missing bytes count as an invalid slot).
    pub fn decode_file(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let mut best: Option<Checkpoint> = None;
        let mut unsupported = None;
        for i in 0..2 {
            let Some(raw) = bytes.get(i * SLOT_LEN..(i + 1) * SLOT_LEN) else {
                continue;
            };
            let Ok(slot) = Slot::read_from_bytes(raw) else {
                continue;
            };
            // The trailing reserved word is outside the CRC: it must be zero.
            if slot.magic.get() != CHECKPOINT_MAGIC
                || crate::format::crc32c(&raw[..56]) != slot.crc32c.get()
                || slot.reserved2.get() != 0
            {
                continue;
            }
            if slot.version.get() != CHECKPOINT_VERSION {
                unsupported = Some(slot.version.get());
                continue;
            }
            let cp = Checkpoint {
                sequence: slot.sequence.get(),
                commitlog_durable: slot.commitlog_durable.get(),
                cq_durable: slot.cq_durable.get(),
                timestamp_ms: slot.timestamp_ms.get(),
                clean: slot.flags.get() & FLAG_CLEAN != 0,
            };
            if cp.cq_durable > cp.commitlog_durable {
                continue;
            }
            if best.is_none_or(|b| cp.sequence > b.sequence) {
                best = Some(cp);
            }
        }
        match (best, unsupported) {
            (Some(cp), _) => Ok(cp),
            (None, Some(v)) => Err(CheckpointError::UnsupportedVersion(v)),
            (None, None) => Err(CheckpointError::NoValidSlot),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(cps: &[Checkpoint]) -> Vec<u8> {
        let mut file = vec![0u8; FILE_LEN];
        for cp in cps {
            let (at, bytes) = cp.encode();
            file[at as usize..at as usize + SLOT_LEN].copy_from_slice(&bytes);
        }
        file
    }

    #[test]
    fn newest_valid_slot_wins_and_torn_slot_falls_back() {
        let a = Checkpoint {
            sequence: 4,
            commitlog_durable: 100,
            cq_durable: 50,
            timestamp_ms: 1,
            clean: false,
        };
        let b = Checkpoint {
            sequence: 5,
            commitlog_durable: 200,
            cq_durable: 200,
            timestamp_ms: 2,
            clean: true,
        };
        let file = file_with(&[a, b]);
        assert_eq!(Checkpoint::decode_file(&file), Ok(b));
        for i in 0..SLOT_LEN {
            let mut torn = file.clone();
            torn[SLOT_LEN + i] ^= 0x40;
            assert_eq!(Checkpoint::decode_file(&torn), Ok(a), "flip at {i}");
        }
        for len in 0..FILE_LEN {
            let got = Checkpoint::decode_file(&file[..len]);
            if len < SLOT_LEN {
                assert_eq!(got, Err(CheckpointError::NoValidSlot));
            } else if len < FILE_LEN {
                assert_eq!(got, Ok(a));
            }
        }
    }
}

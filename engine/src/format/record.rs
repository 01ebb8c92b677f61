//! The commitlog record, format version 1.
//!
//! Every message is one record in the commitlog. All integers are little-endian, fixed width;
//! there is no padding and no alignment.
//!
//! ```text
//! offset size field
//!      0    4 total_size         whole record in bytes, this field included (>= 92)
//!      4    4 magic              0x4E524554, the bytes "TERN"
//!      8    4 crc32c             CRC32C (Castagnoli) of bytes [12, total_size)
//!     12    2 version            1
//!     14    2 flags              see `flags`; unknown bits are preserved
//!     16    8 commitlog_offset   this record's own position in the commitlog
//!     24    8 queue_offset       index of its entry in consumequeue/{topic}/{queue_id}
//!     32    8 store_timestamp_ms when the engine accepted it (ms since the Unix epoch)
//!     40    8 born_timestamp_ms  when the producer created it
//!     48    8 deliver_at_ms      0, or when a delayed message is due in its real topic
//!     56   16 message_id         opaque id; kept across retry and dead-letter re-puts
//!     72    4 queue_id
//!     76    4 reconsume_count    failed deliveries so far
//!     80    4 body_len
//!     84    2 topic_len          1..=127 (system topics start with '%')
//!     86    2 keys_len           bytes of the keys section
//!     88    2 properties_len     bytes of the properties section
//!     90    1 tag_len            0..=255
//!     91    1 reserved           0
//!     92      topic              UTF-8
//!             tag                UTF-8
//!             keys section       repeated: key_len u8, key bytes (UTF-8, 1..=255)
//!             properties section repeated: name_len u16, name, value_len u16, value (UTF-8)
//!             body               raw bytes
//! ```
//!
//! A segment's unused tail after its last record holds an **end-of-segment marker** when the next
//! record did not fit: `total_size u32` = bytes from the marker to the end of the segment, then
//! `magic u32` = 0x534F4554 ("TEOS"). The engine places a record only if the marker still fits
//! after it, so a record never spans two segments. Bytes that were never written are zero; a
//! `total_size` of zero therefore means "no more records in this segment".

use std::fmt;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::limits::RECORD_BYTES_MAX;

/// "TERN" as a little-endian u32.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"TERN");
/// "TEOS" as a little-endian u32: end of segment.
pub const EOS_MAGIC: u32 = u32::from_le_bytes(*b"TEOS");
/// The record format version this code writes and reads.
pub const RECORD_VERSION: u16 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 92;
/// Bytes of the end-of-segment marker.
pub const EOS_LEN: usize = 8;
/// First byte covered by the CRC.
pub const CRC_START: usize = 12;

/// Record flag bits.
pub mod flags {
    /// The record sits in a schedule (delay) topic waiting for `deliver_at_ms`.
    pub const SCHEDULED: u16 = 1 << 0;
    /// The record was re-put by the retry machinery.
    pub const RETRY: u16 = 1 << 1;
    /// The record waits in the timer topic (with `SCHEDULED`).
    pub const TIMER: u16 = 1 << 2;
}

/// The fixed 92-byte header, exactly as on disk.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct RecordHeader {
    pub total_size: U32,
    pub magic: U32,
    pub crc32c: U32,
    pub version: U16,
    pub flags: U16,
    pub commitlog_offset: U64,
    pub queue_offset: U64,
    pub store_timestamp_ms: U64,
    pub born_timestamp_ms: U64,
    pub deliver_at_ms: U64,
    pub message_id: [u8; 16],
    pub queue_id: U32,
    pub reconsume_count: U32,
    pub body_len: U32,
    pub topic_len: U16,
    pub keys_len: U16,
    pub properties_len: U16,
    pub tag_len: u8,
    pub reserved: u8,
}

const _: () = assert!(std::mem::size_of::<RecordHeader>() == HEADER_LEN);

/// Why bytes did not decode as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header or the declared size.
    Truncated { needed: usize, available: usize },
    /// The magic number is neither a record nor an end-of-segment marker.
    BadMagic { found: u32 },
    /// A version this code does not read.
    UnsupportedVersion { found: u16 },
    /// `total_size` is impossible, or disagrees with the field lengths.
    BadLength {
        total_size: u32,
        reason: &'static str,
    },
    /// The stored CRC does not match the bytes.
    BadChecksum { stored: u32, computed: u32 },
    /// A string field is not UTF-8, or a section is malformed.
    Malformed { reason: &'static str },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { needed, available } => {
                write!(
                    f,
                    "truncated record: needs {needed} bytes, {available} available"
                )
            }
            DecodeError::BadMagic { found } => write!(f, "bad magic 0x{found:08x}"),
            DecodeError::UnsupportedVersion { found } => {
                write!(
                    f,
                    "unsupported record version {found} (this build reads {RECORD_VERSION})"
                )
            }
            DecodeError::BadLength { total_size, reason } => {
                write!(f, "bad record length {total_size}: {reason}")
            }
            DecodeError::BadChecksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch: stored 0x{stored:08x}, computed 0x{computed:08x}"
                )
            }
            DecodeError::Malformed { reason } => write!(f, "malformed record: {reason}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// What a reader finds at a position in a segment.
#[derive(Debug)]
pub enum Slot<'a> {
    /// A valid record.
    Record(RecordView<'a>),
    /// An end-of-segment marker claiming `remaining` bytes to the end of the segment.
    EndOfSegment { remaining: u32 },
    /// Zero bytes: nothing was ever written here.
    Empty,
}

/// Read the slot at the start of `bytes` (which runs to the end of the segment).
pub fn read_slot(bytes: &[u8]) -> Result<Slot<'_>, DecodeError> {
    if bytes.len() < EOS_LEN {
        if bytes.iter().all(|&b| b == 0) {
            return Ok(Slot::Empty);
        }
        return Err(DecodeError::Truncated {
            needed: EOS_LEN,
            available: bytes.len(),
        });
    }
    let total_size = read_u32(bytes, 0);
    let magic = read_u32(bytes, 4);
    if total_size == 0 && magic == 0 {
        return Ok(Slot::Empty);
    }
    if magic == EOS_MAGIC {
        if total_size as usize != bytes.len() {
            return Err(DecodeError::BadLength {
                total_size,
                reason: "end-of-segment marker does not reach the end of the segment",
            });
        }
        return Ok(Slot::EndOfSegment {
            remaining: total_size,
        });
    }
    decode(bytes).map(Slot::Record)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// A decoded record, borrowing every variable field from the underlying bytes.
#[derive(Clone, Copy)]
pub struct RecordView<'a> {
    header: &'a RecordHeader,
    bytes: &'a [u8],
    topic: &'a str,
    tag: &'a str,
    keys: &'a [u8],
    properties: &'a [u8],
    body: &'a [u8],
}

impl fmt::Debug for RecordView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordView")
            .field("commitlog_offset", &self.commitlog_offset())
            .field("topic", &self.topic)
            .field("queue_id", &self.queue_id())
            .field("queue_offset", &self.queue_offset())
            .field("tag", &self.tag)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl<'a> RecordView<'a> {
    /// The whole encoded record.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    pub fn total_size(&self) -> u32 {
        self.header.total_size.get()
    }
    pub fn flags(&self) -> u16 {
        self.header.flags.get()
    }
    pub fn commitlog_offset(&self) -> u64 {
        self.header.commitlog_offset.get()
    }
    pub fn queue_offset(&self) -> u64 {
        self.header.queue_offset.get()
    }
    pub fn store_timestamp_ms(&self) -> u64 {
        self.header.store_timestamp_ms.get()
    }
    pub fn born_timestamp_ms(&self) -> u64 {
        self.header.born_timestamp_ms.get()
    }
    pub fn deliver_at_ms(&self) -> u64 {
        self.header.deliver_at_ms.get()
    }
    pub fn message_id(&self) -> [u8; 16] {
        self.header.message_id
    }
    pub fn queue_id(&self) -> u32 {
        self.header.queue_id.get()
    }
    pub fn reconsume_count(&self) -> u32 {
        self.header.reconsume_count.get()
    }
    pub fn topic(&self) -> &'a str {
        self.topic
    }
    pub fn tag(&self) -> &'a str {
        self.tag
    }
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut rest = self.keys;
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let (key, tail) = tail.split_at(len as usize);
            rest = tail;
            // Validated at decode time.
            std::str::from_utf8(key).ok()
        })
    }
    /// The properties, in order.
    pub fn properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut rest = self.properties;
        std::iter::from_fn(move || {
            let (name, tail) = take_u16_str(rest)?;
            let (value, tail) = take_u16_str(tail)?;
            rest = tail;
            Some((name, value))
        })
    }
    /// What this record's consume-queue entry holds in its `tag_hash` field: the delivery time
    /// for a `SCHEDULED` record, otherwise `hasher(tag)`.
    pub fn cq_tag_hash(&self, hasher: fn(&[u8]) -> u64) -> u64 {
        if self.flags() & flags::SCHEDULED != 0 {
            self.deliver_at_ms()
        } else {
            hasher(self.tag.as_bytes())
        }
    }

    /// The value of property `name`, if present.
    pub fn property(&self, name: &str) -> Option<&'a str> {
        self.properties().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

fn take_u16_str(bytes: &[u8]) -> Option<(&str, &[u8])> {
    if bytes.len() < 2 {
        return None;
    }
    let len = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
    let rest = &bytes[2..];
    if rest.len() < len {
        return None;
    }
    let (s, tail) = rest.split_at(len);
    Some((std::str::from_utf8(s).ok()?, tail))
}

/// Decode and fully verify one record at the start of `bytes` (trailing bytes are ignored).
pub fn decode(bytes: &[u8]) -> Result<RecordView<'_>, DecodeError> {
    decode_with(bytes, true)
}

/// Decode a record whose checksum was already verified (every structural check still runs).
pub fn decode_trusted(bytes: &[u8]) -> Result<RecordView<'_>, DecodeError> {
    decode_with(bytes, false)
}

fn decode_with(bytes: &[u8], verify_crc: bool) -> Result<RecordView<'_>, DecodeError> {
    let Ok((header, _)) = RecordHeader::ref_from_prefix(bytes) else {
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN,
            available: bytes.len(),
        });
    };
    let magic = header.magic.get();
    if magic != RECORD_MAGIC {
        return Err(DecodeError::BadMagic { found: magic });
    }
    let total_size = header.total_size.get();
    if (total_size as usize) < HEADER_LEN || total_size > RECORD_BYTES_MAX {
        return Err(DecodeError::BadLength {
            total_size,
            reason: "outside the possible range",
        });
    }
    let total = total_size as usize;
    if bytes.len() < total {
        return Err(DecodeError::Truncated {
            needed: total,
            available: bytes.len(),
        });
    }
    let bytes = &bytes[..total];
    if verify_crc {
        let stored = header.crc32c.get();
        let computed = crate::format::crc32c(&bytes[CRC_START..]);
        if stored != computed {
            return Err(DecodeError::BadChecksum { stored, computed });
        }
    }
    let version = header.version.get();
    if version != RECORD_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    if header.reserved != 0 {
        return Err(DecodeError::Malformed {
            reason: "reserved byte is not zero",
        });
    }
    let topic_len = header.topic_len.get() as usize;
    let tag_len = header.tag_len as usize;
    let keys_len = header.keys_len.get() as usize;
    let props_len = header.properties_len.get() as usize;
    let body_len = header.body_len.get() as usize;
    let sum = HEADER_LEN + topic_len + tag_len + keys_len + props_len + body_len;
    if sum != total {
        return Err(DecodeError::BadLength {
            total_size,
            reason: "field lengths do not add up",
        });
    }
    let mut at = HEADER_LEN;
    let mut take = |len: usize| {
        let s = &bytes[at..at + len];
        at += len;
        s
    };
    let topic = take(topic_len);
    let tag = take(tag_len);
    let keys = take(keys_len);
    let properties = take(props_len);
    let body = take(body_len);
    let topic = std::str::from_utf8(topic).map_err(|_| DecodeError::Malformed {
        reason: "topic is not UTF-8",
    })?;
    if topic.is_empty() {
        return Err(DecodeError::Malformed {
            reason: "empty topic",
        });
    }
    let tag = std::str::from_utf8(tag).map_err(|_| DecodeError::Malformed {
        reason: "tag is not UTF-8",
    })?;
    check_keys(keys)?;
    check_properties(properties)?;
    Ok(RecordView {
        header,
        bytes,
        topic,
        tag,
        keys,
        properties,
        body,
    })
}

fn check_keys(mut rest: &[u8]) -> Result<(), DecodeError> {
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 || tail.len() < len {
            return Err(DecodeError::Malformed {
                reason: "keys section",
            });
        }
        std::str::from_utf8(&tail[..len]).map_err(|_| DecodeError::Malformed {
            reason: "key is not UTF-8",
        })?;
        rest = &tail[len..];
    }
    Ok(())
}

fn check_properties(mut rest: &[u8]) -> Result<(), DecodeError> {
    while !rest.is_empty() {
        let (_, tail) = take_u16_str(rest).ok_or(DecodeError::Malformed {
            reason: "properties section (name)",
        })?;
        let (_, tail) = take_u16_str(tail).ok_or(DecodeError::Malformed {
            reason: "properties section (value)",
        })?;
        rest = tail;
    }
    Ok(())
}

/// The variable part of a record to encode; lengths must already be validated against
/// [`crate::limits`].
#[derive(Debug, Clone, Copy)]
pub struct RecordFields<'a> {
    pub flags: u16,
    pub commitlog_offset: u64,
    pub queue_offset: u64,
    pub store_timestamp_ms: u64,
    pub born_timestamp_ms: u64,
    pub deliver_at_ms: u64,
    pub message_id: [u8; 16],
    pub queue_id: u32,
    pub reconsume_count: u32,
    pub topic: &'a str,
    pub tag: &'a str,
    pub keys: &'a [String],
    pub properties: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Bytes of the keys section for `keys`.
pub fn keys_section_len(keys: &[String]) -> usize {
    keys.iter().map(|k| 1 + k.len()).sum()
}

/// Bytes of the properties section for `properties`.
pub fn properties_section_len(properties: &[(String, String)]) -> usize {
    properties.iter().map(|(k, v)| 4 + k.len() + v.len()).sum()
}

/// Size of the record `fields` would encode to.
pub fn encoded_len(fields: &RecordFields<'_>) -> usize {
    HEADER_LEN
        + fields.topic.len()
        + fields.tag.len()
        + keys_section_len(fields.keys)
        + properties_section_len(fields.properties)
        + fields.body.len()
}

/// Append the encoded record to `out`; returns its size.
///
/// Panics if a length exceeds its field's width: callers validate input first (an invariant, not
/// input handling).
pub fn encode_into(out: &mut Vec<u8>, fields: &RecordFields<'_>) -> usize {
    let start = out.len();
    let total = encode_unsealed_into(out, fields);
    seal(&mut out[start..]);
    total
}

/// Fill in the CRC of one encoded record (`record` is exactly the record's bytes).
///
/// The engine encodes under its append lock with the CRC left zero and seals on the writer
/// thread, so the put path does not pay for the checksum.
pub fn seal(record: &mut [u8]) {
    let crc = crate::format::crc32c(&record[CRC_START..]);
    record[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Like [`encode_into`], but the CRC field is left zero: the record must go through [`seal`]
/// before anyone may read it.
pub fn encode_unsealed_into(out: &mut Vec<u8>, fields: &RecordFields<'_>) -> usize {
    let total = encoded_len(fields);
    let keys_len = keys_section_len(fields.keys);
    let props_len = properties_section_len(fields.properties);
    assert!(
        total <= RECORD_BYTES_MAX as usize,
        "record larger than RECORD_BYTES_MAX"
    );
    assert!(fields.topic.len() <= u16::MAX as usize && fields.tag.len() <= u8::MAX as usize);
    assert!(keys_len <= u16::MAX as usize && props_len <= u16::MAX as usize);
    let start = out.len();
    out.reserve(total);
    let header = RecordHeader {
        total_size: U32::new(total as u32),
        magic: U32::new(RECORD_MAGIC),
        crc32c: U32::new(0),
        version: U16::new(RECORD_VERSION),
        flags: U16::new(fields.flags),
        commitlog_offset: U64::new(fields.commitlog_offset),
        queue_offset: U64::new(fields.queue_offset),
        store_timestamp_ms: U64::new(fields.store_timestamp_ms),
        born_timestamp_ms: U64::new(fields.born_timestamp_ms),
        deliver_at_ms: U64::new(fields.deliver_at_ms),
        message_id: fields.message_id,
        queue_id: U32::new(fields.queue_id),
        reconsume_count: U32::new(fields.reconsume_count),
        body_len: U32::new(fields.body.len() as u32),
        topic_len: U16::new(fields.topic.len() as u16),
        keys_len: U16::new(keys_len as u16),
        properties_len: U16::new(props_len as u16),
        tag_len: fields.tag.len() as u8,
        reserved: 0,
    };
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(fields.topic.as_bytes());
    out.extend_from_slice(fields.tag.as_bytes());
    for key in fields.keys {
        assert!(!key.is_empty() && key.len() <= u8::MAX as usize);
        out.push(key.len() as u8);
        out.extend_from_slice(key.as_bytes());
    }
    for (name, value) in fields.properties {
        assert!(name.len() <= u16::MAX as usize && value.len() <= u16::MAX as usize);
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(fields.body);
    assert_eq!(out.len() - start, total);
    total
}

/// Append an end-of-segment marker covering `remaining` bytes (>= [`EOS_LEN`]).
pub fn encode_eos(out: &mut Vec<u8>, remaining: u32) {
    assert!(remaining as usize >= EOS_LEN);
    out.extend_from_slice(&remaining.to_le_bytes());
    out.extend_from_slice(&EOS_MAGIC.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<String>, Vec<(String, String)>) {
        (
            vec!["order-1".to_owned(), "user-9".to_owned()],
            vec![
                ("trace".to_owned(), "abc".to_owned()),
                ("k".to_owned(), String::new()),
            ],
        )
    }

    fn encode_sample(body: &[u8]) -> Vec<u8> {
        let (keys, props) = sample();
        let fields = RecordFields {
            flags: flags::RETRY,
            commitlog_offset: 4096,
            queue_offset: 7,
            store_timestamp_ms: 1_700_000_000_000,
            born_timestamp_ms: 1_699_999_999_000,
            deliver_at_ms: 0,
            message_id: [9; 16],
            queue_id: 3,
            reconsume_count: 2,
            topic: "orders",
            tag: "TagA",
            keys: &keys,
            properties: &props,
            body,
        };
        let mut out = Vec::new();
        let n = encode_into(&mut out, &fields);
        assert_eq!(n, out.len());
        assert_eq!(n, encoded_len(&fields));
        out
    }

    #[test]
    fn record_round_trips_every_field() {
        let bytes = encode_sample(b"hello world");
        let view = decode(&bytes).unwrap();
        assert_eq!(view.total_size() as usize, bytes.len());
        assert_eq!(view.flags(), flags::RETRY);
        assert_eq!(view.commitlog_offset(), 4096);
        assert_eq!(view.queue_offset(), 7);
        assert_eq!(view.store_timestamp_ms(), 1_700_000_000_000);
        assert_eq!(view.born_timestamp_ms(), 1_699_999_999_000);
        assert_eq!(view.deliver_at_ms(), 0);
        assert_eq!(view.message_id(), [9; 16]);
        assert_eq!(view.queue_id(), 3);
        assert_eq!(view.reconsume_count(), 2);
        assert_eq!(view.topic(), "orders");
        assert_eq!(view.tag(), "TagA");
        assert_eq!(view.keys().collect::<Vec<_>>(), ["order-1", "user-9"]);
        assert_eq!(
            view.properties().collect::<Vec<_>>(),
            [("trace", "abc"), ("k", "")]
        );
        assert_eq!(view.property("trace"), Some("abc"));
        assert_eq!(view.body(), b"hello world");
    }

    #[test]
    fn record_header_layout_is_pinned() {
        let bytes = encode_sample(b"");
        assert_eq!(&bytes[4..8], b"TERN");
        assert_eq!(u16::from_le_bytes([bytes[12], bytes[13]]), 1);
        assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), 4096);
        assert_eq!(u32::from_le_bytes(bytes[72..76].try_into().unwrap()), 3);
        assert_eq!(&bytes[92..98], b"orders");
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encode_sample(b"0123456789abcdef");
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                match read_slot(&bad) {
                    Ok(Slot::Record(_)) => panic!("flip of byte {i} went undetected"),
                    Ok(Slot::EndOfSegment { .. }) | Ok(Slot::Empty) | Err(_) => {}
                }
                assert!(decode(&bad).is_err(), "flip at byte {i} bit {bit:#x}");
            }
        }
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let bytes = encode_sample(b"body bytes");
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn eos_marker_and_empty_slots() {
        let mut seg = vec![0u8; 64];
        assert!(matches!(read_slot(&seg), Ok(Slot::Empty)));
        let mut marker = Vec::new();
        encode_eos(&mut marker, 64);
        seg[..8].copy_from_slice(&marker);
        assert!(matches!(
            read_slot(&seg),
            Ok(Slot::EndOfSegment { remaining: 64 })
        ));
        // A marker that does not reach the end of the segment is corrupt.
        assert!(read_slot(&seg[..32]).is_err());
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut bytes = encode_sample(b"x");
        bytes[12] = 2;
        let crc = crate::format::crc32c(&bytes[CRC_START..]);
        bytes[8..12].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&bytes).unwrap_err(),
            DecodeError::UnsupportedVersion { found: 2 }
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = read_slot(&bytes);
            let _ = decode(&bytes);
        }
    }
}

//! The frame of protocol `tern/1`: a fixed 24-byte little-endian header and a raw body.
//!
//! Every request and every response is exactly one frame. A request travels on its own QUIC
//! stream (bidirectional for two-way requests, unidirectional for oneway sends); the answer is
//! one frame on the same stream's other direction, after which the broker finishes the stream.
//!
//! ```text
//! offset size field
//!      0    4 magic       0x574E5254, the bytes "TRNW"
//!      4    1 version     1
//!      5    1 flags       bit 0 RESPONSE (set by the broker), bit 1 ONEWAY (request on a
//!                         unidirectional stream; never answered); other bits 0
//!      6    2 opcode      see `Opcode`; a response repeats its request's opcode
//!      8    2 status      0 in requests; in responses 0 = OK or an `ErrorCode`
//!     10    2 reserved    0
//!     12    4 body_len    bytes of body following the header
//!     16    8 request_id  chosen by the client, echoed in the response
//!     24      body        body_len bytes, layout per opcode (docs/PROTOCOL.md, `wire`)
//! ```
//!
//! [`decode_frame`] is a pure function over bytes for the fuzz target: it never panics and
//! never allocates.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::codes::ErrorCode;
use crate::limits::FRAME_BODY_BYTES_CEILING;

/// "TRNW" as a little-endian u32.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"TRNW");
/// The protocol version this code speaks.
pub const FRAME_VERSION: u8 = 1;
/// Bytes of the frame header.
pub const HEADER_LEN: usize = 24;

/// Flag: the frame is a response.
pub const FLAG_RESPONSE: u8 = 1 << 0;
/// Flag: the request is oneway (sent on a unidirectional stream; no response).
pub const FLAG_ONEWAY: u8 = 1 << 1;
/// Every flag bit this version defines.
pub const FLAGS_KNOWN: u8 = FLAG_RESPONSE | FLAG_ONEWAY;

const OFFSET_MAGIC: usize = 0;
const OFFSET_VERSION: usize = OFFSET_MAGIC + 4;
const OFFSET_FLAGS: usize = OFFSET_VERSION + 1;
const OFFSET_OPCODE: usize = OFFSET_FLAGS + 1;
const OFFSET_STATUS: usize = OFFSET_OPCODE + 2;
const OFFSET_RESERVED: usize = OFFSET_STATUS + 2;
const OFFSET_BODY_LEN: usize = OFFSET_RESERVED + 2;
const OFFSET_REQUEST_ID: usize = OFFSET_BODY_LEN + 4;
const _: () = assert!(OFFSET_REQUEST_ID + 8 == HEADER_LEN);

/// The frame header, exactly as on the wire.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct FrameHeader {
    pub magic: U32,
    pub version: u8,
    pub flags: u8,
    pub opcode: U16,
    pub status: U16,
    pub reserved: U16,
    pub body_len: U32,
    pub request_id: U64,
}
const _: () = assert!(std::mem::size_of::<FrameHeader>() == HEADER_LEN);
const _: () = assert!(std::mem::offset_of!(FrameHeader, body_len) == OFFSET_BODY_LEN);
const _: () = assert!(std::mem::offset_of!(FrameHeader, request_id) == OFFSET_REQUEST_ID);

impl FrameHeader {
    /// A header with the magic and version filled in.
    pub fn new(
        opcode: Opcode,
        flags: u8,
        status: ErrorCode,
        body_len: u32,
        request_id: u64,
    ) -> Self {
        FrameHeader {
            magic: U32::new(FRAME_MAGIC),
            version: FRAME_VERSION,
            flags,
            opcode: U16::new(opcode.0),
            status: U16::new(status.0),
            reserved: U16::new(0),
            body_len: U32::new(body_len),
            request_id: U64::new(request_id),
        }
    }

    /// The opcode.
    pub fn opcode(&self) -> Opcode {
        Opcode(self.opcode.get())
    }

    /// The status (responses).
    pub fn status(&self) -> ErrorCode {
        ErrorCode(self.status.get())
    }

    /// Is this a response?
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }

    /// Is this a oneway request?
    pub fn is_oneway(&self) -> bool {
        self.flags & FLAG_ONEWAY != 0
    }
}

/// An operation code (`u16` on the wire). Codes are only ever added.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Opcode(pub u16);

macro_rules! opcodes {
    ($( $(#[$doc:meta])* $name:ident = $value:expr; )*) => {
        impl Opcode {
            $( $(#[$doc])* pub const $name: Opcode = Opcode($value); )*
            /// Every opcode this build knows.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$name),*];
            /// The registered name (`"UNKNOWN"` otherwise).
            pub fn name(self) -> &'static str {
                match self.0 { $( $value => stringify!($name), )* _ => "UNKNOWN" }
            }
            /// Does this build know the opcode?
            pub fn is_known(self) -> bool {
                Self::ALL.contains(&self)
            }
        }
    };
}

opcodes! {
    /// Protocol version check and token authentication.
    HELLO = 1;
    /// Create a topic with a queue count.
    CREATE_TOPIC = 2;
    /// A topic's queue count (optionally creating it).
    TOPIC_ROUTE = 3;
    /// Put one message or a batch (two-way, or oneway on a unidirectional stream).
    SEND = 4;
    /// Read messages from a queue, with optional long polling.
    PULL = 5;
    /// Store a consumer group's offset for a queue.
    COMMIT_OFFSET = 6;
    /// Read a consumer group's offset for a queue (and the queue's range).
    QUERY_OFFSET = 7;
    /// Report that a group failed to consume a message (retry queue / dead-letter queue).
    CONSUME_FAILED = 8;
    /// A consumer-group member announces itself; the answer lists the live members.
    HEARTBEAT = 9;
    /// A member leaves its group.
    UNREGISTER = 10;
    /// List the live members of a group without joining it.
    GROUP_MEMBERS = 11;
    /// Broker and engine counters.
    STATS = 12;
}

impl std::fmt::Debug for Opcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

/// Why a frame was refused. Each maps to one [`ErrorCode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than the header or than `header + body_len`.
    Truncated { needed: usize, available: usize },
    /// The magic is not "TRNW".
    BadMagic { found: u32 },
    /// The version is not [`FRAME_VERSION`].
    BadVersion { found: u8 },
    /// Unknown flag bits or a non-zero reserved field.
    BadFlags { flags: u8, reserved: u16 },
    /// `body_len` is above the limit in force.
    TooLarge { body_len: u32, limit: u32 },
    /// Bytes after the body.
    Trailing { extra: usize },
}

impl FrameError {
    /// The wire code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::Truncated { .. } => ErrorCode::TRUNCATED,
            FrameError::BadMagic { .. } => ErrorCode::BAD_MAGIC,
            FrameError::BadVersion { .. } => ErrorCode::BAD_VERSION,
            FrameError::BadFlags { .. } => ErrorCode::BAD_FLAGS,
            FrameError::TooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            FrameError::Trailing { .. } => ErrorCode::MALFORMED,
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated { needed, available } => {
                write!(f, "truncated frame: {needed} bytes needed, {available} available")
            }
            FrameError::BadMagic { found } => {
                write!(f, "bad frame magic {found:#010x} (expected {FRAME_MAGIC:#010x}, \"TRNW\")")
            }
            FrameError::BadVersion { found } => {
                write!(f, "unsupported frame version {found} (this broker speaks {FRAME_VERSION})")
            }
            FrameError::BadFlags { flags, reserved } => write!(
                f,
                "unknown flag bits in {flags:#04x} or non-zero reserved field {reserved:#06x}"
            ),
            FrameError::TooLarge { body_len, limit } => write!(
                f,
                "frame body of {body_len} bytes exceeds the limit of {limit} bytes (frame_body_bytes_max)"
            ),
            FrameError::Trailing { extra } => write!(f, "{extra} bytes after the frame body"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Check a header's fixed fields (magic, version, flags, reserved, body length limit).
pub fn check_header(header: &FrameHeader, body_bytes_max: u32) -> Result<(), FrameError> {
    let magic = header.magic.get();
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    if header.version != FRAME_VERSION {
        return Err(FrameError::BadVersion {
            found: header.version,
        });
    }
    let reserved = header.reserved.get();
    if header.flags & !FLAGS_KNOWN != 0 || reserved != 0 {
        return Err(FrameError::BadFlags {
            flags: header.flags,
            reserved,
        });
    }
    let body_len = header.body_len.get();
    let limit = body_bytes_max.min(FRAME_BODY_BYTES_CEILING);
    if body_len > limit {
        return Err(FrameError::TooLarge { body_len, limit });
    }
    Ok(())
}

/// Decode the header at the start of `bytes` (checks as [`check_header`]).
pub fn decode_header(bytes: &[u8], body_bytes_max: u32) -> Result<FrameHeader, FrameError> {
    let Ok((header, _)) = FrameHeader::read_from_prefix(bytes) else {
        return Err(FrameError::Truncated {
            needed: HEADER_LEN,
            available: bytes.len(),
        });
    };
    check_header(&header, body_bytes_max)?;
    Ok(header)
}

/// One decoded frame borrowing its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub header: FrameHeader,
    pub body: &'a [u8],
}

/// Decode exactly one complete frame (header and body, nothing after it) with the ceiling
/// [`FRAME_BODY_BYTES_CEILING`] as the size limit. Pure, allocation-free and panic-free on any
/// input: the entry point of the frame fuzz target.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    decode_frame_with_limit(bytes, FRAME_BODY_BYTES_CEILING)
}

/// [`decode_frame`] with an explicit body limit.
pub fn decode_frame_with_limit(bytes: &[u8], body_bytes_max: u32) -> Result<Frame<'_>, FrameError> {
    let header = decode_header(bytes, body_bytes_max)?;
    let body_len = header.body_len.get() as usize;
    let rest = &bytes[HEADER_LEN..];
    if rest.len() < body_len {
        return Err(FrameError::Truncated {
            needed: HEADER_LEN + body_len,
            available: bytes.len(),
        });
    }
    if rest.len() > body_len {
        return Err(FrameError::Trailing {
            extra: rest.len() - body_len,
        });
    }
    Ok(Frame { header, body: rest })
}

/// Encode a whole frame (header then body) into a new buffer.
pub fn encode_frame(
    opcode: Opcode,
    flags: u8,
    status: ErrorCode,
    request_id: u64,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    let body_len = u32::try_from(body.len()).expect("frame bodies are below 4 GiB");
    let header = FrameHeader::new(opcode, flags, status, body_len, request_id);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_fixed() {
        let h = FrameHeader::new(
            Opcode::PULL,
            FLAG_RESPONSE,
            ErrorCode::INVALID,
            7,
            0x0102_0304_0506_0708,
        );
        let b = h.as_bytes();
        assert_eq!(&b[0..4], b"TRNW");
        assert_eq!(b[4], 1);
        assert_eq!(b[5], FLAG_RESPONSE);
        assert_eq!(&b[6..8], &5u16.to_le_bytes());
        assert_eq!(&b[8..10], &11u16.to_le_bytes());
        assert_eq!(&b[10..12], &[0, 0]);
        assert_eq!(&b[12..16], &7u32.to_le_bytes());
        assert_eq!(&b[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
    }

    #[test]
    fn round_trip() {
        let bytes = encode_frame(Opcode::SEND, 0, ErrorCode::OK, 42, b"hello");
        let f = decode_frame(&bytes).unwrap();
        assert_eq!(f.header.opcode(), Opcode::SEND);
        assert_eq!(f.header.request_id.get(), 42);
        assert_eq!(f.body, b"hello");
    }

    #[test]
    fn every_truncation_and_flip_is_a_typed_error() {
        let bytes = encode_frame(Opcode::SEND, 0, ErrorCode::OK, 42, b"hello world");
        for len in 0..bytes.len() {
            assert!(matches!(
                decode_frame(&bytes[..len]),
                Err(FrameError::Truncated { .. })
            ));
        }
        for i in 0..HEADER_LEN {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                // Must not panic; a flip in magic, version, an unknown flag bit, reserved or
                // length is refused (opcode, status and request id are checked by their users).
                let r = decode_frame(&b);
                let checked = i < 5 || (i == 5 && bit >= 2) || (10..16).contains(&i);
                if checked {
                    assert!(r.is_err(), "flip at byte {i} bit {bit} accepted");
                }
            }
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode_frame(&long), Err(FrameError::Trailing { extra: 1 }));
    }

    #[test]
    fn limits_and_magic() {
        let mut bytes = encode_frame(Opcode::SEND, 0, ErrorCode::OK, 1, &[0; 10]);
        assert!(matches!(
            decode_frame_with_limit(&bytes, 9),
            Err(FrameError::TooLarge {
                body_len: 10,
                limit: 9
            })
        ));
        bytes[0] = b'X';
        assert_eq!(
            decode_frame(&bytes).unwrap_err().code(),
            ErrorCode::BAD_MAGIC
        );
        let mut h = FrameHeader::new(Opcode::SEND, 0, ErrorCode::OK, u32::MAX, 1);
        assert_eq!(
            decode_frame(h.as_bytes()).unwrap_err().code(),
            ErrorCode::FRAME_TOO_LARGE
        );
        h.body_len = U32::new(0);
        h.flags = 0x80;
        assert_eq!(
            decode_frame(h.as_bytes()).unwrap_err().code(),
            ErrorCode::BAD_FLAGS
        );
    }
}

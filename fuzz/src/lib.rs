//! # tern-fuzz
//!
//! The checks behind tern's cargo-fuzz targets, one module per target. Each module has a
//! `run(data: &[u8])` that must never panic on any input except when it finds a bug: the
//! `fuzz_targets/*.rs` binaries hand it libFuzzer's inputs, and `tests/replay.rs` hands it every
//! committed seed (`seeds/<target>/`) and every past finding (`regressions/<target>/`), so a
//! plain `cargo test` keeps old findings fixed without libFuzzer.
//!
//! The decoders check a checksum before anything else, and a fuzzer cannot forge CRC32C by
//! mutation. So the targets that feed checksummed formats read a mode byte first; with its low bit
//! set, [`fixup`] recomputes the checksums of everything that looks like a record (or a checkpoint
//! slot) before the bytes reach the code under test, so the fuzzer can explore what lies behind
//! the checksum too.
//!
//! Two targets feed the adapters rather than the engine: `quic_frame_decode` (the QUIC
//! broker's frame and body decoders) and `http_request` (requests through the HTTP adapter's
//! router, in process).
//!
//! What this crate never does: change the engine. A finding becomes a named file under
//! `regressions/<target>/` and a report to the engine's owner.

#![forbid(unsafe_code)]

pub mod cq_entry_decode;
pub mod engine_recover;
pub mod fixup;
pub mod http_request;
pub mod quic_frame_decode;
pub mod record_decode;
pub mod tag_expression;

/// A target's check: panics on a finding, returns otherwise.
pub type Check = fn(&[u8]);

/// Every target, by name, with its check (the replay test uses this list).
pub const TARGETS: &[(&str, Check)] = &[
    ("record_decode", record_decode::run),
    ("cq_entry_decode", cq_entry_decode::run),
    ("tag_expression", tag_expression::run),
    ("engine_recover", engine_recover::run),
    ("quic_frame_decode", quic_frame_decode::run),
    ("http_request", http_request::run),
];

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::quic_frame_decode::run(data));

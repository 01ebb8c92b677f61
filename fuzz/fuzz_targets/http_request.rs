#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_fuzz::http_request::run(data));

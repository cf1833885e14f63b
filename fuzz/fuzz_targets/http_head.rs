#![no_main]
//! `portcullis::fuzzing::http_head`: see its doc comment.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::http_head(data));

#![no_main]
//! `portcullis::fuzzing::deflate`: see its doc comment.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::deflate(data));

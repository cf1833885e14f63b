#![no_main]
//! `portcullis::fuzzing::config`: see its doc comment.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::config(data));

#![no_main]
//! `portcullis::fuzzing::relay_session`: see its doc comment.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::relay_session(data));

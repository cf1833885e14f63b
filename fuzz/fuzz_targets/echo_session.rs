#![no_main]
//! `portcullis::fuzzing::echo_session`: see its doc comment.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| portcullis::fuzzing::echo_session(data));

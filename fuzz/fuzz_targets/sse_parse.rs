//! Arbitrary bytes as an upstream event stream, read whole, byte by byte and in
//! random splits: never a panic, never over the line bound, always the same answer as
//! one read, and (within the bound) the WHATWG algorithm's answer.
//! The properties are in tests/properties/sse.rs, shared with `cargo test`.
#![no_main]

#[path = "../../tests/properties/mod.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|input: &[u8]| properties::sse::check_fuzz_input(input));

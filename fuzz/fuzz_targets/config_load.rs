//! Arbitrary text as gateway.yaml: never a panic; a refusal always names the file and
//! carries a one-line message; an accepted file keeps every `Config` invariant.
//! The properties are in tests/properties/config.rs, shared with `cargo test`.
#![no_main]

#[path = "../../tests/properties/mod.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|input: &[u8]| properties::config::check_fuzz_input(input));

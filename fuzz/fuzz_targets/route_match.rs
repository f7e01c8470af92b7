//! Arbitrary request paths against a fixed route table: never a panic; matched values
//! are one clean segment (no `/`, no control character, no dot segment) and resolve to
//! the route's own upstream host with exactly the template's segments.
//! The properties are in tests/properties/routes.rs, shared with `cargo test`.
#![no_main]

#[path = "../../tests/properties/mod.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|input: &[u8]| properties::routes::check_fuzz_input(input));

//! Policy documents (TOML/JSON), admin sets and approval statements from arbitrary
//! bytes: parsing and validation must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `fuzz_parse` returns true when a decoded statement is not canonical.
    assert!(
        !custos_policy::fuzz_parse(data),
        "non-canonical statement encoding accepted"
    );
});

//! Approval statements: decode arbitrary bytes; anything accepted must re-encode to
//! the same bytes (one statement, one encoding).
#![no_main]

use custos_policy::ApprovalStatement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = ApprovalStatement::decode(data) {
        assert_eq!(s.encode().ok().as_deref(), Some(data));
    }
});

//! Helpers for this crate's unit tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_policy::{SecretKey, Zeroizing};

/// An example key of `examples/keys`.
pub(crate) fn key(name: &str) -> SecretKey {
    let pem = match name {
        "alice" => include_str!("../../examples/keys/alice.pem"),
        "bob" => include_str!("../../examples/keys/bob.pem"),
        "carol" => include_str!("../../examples/keys/carol.pem"),
        "dave" => include_str!("../../examples/keys/dave.pem"),
        "admin1" => include_str!("../../examples/keys/admin1.pem"),
        "admin2" => include_str!("../../examples/keys/admin2.pem"),
        "mallory" => include_str!("../../examples/keys/mallory.pem"),
        other => panic!("no key {other}"),
    };
    SecretKey::from_pem(&Zeroizing::new(pem.to_owned())).unwrap()
}

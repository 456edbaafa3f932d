//! The `testing` suite against the in-memory store; backends run the same.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use custos_audit::MemoryStore;
use custos_audit::testing::{edited_entry_is_named, store_conformance, truncation_is_detected};

#[test]
fn memory_store_conforms() {
    store_conformance(MemoryStore::new()).unwrap();
}

#[test]
fn memory_store_edit_is_named() {
    edited_entry_is_named(MemoryStore::new(), |s, i, b| {
        s.tamper_entry(i, b);
        Ok(())
    })
    .unwrap();
}

#[test]
fn memory_store_truncation_is_detected() {
    truncation_is_detected(MemoryStore::new(), |s, n| {
        s.truncate(n);
        Ok(())
    })
    .unwrap();
}

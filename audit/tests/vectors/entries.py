#!/usr/bin/env python3
"""Independent encodings of every log entry kind (format 1, kind version 1).

Written from the byte format documented at the top of audit/src/entry.rs
with struct only, sharing no code with the Rust encoder. One entry per kind,
and more where a field has several forms (every withdrawal status, decision
outcome, verdict, membership and address-book action, both lock flags,
absent and present options, empty and longer lists, non-ASCII text).
Run `python3 entries.py > entries.json`; the Rust test `entry_vectors`
encodes the same values and must produce these bytes, and decodes them back.
"""
import json
import struct

T0 = 1_764_072_000_000


def u8(v):
    return struct.pack(">B", v)


def u16(v):
    return struct.pack(">H", v)


def u32(v):
    return struct.pack(">I", v)


def u64(v):
    return struct.pack(">Q", v)


def byts(b):
    assert len(b) <= 65536
    return u32(len(b)) + b


def s(t):
    return byts(t.encode("utf-8"))


def lst(items, f):
    assert len(items) <= 4096
    return u32(len(items)) + b"".join(f(i) for i in items)


def opt(v, f):
    return b"\x00" if v is None else b"\x01" + f(v)


def h(n):
    """A recognisable 32-byte hash: n repeated."""
    return bytes([n]) * 32


def sigs(pairs):
    return lst(pairs, lambda p: s(p[0]) + byts(p[1]))


STATUSES = [
    "requested", "risk_scored", "policy_evaluated", "blocked",
    "awaiting_approvals", "approved", "time_locked", "signing", "signed",
    "broadcast", "confirmed", "rejected", "cancelled", "expired", "failed",
]


def entries():
    out = []

    def add(name, kind, body):
        index = len(out)
        raw = u8(1) + u16(kind) + u8(1) + u64(index) + u64(T0 + index) + body
        out.append({"name": name, "hex": raw.hex()})

    add("key_created", 1,
        s("key-1") + s("ecdsa-secp256k1") + lst(["signer-1", "signer-2", "signer-3"], s)
        + u16(2) + byts(b"\x02" * 33))
    add("key_created_empty", 1, s("") + s("") + lst([], s) + u16(0) + byts(b""))
    add("policy_activated", 2,
        h(1) + u64(7) + sigs([("admin-1", b"\x09" * 64), ("admin-2", b"\x0a" * 64)]))
    for action, tag in [("added", 1), ("removed", 2)]:
        add("address_book_" + action, 3,
            s("anvil") + s("0x00000000000000000000000000000000000000aa") + s("Trésorerie €")
            + u8(tag) + u64(T0 + 86_400_000) + sigs([("admin-1", b"\x09" * 64)]))
    add("withdrawal_requested", 4,
        s("wd-1") + s("key-1") + s("anvil") + s("ETH") + s("0xdest") + s("1500000000000000000")
        + opt(h(2), lambda x: x) + s("backend"))
    add("withdrawal_requested_zero_no_digest", 4,
        s("wd-2") + s("key-1") + s("anvil") + s("ETH") + s("0xdest") + s("0")
        + opt(None, lambda x: x) + s("backend"))
    add("risk_scored", 5, s("wd-1") + s("builtin") + u32(4_000_000_000) + h(3))
    add("policy_decision_allow", 6, s("wd-1") + h(1) + s("small") + u8(1) + h(4))
    add("policy_decision_approvals", 6, s("wd-1") + h(1) + s("large") + u8(2) + u16(3) + h(4))
    add("policy_decision_deny", 6, s("wd-1") + h(1) + s("blocked") + u8(3) + h(4))
    for verdict, tag in [("approve", 1), ("reject", 2)]:
        add("approval_" + verdict, 7,
            s("wd-1") + s("alice") + u8(tag) + byts(b"custos.approval\x01") + byts(b"\x07" * 64))
    add("cancelled", 8, s("wd-1") + s("ops") + s(""))
    for tag, status in enumerate(STATUSES, start=1):
        add("status_" + status, 9, s("wd-1") + u8(tag) + s("because " + status))
    add("signing_session", 10,
        s("wd-1") + s("key-1") + byts(b"\x05" * 32) + lst(["signer-1", "signer-2"], s)
        + opt("presig-9", s) + h(6))
    add("signing_session_no_presig", 10,
        s("wd-1") + s("key-1") + byts(b"\x05" * 32) + lst(["signer-1", "signer-3"], s)
        + opt(None, s) + h(6))
    add("signature_produced", 11,
        s("wd-1") + s("key-1") + byts(b"\x05" * 32) + h(6) + byts(b"\x08" * 65))
    add("transaction_broadcast", 12, s("wd-1") + s("anvil") + s("0xfeed"))
    add("confirmed", 13, s("wd-1") + s("anvil") + s("0xfeed") + u64(2**63 + 5) + u32(12))
    for action, tag in [("joined", 1), ("left", 2), ("key_rotated", 3)]:
        add("membership_" + action, 14,
            s("signer-4") + u8(tag) + byts(b"\x01" * 32) + sigs([("admin-1", b"\x09" * 64)]))
    add("key_locked", 15, s("key-1") + u8(1) + s("coordinator") + s("3 unexplained failures"))
    add("key_unlocked", 15, s("key-1") + u8(0) + s("admin-1") + s("investigated"))
    for verdict, tag in [("approve", 1), ("reject", 2)]:
        add("fee_bump_approval_" + verdict, 16,
            s("wd-1") + s("bob") + u8(tag) + byts(b"custos.fee-bump-statement\x01")
            + byts(b"\x06" * 64))
    add("transaction_prepared", 17, s("wd-1") + s("anvil") + byts(bytes([0x02, 0xF8, 0x6F])))
    add("signing_refused", 18,
        s("wd-1") + s("signer-2") + s("sign_withdrawal") + s("time lock \u2014 signable in 3 s")
        + u64(T0 + 5) + byts(b"\x0a" * 64))
    add("share_exported", 19,
        s("key-1") + s("signer-3") + u16(2) + h(11) + h(12) + s("admin"))
    add("key_shares_refreshed", 20,
        s("key-2") + u8(1) + u64(1) + lst(["signer-1", "signer-2", "signer-3"], s) + s("")
        + byts(b"\x0d" * 32) + h(13) + s("admin"))
    add("key_share_repaired", 20,
        s("key-2") + u8(2) + u64(1) + lst(["signer-1", "signer-3", "signer-2"], s)
        + s("signer-2") + byts(b"\x0d" * 32) + h(14) + s("admin"))
    add("key_rotation_started", 21,
        s("key-1") + s("key-3") + s("0x00000000000000000000000000000000000000bb") + s("admin"))
    add("key_retired", 22,
        s("key-1") + byts(b"\x02" * 33) + s("key-3") + s("admin") + s("rotated to key-3"))
    add("key_shares_destroyed", 23,
        s("key-1") + lst(["signer-1", "signer-2", "signer-3"], s) + u64(41))
    add("address_derived", 24,
        s("key-1") + s("ethereum") + s("m/0/7") + s("0x00000000000000000000000000000000000000cc")
        + byts(b"\x03" * 33) + byts(b"\x0e" * 32) + s("backend"))
    add("deposit_credited", 25,
        s("ethereum") + s("key-1") + s("0x00000000000000000000000000000000000000cc") + s("ETH")
        + s("10000000000000000000") + s("ethereum:0xfeed") + u64(812) + s("0xb10c"))
    add("deposit_reversed", 26,
        s("litecoin") + s("key-2") + s("LTC") + s("250000") + s("litecoin:ab:1") + u64(2**40)
        + s("00ff") + s("block 1099511627776 is now 00ee"))
    return out


if __name__ == "__main__":
    print(json.dumps({"t0": T0, "entries": entries()}, indent=1))

#!/usr/bin/env python3
"""Independent cross-check of the golden bundle (bundle_good.json) with
hashlib only: recomputes every leaf hash and every checkpoint root from the
entries, and every verifier key id from its name, type and public key.
Signatures are not checked here (no Ed25519 in the standard library); the Rust
tests and `custos audit verify` do that.

Run: python3 check_bundle.py
"""
import base64
import hashlib
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def leaf(d):
    return hashlib.sha256(b"\x00" + d).digest()


def node(l, r):
    return hashlib.sha256(b"\x01" + l + r).digest()


def mth(hs):
    if not hs:
        return hashlib.sha256(b"").digest()
    if len(hs) == 1:
        return hs[0]
    k = 1
    while k * 2 < len(hs):
        k *= 2
    return node(mth(hs[:k]), mth(hs[k:]))


def main():
    bundle = json.load(open(os.path.join(HERE, "bundle_good.json")))
    keys = json.load(open(os.path.join(HERE, "bundle_keys.json")))
    assert bundle["start"] == 0 and bundle["prefix"] == []
    leaves = [leaf(bytes.fromhex(e)) for e in bundle["entries"]]
    assert [h.hex() for h in leaves] == bundle["leaf_hashes"]
    for i, e in enumerate(bundle["entries"]):
        raw = bytes.fromhex(e)
        assert raw[0] == 1 and raw[3] == 1, "format and kind version"
        assert int.from_bytes(raw[4:12], "big") == i, "index field"
    for note in bundle["checkpoints"]:
        text, sigs = note.rsplit("\n\n", 1)
        origin, size, root = text.split("\n")[:3]
        assert origin == bundle["origin"]
        assert base64.b64decode(root) == mth(leaves[: int(size)]), size
        for line in sigs.strip("\n").split("\n"):
            assert line.startswith("\u2014 ")
    for vkey in [keys["log_key"]] + keys["witness_keys"]:
        name, key_id, material = vkey.split("+", 2)
        raw = base64.b64decode(material)
        assert raw[0] in (0x01, 0x04)
        assert hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4].hex() == key_id, vkey
    print("bundle_good.json: %d entries, %d checkpoints, keys OK" % (len(leaves), len(bundle["checkpoints"])))


if __name__ == "__main__":
    main()

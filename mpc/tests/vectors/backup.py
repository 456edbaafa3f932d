#!/usr/bin/env python3
"""An independent share backup (format custos-share-backup-v1).

Written from the format documented at the top of mpc/src/recovery.rs and
from RFC 9180 (HPKE base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
ChaCha20-Poly1305), with the `cryptography` package's X25519, HMAC-SHA256
and ChaCha20-Poly1305 only: no HPKE library, no code shared with the Rust
side. Deterministic (fixed recovery key and ephemeral key), so the output
is stable: `python3 backup.py > backup_v1.json`. The Rust test
`recovery::an_independently_sealed_backup_opens` must open it and get the
plaintext back, and compute the same fingerprint and ciphertext hash.
"""
import hashlib
import hmac
import json
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization

KEM_ID, KDF_ID, AEAD_ID = 0x0020, 0x0001, 0x0003
INFO = b"custos share backup v1"


def extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def expand(prk, info, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:n]


def labeled_extract(suite, salt, label, ikm):
    return extract(salt, b"HPKE-v1" + suite + label + ikm)


def labeled_expand(suite, prk, label, info, n):
    return expand(prk, struct.pack(">H", n) + b"HPKE-v1" + suite + label + info, n)


def raw(pub):
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def seal(pk_r_bytes, sk_e, info, aad, pt):
    kem_suite = b"KEM" + struct.pack(">H", KEM_ID)
    pk_r = X25519PublicKey.from_public_bytes(pk_r_bytes)
    enc = raw(sk_e.public_key())
    dh = sk_e.exchange(pk_r)
    eae_prk = labeled_extract(kem_suite, b"", b"eae_prk", dh)
    shared = labeled_expand(kem_suite, eae_prk, b"shared_secret", enc + pk_r_bytes, 32)
    suite = b"HPKE" + struct.pack(">HHH", KEM_ID, KDF_ID, AEAD_ID)
    psk_id_hash = labeled_extract(suite, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(suite, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = labeled_extract(suite, shared, b"secret", b"")
    key = labeled_expand(suite, secret, b"key", context, 32)
    nonce = labeled_expand(suite, secret, b"base_nonce", context, 12)
    return enc, ChaCha20Poly1305(key).encrypt(nonce, pt, aad)


def field(b):
    return struct.pack(">I", len(b)) + b


def aad(h):
    out = b""
    for name in ["format", "key_id", "group_id", "scheme", "node_id"]:
        out += field(h[name].encode())
    out += field(struct.pack(">H", h["party_index"]))
    out += field(struct.pack(">H", h["threshold"]))
    out += field(struct.pack(">I", len(h["participants"])))
    for p in h["participants"]:
        out += field(p.encode())
    out += field(h["public_key"].encode())
    out += field(h["recipient"].encode())
    out += field(struct.pack(">Q", h["created_at_ms"]))
    return out


def main():
    sk_r = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    pk_r = raw(sk_r.public_key())
    sk_e = X25519PrivateKey.from_private_bytes(bytes([0x42]) * 32)
    recipient = "custos-recipient1:" + pk_r.hex()
    header = {
        "format": "custos-share-backup-v1",
        "key_id": "vault-1",
        "group_id": "group-7",
        "scheme": "ecdsa-secp256k1",
        "node_id": "signer-2",
        "party_index": 1,
        "threshold": 2,
        "participants": ["signer-1", "signer-2", "signer-3"],
        "public_key": "02" + "11" * 32,
        "recipient": recipient,
        "created_at_ms": 1_764_072_000_000,
    }
    plaintext = "{\"a share\":\"Trésor €\"}".encode()
    enc, ct = seal(pk_r, sk_e, INFO, aad(header), plaintext)
    backup = dict(header, enc=enc.hex(), ciphertext=ct.hex())
    print(json.dumps({
        "identity": "custos-recovery-identity1:" + bytes(range(1, 33)).hex(),
        "recipient": recipient,
        "fingerprint": hashlib.sha256(pk_r).hexdigest(),
        "ciphertext_hash": hashlib.sha256(enc.hex().encode() + b"." + ct.hex().encode()).hexdigest(),
        "plaintext_hex": plaintext.hex(),
        "backup": backup,
    }, indent=1))


if __name__ == "__main__":
    main()

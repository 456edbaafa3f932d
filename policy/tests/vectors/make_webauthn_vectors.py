#!/usr/bin/env python3
"""Golden vectors for custos-policy's passkey (WebAuthn) assertion check.

Written independently of the Rust code, from the WebAuthn Level 2 spec:
authenticatorData = rpIdHash(32) || flags(1) || signCount(4, big-endian);
the authenticator signs authenticatorData || SHA-256(clientDataJSON), ES256 as a
DER ECDSA signature (P-256, SHA-256), EdDSA as a raw 64-byte Ed25519 signature.
The COSE_Key (RFC 9053) is encoded with cbor2.

Run (needs `pip install cryptography cbor2`):
    python3 policy/tests/vectors/make_webauthn_vectors.py > policy/tests/vectors/webauthn.json

Fixed keys; ECDSA nonces are random (`cryptography`),
so the ES256 signatures differ per run; the Rust test only verifies them.
"""

import base64
import hashlib
import json
import struct

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

RP_ID = "custos.test"
ORIGIN = "https://custos.test"
N_P256 = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def auth_data(rp_id: str, flags: int, counter: int) -> bytes:
    return hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", counter)


def client_data(kind: str, challenge: bytes, origin: str, cross_origin=False) -> bytes:
    # Key order as Chromium writes it.
    return json.dumps(
        {"type": kind, "challenge": b64u(challenge), "origin": origin, "crossOrigin": cross_origin},
        separators=(",", ":"),
    ).encode()


P256_KEY = ec.derive_private_key(0x1D2C3B4A59687766554433221100FFEEDDCCBBAA99887766554433221100FF11, ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))


def cose_p256() -> bytes:
    nums = P256_KEY.public_key().public_numbers()
    return cbor2.dumps(
        {1: 2, 3: -7, -1: 1, -2: nums.x.to_bytes(32, "big"), -3: nums.y.to_bytes(32, "big")}
    )


def cose_ed25519() -> bytes:
    raw = ED_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return cbor2.dumps({1: 1, 3: -8, -1: 6, -2: raw})


def sign(alg: str, ad: bytes, cd: bytes, high_s=False) -> bytes:
    msg = ad + hashlib.sha256(cd).digest()
    if alg == "es256":
        der = P256_KEY.sign(msg, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        low = min(s, N_P256 - s)
        s = N_P256 - low if high_s else low
        return encode_dss_signature(r, s)
    return ED_KEY.sign(msg)


CHALLENGE = hashlib.sha256(b"custos.approval.v1\x00\x01 example statement").digest()
OTHER_CHALLENGE = hashlib.sha256(b"custos.approval.v1\x00\x01 another statement").digest()
CRED_ES = bytes.fromhex("a1" * 16)
CRED_ED = bytes.fromhex("b2" * 20)


def case(name, alg, *, expect, last_counter=0, rp_id=RP_ID, flags=0x05, counter=7,
         kind="webauthn.get", challenge=CHALLENGE, origin=ORIGIN, cross_origin=False,
         tamper_sig=False, high_s=False):
    ad = auth_data(rp_id, flags, counter)
    cd = client_data(kind, challenge, origin, cross_origin)
    sig = sign(alg, ad, cd, high_s)
    if tamper_sig:
        sig = sig[:-1] + bytes([sig[-1] ^ 0x01])
    return {
        "name": name,
        "alg": alg,
        "public_key": (cose_p256() if alg == "es256" else cose_ed25519()).hex(),
        "credential_id": b64u(CRED_ES if alg == "es256" else CRED_ED),
        "last_counter": last_counter,
        "assertion": {
            "credential_id": b64u(CRED_ES if alg == "es256" else CRED_ED),
            "authenticator_data": b64u(ad),
            "client_data_json": b64u(cd),
            "signature": b64u(sig),
        },
        "expect": expect,
    }


def main():
    cases = []
    for alg in ("es256", "eddsa"):
        cases += [
            case(f"{alg}_valid", alg, expect={"ok": 7}),
            case(f"{alg}_valid_counter_after_last", alg, last_counter=6, expect={"ok": 7}),
            case(f"{alg}_zero_counters", alg, counter=0, expect={"ok": 0}),
            case(f"{alg}_wrong_challenge", alg, challenge=OTHER_CHALLENGE, expect={"err": "wrong_challenge"}),
            case(f"{alg}_wrong_origin", alg, origin="https://evil.test", expect={"err": "origin_not_allowed"}),
            case(f"{alg}_cross_origin", alg, cross_origin=True, expect={"err": "cross_origin"}),
            case(f"{alg}_wrong_rp_id_hash", alg, rp_id="evil.test", expect={"err": "wrong_rp_id"}),
            case(f"{alg}_uv_cleared", alg, flags=0x01, expect={"err": "user_not_verified"}),
            case(f"{alg}_up_cleared", alg, flags=0x04, expect={"err": "user_not_present"}),
            case(f"{alg}_counter_replayed", alg, last_counter=7, expect={"err": "counter_not_increased"}),
            case(f"{alg}_counter_backwards", alg, last_counter=9, expect={"err": "counter_not_increased"}),
            case(f"{alg}_bad_signature", alg, tamper_sig=True, expect={"err": "bad_signature"}),
            case(f"{alg}_wrong_type", alg, kind="webauthn.create", expect={"err": "wrong_type"}),
        ]
    cases.append(case("es256_high_s_accepted", "es256", high_s=True, expect={"ok": 7}))
    cases.append(case("es256_low_s_accepted", "es256", high_s=False, expect={"ok": 7}))
    out = {
        "rp_id": RP_ID,
        "origins": [ORIGIN],
        "challenge": CHALLENGE.hex(),
        "p256_sec1": P256_KEY.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint).hex(),
        "cases": cases,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Golden vectors for HD-derived wallet addresses (custos_mpc::hd + chain formats).

Written independently of the Rust code: BIP32 public (non-hardened) derivation
by `bip_utils` (Bip32Secp256k1 built from a public key and a chain code alone,
as the cluster holds them), Ethereum addresses (EIP-55) and P2WPKH addresses
(bech32, BIP173) by `bip_utils`' own encoders. The legacy chain code of keys
made before HD support is recomputed here with hashlib from its definition:
SHA-256("custos.hd-chain-code.v1" 0x00 || compressed public key).

1,000 derived keys from two masters: the BIP32 test vector 1 key m/0H (public
key and chain code as published) and a fixed key with the legacy chain code.

Run (needs `pip install bip_utils==2.12.3`; scripts/install-deps.sh puts it in
~/.cache/custos/hd-venv):
    python3 chains/tests/vectors/make_hd_vectors.py > chains/tests/vectors/hd_derivation.json
    python3 chains/tests/vectors/make_hd_vectors.py --check chains/tests/vectors/hd_derivation.json
The second form (what scripts/test-all.sh runs) derives everything again and
fails unless the checked-in file says exactly the same.
"""

import hashlib
import json
import sys

from bip_utils import (
    Bip32KeyData,
    Bip32Secp256k1,
    EthAddrEncoder,
    P2WPKHAddrEncoder,
)

LEGACY_DOMAIN = b"custos.hd-chain-code.v1\x00"

# BIP32 test vector 1, chain m/0H (published xpub68Gmy5Edvgib...).
TV1_M0H_PUB = "035a784662a4a20a65bf6aab9ae98a6c068a81c52e4b032c0fb5400c706cfccc56"
TV1_M0H_CHAIN = "47fdacbd0f1097043b78c63c20c34ef4ed9a111d980047ad16282c7ae6236141"

# A fixed key for the legacy chain code: the public key of the secret
# SHA-256("custos hd vectors"), computed by bip_utils (coincurve).
def legacy_master_pub() -> bytes:
    from bip_utils import Secp256k1PrivateKey

    secret = hashlib.sha256(b"custos hd vectors").digest()
    return Secp256k1PrivateKey.FromBytes(secret).PublicKey().RawCompressed().ToBytes()


def legacy_chain_code(pub: bytes) -> bytes:
    return hashlib.sha256(LEGACY_DOMAIN + pub).digest()


def paths_a():
    for i in range(300):
        yield [i]
    for i in range(300):
        yield [0, i]


def paths_b():
    for i in range(300):
        yield [0, i]
    for i in range(40):
        yield [1, 2, i]
    for i in range(30):
        yield [2147483647 - i]
    for i in range(30):
        yield [2147483647, i, 7]


def path_text(indices):
    return "/".join(["m"] + [str(i) for i in indices])


def derive(master: Bip32Secp256k1, indices):
    key = master
    for i in indices:
        assert i < 2**31, "public derivation only"
        key = key.ChildKey(i)
    return key


def entries(pub: bytes, chain: bytes, paths):
    master = Bip32Secp256k1.FromPublicKey(pub, Bip32KeyData(chain_code=chain))
    out = []
    for indices in paths:
        child = derive(master, indices)
        child_pub = child.PublicKey().RawCompressed().ToBytes()
        out.append(
            {
                "path": path_text(indices),
                "public_key": child_pub.hex(),
                "chain_code": child.ChainCode().ToBytes().hex(),
                "ethereum": EthAddrEncoder.EncodeKey(child_pub),
                "litecoin-regtest": P2WPKHAddrEncoder.EncodeKey(child_pub, hrp="rltc", wit_ver=0),
                "bitcoin": P2WPKHAddrEncoder.EncodeKey(child_pub, hrp="bc", wit_ver=0),
            }
        )
    return out


def vectors():
    pub_a = bytes.fromhex(TV1_M0H_PUB)
    chain_a = bytes.fromhex(TV1_M0H_CHAIN)
    pub_b = legacy_master_pub()
    chain_b = legacy_chain_code(pub_b)
    masters = [
        {
            "name": "bip32-tv1-m/0H",
            "public_key": pub_a.hex(),
            "chain_code": chain_a.hex(),
            "legacy_chain_code": False,
            "children": entries(pub_a, chain_a, paths_a()),
        },
        {
            "name": "legacy-chain-code",
            "public_key": pub_b.hex(),
            "chain_code": chain_b.hex(),
            "legacy_chain_code": True,
            "children": entries(pub_b, chain_b, paths_b()),
        },
    ]
    assert sum(len(m["children"]) for m in masters) == 1000
    return {"masters": masters}


def main():
    text = json.dumps(vectors(), indent=1) + "\n"
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        with open(sys.argv[2]) as f:
            if f.read() != text:
                print(f"{sys.argv[2]} differs from what bip_utils derives", file=sys.stderr)
                sys.exit(1)
        print(f"{sys.argv[2]}: 1000 derived keys and addresses agree with bip_utils")
    elif len(sys.argv) == 1:
        sys.stdout.write(text)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

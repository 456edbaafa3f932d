#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Parser robustness (docs/SECURITY.md case 23): random, truncated, mutated and
//! oversized input never panics, and anything accepted is canonical. The same
//! checks run coverage-guided in `fuzz/fuzz_targets/evm_unsigned_tx.rs`.

use custos_chains::evm::address::parse_address;
use custos_chains::evm::asset::{Asset, parse_units};
use custos_chains::evm::signature::{assemble_signed, decode_signed};
use custos_chains::evm::tx::{
    MAX_UNSIGNED_TX_LEN, TransferRequest, build_unsigned, decode_transfer, decode_unsigned,
    encode_unsigned, signing_digest,
};
use custos_chains::{Address, U256};
use k256::ecdsa::SigningKey;
use proptest::prelude::*;

/// Everything the fuzz target does with one input.
fn exercise(data: &[u8]) {
    if let Ok(u) = decode_unsigned(data) {
        assert_eq!(
            encode_unsigned(&u),
            data,
            "accepted non-canonical unsigned tx"
        );
        let _ = decode_transfer(&u);
        let _ = signing_digest(&u);
    }
    if let Ok((u, _sender, hash)) = decode_signed(data) {
        assert_eq!(hash.0, alloy_primitives::keccak256(data).0);
        let _ = decode_transfer(&u);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(a) = parse_address(text) {
            assert_eq!(a.to_checksum(None).to_lowercase(), text.to_lowercase());
        }
        for decimals in [0u8, 6, 18, 77, 78] {
            if let Ok(v) = parse_units(text, decimals) {
                let back = custos_chains::evm::asset::format_units(v, decimals).unwrap();
                assert_eq!(parse_units(&back, decimals).unwrap(), v);
            }
        }
    }
}

fn samples() -> Vec<Vec<u8>> {
    let base = TransferRequest {
        chain_id: 1,
        from: Address::repeat_byte(0x01),
        recipient: Address::repeat_byte(0x02),
        asset: Asset::eth(),
        amount: U256::from(10u64).pow(U256::from(18u64)),
        nonce: 3,
        gas_limit: 21_000,
        max_fee_per_gas: 40_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
    };
    let mut erc20 = base.clone();
    erc20.asset = Asset::erc20(Address::repeat_byte(0x03), "USDT", 6).unwrap();
    erc20.gas_limit = 65_000;
    let mut out = Vec::new();
    let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
    let wallet = Address::from_private_key(&key);
    for req in [base, erc20] {
        let unsigned = build_unsigned(&req).unwrap();
        let (sig, recid) = key
            .sign_prehash_recoverable(&signing_digest(&unsigned))
            .unwrap();
        let (r, s) = sig.split_bytes();
        let signed =
            assemble_signed(&unsigned, r.into(), s.into(), recid.to_byte(), wallet).unwrap();
        out.push(encode_unsigned(&unsigned));
        out.push(signed.raw);
    }
    out
}

#[test]
fn every_truncation_and_single_byte_change_is_handled() {
    for sample in samples() {
        exercise(&sample);
        for end in 0..sample.len() {
            exercise(&sample[..end]);
            exercise(&sample[end..]);
        }
        for pos in 0..sample.len() {
            // RLP boundary values (single byte / short string / long string /
            // short list / long list) and bit flips of the original byte.
            let original = sample[pos];
            let values = [
                0x00,
                0x01,
                0x7f,
                0x80,
                0x81,
                0x94,
                0xa0,
                0xb7,
                0xb8,
                0xb9,
                0xbf,
                0xc0,
                0xc1,
                0xf7,
                0xf8,
                0xf9,
                0xff,
                original ^ 0x01,
                original ^ 0x80,
                original.wrapping_add(1),
            ];
            for value in values {
                let mut changed = sample.clone();
                changed[pos] = value;
                exercise(&changed);
            }
            let mut removed = sample.clone();
            removed.remove(pos);
            exercise(&removed);
        }
        let mut extended = sample.clone();
        extended.extend_from_slice(&[0u8; 8]);
        assert!(decode_unsigned(&extended).is_err());
        assert!(decode_signed(&extended).is_err());
    }
}

#[test]
fn oversized_inputs_are_refused_cheaply() {
    let sample = &samples()[0];
    let mut big = sample.clone();
    big.resize(MAX_UNSIGNED_TX_LEN + 1, 0x80);
    assert!(decode_unsigned(&big).is_err());
    // A header claiming a huge list must not allocate or read past the input.
    let mut claims = vec![0x02, 0xfb, 0xff, 0xff, 0xff, 0xff];
    claims.extend_from_slice(&[0x01; 64]);
    exercise(&claims);
    assert!(decode_unsigned(&claims).is_err());
    exercise(&vec![0x02; 1 << 20]);
    exercise(&vec![0xff; 1 << 20]);
}

/// Random bytes shaped like a tx: a type byte then an RLP list header.
fn tx_like() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(0x02u8), any::<u8>()],
        prop_oneof![0xc0u8..=0xff, any::<u8>()],
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(ty, hdr, body)| {
            let mut v = vec![ty, hdr];
            v.extend(body);
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&data);
    }

    #[test]
    fn tx_shaped_bytes_never_panic(data in tx_like()) {
        exercise(&data);
    }

    #[test]
    fn spliced_samples_never_panic(a in 0usize..4, b in 0usize..4, cut in any::<prop::sample::Index>(), tail in prop::collection::vec(any::<u8>(), 0..40)) {
        let s = samples();
        let (x, y) = (&s[a], &s[b]);
        let i = cut.index(x.len().min(y.len()));
        let mut v = x[..i].to_vec();
        v.extend_from_slice(&tail);
        v.extend_from_slice(&y[i..]);
        exercise(&v);
    }

    #[test]
    fn random_text_never_panics(text in "\\PC{0,90}") {
        exercise(text.as_bytes());
    }

    #[test]
    fn amount_text_round_trips(v in any::<[u8; 32]>(), decimals in 0u8..=77) {
        let v = U256::from_be_bytes(v);
        let text = custos_chains::evm::asset::format_units(v, decimals).unwrap();
        prop_assert_eq!(parse_units(&text, decimals).unwrap(), v);
    }
}

/// Writes the samples as seeds for the cargo-fuzz target
/// (`cargo test -p custos-chains --test decode_robustness -- --ignored`).
#[test]
#[ignore = "regenerates fuzz/seeds/evm_unsigned_tx"]
fn write_fuzz_seeds() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/evm_unsigned_tx");
    std::fs::create_dir_all(&dir).unwrap();
    let names = [
        "native_unsigned",
        "native_signed",
        "erc20_unsigned",
        "erc20_signed",
    ];
    for (name, bytes) in names.iter().zip(samples()) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::write(
        dir.join("address"),
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    )
    .unwrap();
    std::fs::write(dir.join("amount"), "1234.567891").unwrap();
}

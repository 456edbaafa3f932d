#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Properties of the transfer codec: round trips, and docs/SECURITY.md case 11:
//! a transaction that differs from the approved transfer in any checked
//! field is refused with that field named.

use alloy_consensus::TxEip1559;
use alloy_primitives::TxKind;
use custos_chains::evm::asset::Asset;
use custos_chains::evm::tx::erc20::transfer_calldata;
use custos_chains::evm::tx::{
    ExpectedTransfer, Mismatch, TransferRequest, UnsignedTx, build_unsigned, check_against,
    decode_transfer, decode_unsigned, decode_unsigned_transfer, encode_unsigned, signing_digest,
};
use custos_chains::{Address, ChainError, U256};
use proptest::prelude::*;

fn address() -> impl Strategy<Value = Address> {
    any::<[u8; 20]>()
        .prop_filter("non-zero", |b| b.iter().any(|&x| x != 0))
        .prop_map(Address::from)
}

fn amount() -> impl Strategy<Value = U256> {
    prop_oneof![
        (1u64..).prop_map(U256::from),
        any::<[u8; 32]>()
            .prop_map(U256::from_be_bytes)
            .prop_filter("non-zero", |v| !v.is_zero()),
    ]
}

fn asset() -> impl Strategy<Value = Asset> {
    prop_oneof![
        Just(Asset::eth()),
        (address(), 0u8..=36).prop_map(|(c, d)| Asset::erc20(c, "TOK", d).unwrap()),
    ]
}

prop_compose! {
    fn request()(
        chain_id in 1u64..,
        from in address(),
        recipient in address(),
        asset in asset(),
        amount in amount(),
        nonce in any::<u64>(),
        gas_limit in 21_000u64..=30_000_000,
        max_fee_per_gas in 1u128..=u128::MAX / 2,
        tip_permille in 0u128..=1000,
    ) -> TransferRequest {
        TransferRequest {
            chain_id, from, recipient, asset, amount, nonce, gas_limit, max_fee_per_gas,
            max_priority_fee_per_gas: max_fee_per_gas / 1000 * tip_permille,
        }
    }
}

/// A valid request whose recipient is not the token contract.
fn valid_request() -> impl Strategy<Value = TransferRequest> {
    request().prop_filter("recipient is not the token", |r| {
        r.asset.token() != Some(r.recipient)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn build_encode_decode_round_trip(req in valid_request()) {
        let unsigned = build_unsigned(&req).unwrap();
        let bytes = encode_unsigned(&unsigned);
        let (parsed, t) = decode_unsigned_transfer(&bytes).unwrap();
        prop_assert_eq!(&parsed, &unsigned);
        prop_assert_eq!(encode_unsigned(&parsed), bytes);
        prop_assert_eq!(signing_digest(&parsed), signing_digest(&unsigned));

        prop_assert_eq!(t.chain_id, req.chain_id);
        prop_assert_eq!(t.token, req.asset.token());
        prop_assert_eq!(t.recipient, req.recipient);
        prop_assert_eq!(t.amount, req.amount);
        prop_assert_eq!(t.nonce, req.nonce);
        prop_assert_eq!(t.gas_limit, req.gas_limit);
        prop_assert_eq!(t.max_fee_per_gas, req.max_fee_per_gas);
        prop_assert_eq!(t.max_priority_fee_per_gas, req.max_priority_fee_per_gas);
        prop_assert_eq!(t.fee_cap_wei, req.fee_cap_wei());
        match req.asset.token() {
            None => {
                prop_assert_eq!(t.to, req.recipient);
                prop_assert_eq!(t.value, req.amount);
            }
            Some(token) => {
                prop_assert_eq!(t.to, token);
                prop_assert_eq!(t.value, U256::ZERO);
            }
        }
        prop_assert_eq!(check_against(&t, &ExpectedTransfer::from_request(&req)), Ok(()));
    }

    #[test]
    fn every_changed_field_is_named(req in valid_request(), other in address(), bump in 1u64..1000) {
        let expected = ExpectedTransfer::from_request(&req);
        let field_of = |tampered: &TransferRequest| -> &'static str {
            let unsigned = build_unsigned(tampered).unwrap();
            let (_, t) = decode_unsigned_transfer(&encode_unsigned(&unsigned)).unwrap();
            check_against(&t, &expected).unwrap_err().field()
        };

        // chain id
        let mut t = req.clone();
        t.chain_id = req.chain_id.wrapping_add(bump).max(1);
        prop_assume!(t.chain_id != req.chain_id);
        prop_assert_eq!(field_of(&t), "chain_id");

        // nonce
        let mut t = req.clone();
        t.nonce = req.nonce.wrapping_add(bump);
        prop_assert_eq!(field_of(&t), "nonce");

        // fee cap: more gas or a higher max fee; lower is fine
        let mut t = req.clone();
        t.gas_limit += bump;
        prop_assert_eq!(field_of(&t), "fee_cap");
        let mut t = req.clone();
        t.max_fee_per_gas += u128::from(bump);
        prop_assert_eq!(field_of(&t), "fee_cap");
        let mut t = req.clone();
        t.max_fee_per_gas = (req.max_fee_per_gas / 2).max(1);
        t.max_priority_fee_per_gas = t.max_priority_fee_per_gas.min(t.max_fee_per_gas);
        let unsigned = build_unsigned(&t).unwrap();
        prop_assert!(check_against(&decode_transfer(&unsigned).unwrap(), &expected).is_ok());

        let changed_amount = req.amount.wrapping_add(U256::from(bump)).max(U256::ONE);
        prop_assume!(changed_amount != req.amount);
        match req.asset.token() {
            None => {
                // to (= recipient of the ETH) and value (= amount)
                let mut t = req.clone();
                t.recipient = other;
                prop_assume!(other != req.recipient);
                prop_assert_eq!(field_of(&t), "to");
                let mut t = req.clone();
                t.amount = changed_amount;
                prop_assert_eq!(field_of(&t), "value");
            }
            Some(token) => {
                // to (= token contract), calldata recipient and amount
                prop_assume!(other != token && other != req.recipient);
                let mut t = req.clone();
                t.asset = Asset::erc20(other, "TOK", req.asset.decimals()).unwrap();
                prop_assert_eq!(field_of(&t), "to");
                let mut t = req.clone();
                t.recipient = other;
                prop_assert_eq!(field_of(&t), "recipient");
                let mut t = req.clone();
                t.amount = changed_amount;
                prop_assert_eq!(field_of(&t), "amount");
            }
        }
    }

    #[test]
    fn digest_changes_with_every_byte_that_decodes(req in valid_request(), pos in any::<prop::sample::Index>(), x in 1u8..=255) {
        // A one-byte change either breaks decoding or yields another digest.
        let bytes = encode_unsigned(&build_unsigned(&req).unwrap());
        let mut changed = bytes.clone();
        let i = pos.index(changed.len());
        changed[i] ^= x;
        if let Ok(u) = decode_unsigned(&changed) {
            prop_assert_ne!(signing_digest(&u), signing_digest(&decode_unsigned(&bytes).unwrap()));
            prop_assert_eq!(encode_unsigned(&u), changed);
        }
    }
}

fn erc20_request() -> TransferRequest {
    TransferRequest {
        chain_id: 1,
        from: Address::repeat_byte(0x01),
        recipient: Address::repeat_byte(0x02),
        asset: Asset::erc20(Address::repeat_byte(0x03), "USDC", 6).unwrap(),
        amount: U256::from(5_000_000u64),
        nonce: 9,
        gas_limit: 60_000,
        max_fee_per_gas: 50_000_000_000,
        max_priority_fee_per_gas: 2_000_000_000,
    }
}

fn raw_tx(to: Address, value: U256, input: Vec<u8>) -> UnsignedTx {
    let req = erc20_request();
    UnsignedTx::from_eip1559(TxEip1559 {
        chain_id: req.chain_id,
        nonce: req.nonce,
        gas_limit: req.gas_limit,
        max_fee_per_gas: req.max_fee_per_gas,
        max_priority_fee_per_gas: req.max_priority_fee_per_gas,
        to: TxKind::Call(to),
        value,
        access_list: Default::default(),
        input: input.into(),
    })
    .unwrap()
}

#[test]
fn erc20_with_value_or_foreign_calldata_is_refused() {
    let req = erc20_request();
    let token = req.asset.token().unwrap();
    let good = transfer_calldata(req.recipient, req.amount).to_vec();

    // value on an ERC-20 transfer: refused at decoding
    let with_value = raw_tx(token, U256::from(1u8), good.clone());
    assert!(matches!(
        decode_transfer(&with_value),
        Err(ChainError::UnsupportedCalldata(_))
    ));

    // approve(recipient, amount) instead of transfer: refused, named
    let mut approve = good.clone();
    approve[..4].copy_from_slice(&[0x09, 0x5e, 0xa7, 0xb3]);
    let err = decode_transfer(&raw_tx(token, U256::ZERO, approve))
        .unwrap_err()
        .to_string();
    assert!(err.contains("approve(address,uint256)"), "{err}");

    // ETH sent to the token contract where a token transfer was approved
    let native = raw_tx(token, U256::ZERO, Vec::new());
    let t = decode_transfer(&native).unwrap();
    let mismatch = check_against(&t, &ExpectedTransfer::from_request(&req)).unwrap_err();
    assert_eq!(mismatch.field(), "recipient");
}

#[test]
fn asset_swap_is_named() {
    // Approved: native ETH to R. Transaction: same to/value/recipient/amount but
    // with ERC-20 calldata on R (only possible when R is a contract): "asset".
    let r = Address::repeat_byte(0x42);
    let amount = U256::ZERO;
    let mut t = decode_transfer(&raw_tx(r, amount, transfer_calldata(r, amount).to_vec())).unwrap();
    let expected = ExpectedTransfer {
        chain_id: t.chain_id,
        token: None,
        recipient: r,
        amount,
        max_fee_wei: t.fee_cap_wei,
        nonce: None,
    };
    assert_eq!(check_against(&t, &expected).unwrap_err().field(), "asset");
    t.token = None;
    assert_eq!(check_against(&t, &expected), Ok(()));
}

#[test]
fn mismatch_messages_name_the_field() {
    let req = erc20_request();
    let expected = ExpectedTransfer::from_request(&req);
    let mut tampered = req.clone();
    tampered.recipient = Address::repeat_byte(0x99);
    let t = decode_transfer(&build_unsigned(&tampered).unwrap()).unwrap();
    let m = check_against(&t, &expected).unwrap_err();
    assert!(matches!(m, Mismatch::Recipient { .. }));
    let text = ChainError::from(m).to_string();
    assert!(text.contains("recipient"), "{text}");
    assert!(
        text.contains(&format!("{}", Address::repeat_byte(0x99))),
        "{text}"
    );
}

#[test]
fn invalid_requests_name_the_field() {
    let field = |f: &dyn Fn(&mut TransferRequest)| {
        let mut r = erc20_request();
        f(&mut r);
        match build_unsigned(&r) {
            Err(ChainError::InvalidRequest { field, .. }) => field,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    };
    assert_eq!(field(&|r| r.chain_id = 0), "chain_id");
    assert_eq!(field(&|r| r.recipient = Address::ZERO), "recipient");
    assert_eq!(
        field(&|r| r.recipient = r.asset.token().unwrap()),
        "recipient"
    );
    assert_eq!(field(&|r| r.amount = U256::ZERO), "amount");
    assert_eq!(field(&|r| r.gas_limit = 0), "gas_limit");
    assert_eq!(field(&|r| r.max_fee_per_gas = 0), "max_fee_per_gas");
    assert_eq!(
        field(&|r| r.max_priority_fee_per_gas = r.max_fee_per_gas + 1),
        "max_priority_fee_per_gas"
    );
    assert_eq!(
        field(&|r| {
            r.asset = Asset::eth();
            r.gas_limit = 20_999;
        }),
        "gas_limit"
    );
}

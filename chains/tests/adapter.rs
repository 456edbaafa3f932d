#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The chain seam as a signer uses it: one trait, an EVM and a UTXO
//! implementation, each refusing a transaction that differs from its
//! approvals and returning the digests to sign.

use alloy_primitives::U256;
use custos_chains::evm::address::{
    address_from_verifying_key, parse_address as parse_evm, to_checksum,
};
use custos_chains::evm::asset::Asset;
use custos_chains::evm::tx::{TransferRequest, build_unsigned, encode_unsigned};
use custos_chains::utxo::{self, BuildRequest, Payout, Utxo, UtxoNetwork};
use custos_chains::{ApprovedTransfer, ChainAdapter, ChainFamily, EvmAdapter, UtxoAdapter};
use k256::ecdsa::SigningKey;

const PAYEE_EVM: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

fn approved<'a>(
    destination: &'a str,
    amount: u128,
    fee_cap: u128,
    asset: &'a str,
) -> ApprovedTransfer<'a> {
    ApprovedTransfer {
        withdrawal_id: "w-1",
        asset,
        destination,
        amount,
        fee_cap,
    }
}

#[test]
fn evm_adapter_checks_the_transfer_and_returns_one_digest() {
    let key = SigningKey::from_slice(&[3; 32]).unwrap();
    let adapter = EvmAdapter::new("anvil", 31337, "ETH", &[]).unwrap();
    assert_eq!(adapter.family(), ChainFamily::Evm);
    let pk = key.verifying_key().to_sec1_bytes();
    assert_eq!(
        adapter.wallet_address(&pk).unwrap(),
        to_checksum(&address_from_verifying_key(key.verifying_key()))
    );
    let request = TransferRequest {
        chain_id: 31337,
        from: address_from_verifying_key(key.verifying_key()),
        nonce: 0,
        asset: Asset::native("ETH", 18).unwrap(),
        recipient: parse_evm(PAYEE_EVM).unwrap(),
        amount: U256::from(10u64).pow(U256::from(18)),
        gas_limit: 21_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
    };
    let bytes = encode_unsigned(&build_unsigned(&request).unwrap());
    let cap = 21_000u128 * 2_000_000_000;
    let ok = adapter
        .check_unsigned(
            &bytes,
            &[approved(PAYEE_EVM, 10u128.pow(18), cap, "ETH")],
            &pk,
        )
        .unwrap();
    assert_eq!(ok.digests.len(), 1);
    let e = adapter
        .check_unsigned(
            &bytes,
            &[approved(PAYEE_EVM, 10u128.pow(18) + 1, cap, "ETH")],
            &pk,
        )
        .unwrap_err();
    assert!(e.to_string().contains("value"), "{e}");
    let e = adapter
        .check_unsigned(
            &bytes,
            &[approved(PAYEE_EVM, 10u128.pow(18), cap - 1, "ETH")],
            &pk,
        )
        .unwrap_err();
    assert!(e.to_string().contains("fee"), "{e}");
    let e = adapter
        .check_unsigned(
            &bytes,
            &[approved(PAYEE_EVM, 10u128.pow(18), cap, "USDC")],
            &pk,
        )
        .unwrap_err();
    assert!(e.to_string().contains("USDC"), "{e}");
    let e = adapter.check_unsigned(&bytes, &[], &pk).unwrap_err();
    assert!(e.to_string().contains("one withdrawal"), "{e}");
    assert!(EvmAdapter::new("anvil", 0, "ETH", &[]).is_err());
    assert!(EvmAdapter::new("anvil", 1, "ETH", &[("USDC".into(), "0x12".into())]).is_err());
}

fn utxo_setup(key: &SigningKey, values: &[u64]) -> (Vec<u8>, Vec<Utxo>) {
    let pk = key.verifying_key().to_sec1_bytes().to_vec();
    let script = utxo::wallet_script(&pk).unwrap();
    (pk, custos_chains::utxo::testing::coins(&script, values))
}

#[test]
fn utxo_adapter_checks_outputs_against_approvals_and_the_wallet_key() {
    let net = UtxoNetwork::LitecoinRegtest;
    let adapter = UtxoAdapter::new("litecoin-regtest", net, "LTC");
    assert_eq!(adapter.family(), ChainFamily::Utxo(net));
    let key = SigningKey::from_slice(&[4; 32]).unwrap();
    let (pk, coins) = utxo_setup(&key, &[400_000, 300_000]);
    let wallet = adapter.wallet_address(&pk).unwrap();
    assert!(wallet.starts_with("rltc1q"), "{wallet}");
    let payee_key = SigningKey::from_slice(&[5; 32]).unwrap();
    let payee = utxo::wallet_address(net, &payee_key.verifying_key().to_sec1_bytes()).unwrap();
    let change = utxo::wallet_script(&pk).unwrap();
    let payout = [Payout {
        withdrawal_id: "w-1".into(),
        script_pubkey: payee.script_pubkey.clone(),
        amount: 500_000,
        fee_cap: 5_000,
    }];
    let build = |required: &[bitcoin::OutPoint], rate: u64| {
        utxo::build_unsigned(&BuildRequest {
            coins: &coins,
            required,
            payouts: &payout,
            change_script: &change,
            fee_rate_sat_per_kvb: rate,
        })
        .unwrap()
    };
    // What the adapter says of `psbt` approved as (destination, amount, asset), paid by `key`.
    let check = |psbt: &[u8], destination: &str, amount: u128, asset: &str, key: &[u8]| {
        adapter.check_unsigned(psbt, &[approved(destination, amount, 5_000, asset)], key)
    };
    let unsigned = build(&[], 2_000);
    let ok = check(&unsigned.psbt, &payee.text, 500_000, "LTC", &pk).unwrap();
    assert_eq!(ok.digests.len(), 2, "one digest per input");
    // Another amount, another asset, or another wallet's key: refused.
    let e = check(&unsigned.psbt, &payee.text, 499_999, "LTC", &pk).unwrap_err();
    assert!(e.to_string().contains("amount"), "{e}");
    let e = check(&unsigned.psbt, &payee.text, 500_000, "BTC", &pk).unwrap_err();
    assert!(e.to_string().contains("only LTC"), "{e}");
    let other = payee_key.verifying_key().to_sec1_bytes();
    let e = check(&unsigned.psbt, &payee.text, 500_000, "LTC", &other).unwrap_err();
    assert!(e.to_string().contains("not a coin of this wallet"), "{e}");
    // A Bitcoin destination on Litecoin never matches.
    let btc = utxo::wallet_address(UtxoNetwork::Bitcoin, &other).unwrap();
    assert!(check(&unsigned.psbt, &btc.text, 500_000, "LTC", &pk).is_err());
    // Replacement through the seam: a bump of the same coins is accepted.
    let bump = build(&unsigned.inputs, 4_000);
    let bumped = check(&bump.psbt, &payee.text, 500_000, "LTC", &pk).unwrap();
    adapter.check_replacement(&ok, &bumped).unwrap();
    assert!(adapter.check_replacement(&bumped, &ok).is_err());
}

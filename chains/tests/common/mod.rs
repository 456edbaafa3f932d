//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod anvil;
pub mod frost;
pub mod litecoind;

use std::time::Duration;

use custos_chains::evm::address::address_from_verifying_key;
use custos_chains::evm::rpc::{EvmRpc, Receipt};
use custos_chains::evm::signature::{SignedTx, assemble_signed};
use custos_chains::evm::tx::{
    ExpectedTransfer, TransferRequest, build_unsigned, check_against, decode_unsigned_transfer,
    encode_unsigned, signing_digest,
};
use custos_chains::{Address, B256};
use k256::ecdsa::SigningKey;

pub fn key_from_hex(hex_key: &str) -> SigningKey {
    SigningKey::from_slice(&hex::decode(hex_key).unwrap()).unwrap()
}

pub fn address_of(key: &SigningKey) -> Address {
    address_from_verifying_key(key.verifying_key())
}

/// The whole path a withdrawal takes, with a local key standing in for the
/// MPC signers: coordinator builds and encodes; the "signer" decodes the
/// bytes itself, checks them against the approved transfer, signs the digest
/// it recomputed; the coordinator assembles (low s, sender = wallet).
pub fn sign_request(key: &SigningKey, request: &TransferRequest) -> SignedTx {
    let unsigned = build_unsigned(request).unwrap();
    let bytes = encode_unsigned(&unsigned);

    // signer side
    let (parsed, transfer) = decode_unsigned_transfer(&bytes).unwrap();
    check_against(&transfer, &ExpectedTransfer::from_request(request)).unwrap();
    let digest = signing_digest(&parsed);
    assert_eq!(digest, signing_digest(&unsigned));
    let (sig, recid) = key.sign_prehash_recoverable(&digest).unwrap();
    let (r, s) = sig.split_bytes();

    // coordinator side
    let signed =
        assemble_signed(&unsigned, r.into(), s.into(), recid.to_byte(), request.from).unwrap();
    assert_eq!(signed.sender, request.from);
    assert_eq!(signed.raw[0], 0x02);
    signed
}

pub async fn wait_receipt(rpc: &EvmRpc, hash: B256) -> Receipt {
    rpc.wait_for_receipt(hash, Duration::from_millis(50), Duration::from_secs(30))
        .await
        .unwrap()
}

/// Signs and broadcasts a request and waits for its receipt.
pub async fn send(rpc: &EvmRpc, key: &SigningKey, request: &TransferRequest) -> Receipt {
    let signed = sign_request(key, request);
    let outcome = rpc.send_raw_transaction(&signed.raw).await.unwrap();
    assert_eq!(outcome.hash, signed.hash);
    assert!(!outcome.already_known);
    let receipt = wait_receipt(rpc, signed.hash).await;
    assert_eq!(receipt.transaction_hash, signed.hash);
    receipt
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! End-to-end on a real anvil node: a local k256 key stands in for the MPC key.

mod common;

use common::anvil::{Anvil, CHAIN_ID, DEV_KEY_0};
use common::{address_of, key_from_hex, send, sign_request, wait_receipt};
use custos_chains::evm::asset::Asset;
use custos_chains::evm::rpc::{BlockTag, CallRequest, EvmRpc, RpcConfig};
use custos_chains::evm::tx::erc20::transfer_calldata;
use custos_chains::evm::tx::{TransferRequest, build_unsigned};
use custos_chains::{Address, Bytes, ChainError, U256};
use serde_json::json;

const ETH: u128 = 1_000_000_000_000_000_000;

/// The wallet whose key the MPC cluster would hold.
const WALLET_KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";

async fn native_request(
    rpc: &EvmRpc,
    from: Address,
    recipient: Address,
    amount: U256,
) -> TransferRequest {
    let fees = rpc.estimate_fees().await.unwrap();
    TransferRequest {
        chain_id: rpc.chain_id().await.unwrap(),
        from,
        recipient,
        asset: Asset::eth(),
        amount,
        nonce: rpc
            .transaction_count(from, BlockTag::Pending)
            .await
            .unwrap(),
        gas_limit: 21_000,
        max_fee_per_gas: fees.max_fee_per_gas,
        max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
    }
}

/// Dev account 0 funds `to` with `amount` wei through the same pipeline.
async fn fund(rpc: &EvmRpc, to: Address, amount: U256) {
    let dev = key_from_hex(DEV_KEY_0);
    let request = native_request(rpc, address_of(&dev), to, amount).await;
    let receipt = send(rpc, &dev, &request).await;
    assert!(receipt.success);
}

#[tokio::test]
async fn native_transfer_signed_by_stand_in_key() {
    let anvil = Anvil::start().await;
    let rpc = anvil.rpc();
    let wallet_key = key_from_hex(WALLET_KEY);
    let wallet = address_of(&wallet_key);
    let recipient = Address::repeat_byte(0x5a);

    fund(&rpc, wallet, U256::from(10 * ETH)).await;
    assert_eq!(rpc.balance(wallet).await.unwrap(), U256::from(10 * ETH));

    let wallet_before = rpc.balance(wallet).await.unwrap();
    let recipient_before = rpc.balance(recipient).await.unwrap();
    let amount = Asset::eth().parse_amount("1.25").unwrap();
    let request = native_request(&rpc, wallet, recipient, amount).await;
    assert_eq!(request.nonce, 0);
    assert_eq!(
        rpc.estimate_gas(&CallRequest {
            from: Some(wallet),
            to: recipient,
            value: amount,
            data: Bytes::new(),
        })
        .await
        .unwrap(),
        21_000
    );

    let receipt = send(&rpc, &wallet_key, &request).await;
    assert!(receipt.success);
    assert_eq!(receipt.from, wallet);
    assert_eq!(receipt.to, Some(recipient));
    assert_eq!(receipt.gas_used, 21_000);

    let wallet_after = rpc.balance(wallet).await.unwrap();
    let recipient_after = rpc.balance(recipient).await.unwrap();
    assert_eq!(recipient_after - recipient_before, amount);
    assert_eq!(
        wallet_before - wallet_after,
        amount + receipt.fee_paid_wei()
    );
    assert_eq!(
        rpc.transaction_count(wallet, BlockTag::Latest)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        rpc.transaction_count(wallet, BlockTag::Pending)
            .await
            .unwrap(),
        1
    );
    assert!(rpc.block_number().await.unwrap() >= 2);
}

#[tokio::test]
async fn rebroadcast_is_idempotent_and_conflicts_are_rejected() {
    let anvil = Anvil::start().await;
    let rpc = anvil.rpc();
    let wallet_key = key_from_hex(WALLET_KEY);
    let wallet = address_of(&wallet_key);
    fund(&rpc, wallet, U256::from(ETH)).await;

    // In the pool, not mined: the same bytes again are "already known".
    rpc.request("evm_setAutomine", json!([false]))
        .await
        .unwrap();
    let request = native_request(
        &rpc,
        wallet,
        Address::repeat_byte(0x77),
        U256::from(1000u64),
    )
    .await;
    let signed = sign_request(&wallet_key, &request);
    let first = rpc.send_raw_transaction(&signed.raw).await.unwrap();
    assert!(!first.already_known);
    let again = rpc.send_raw_transaction(&signed.raw).await.unwrap();
    assert_eq!(again.hash, signed.hash);
    assert!(again.already_known);
    assert!(
        rpc.transaction_receipt(signed.hash)
            .await
            .unwrap()
            .is_none()
    );
    rpc.request("evm_mine", json!([])).await.unwrap();
    let receipt = wait_receipt(&rpc, signed.hash).await;
    assert!(receipt.success);

    // Mined: the node says "nonce too low", but it is this very transaction.
    rpc.request("evm_setAutomine", json!([true])).await.unwrap();
    let mined = rpc.send_raw_transaction(&signed.raw).await.unwrap();
    assert!(mined.already_known);
    assert_eq!(mined.hash, signed.hash);

    // Another transaction with the used nonce is a real rejection.
    let mut conflicting = request.clone();
    conflicting.amount = U256::from(999u64);
    let other = sign_request(&wallet_key, &conflicting);
    match rpc.send_raw_transaction(&other.raw).await {
        Err(ChainError::TxRejected { message, .. }) => {
            assert!(message.to_lowercase().contains("nonce"), "{message}")
        }
        other => panic!("expected TxRejected, got {other:?}"),
    }
}

#[tokio::test]
async fn fee_estimation_follows_the_base_fee_and_the_cap() {
    let anvil = Anvil::start().await;
    let rpc = anvil.rpc();
    let base = rpc.base_fee_per_gas().await.unwrap();
    assert!(base > 0);
    let fees = rpc.estimate_fees().await.unwrap();
    assert_eq!(fees.base_fee_per_gas, base);
    assert!(fees.max_priority_fee_per_gas <= fees.max_fee_per_gas);
    assert_eq!(
        fees.max_fee_per_gas,
        2 * base + fees.max_priority_fee_per_gas
    );

    let mut config = RpcConfig::new(&anvil.url);
    config.max_fee_per_gas_cap = base + 1;
    config.fallback_priority_fee = 1;
    let capped = EvmRpc::new(config.clone())
        .unwrap()
        .estimate_fees()
        .await
        .unwrap();
    assert_eq!(capped.max_fee_per_gas, base + 1);
    assert!(capped.max_priority_fee_per_gas <= base + 1);

    config.max_fee_per_gas_cap = base - 1;
    config.fallback_priority_fee = 0;
    assert!(matches!(
        EvmRpc::new(config).unwrap().estimate_fees().await,
        Err(ChainError::FeeAboveCap { .. })
    ));
}

fn token_bytecode() -> Vec<u8> {
    let text = include_str!("fixtures/MiniToken.bin.hex");
    hex::decode(text.trim()).unwrap()
}

#[tokio::test]
async fn erc20_transfer_through_the_tx_builder() {
    let anvil = Anvil::start().await;
    let rpc = anvil.rpc();
    let dev_key = key_from_hex(DEV_KEY_0);
    let dev = address_of(&dev_key);
    let wallet_key = key_from_hex(WALLET_KEY);
    let wallet = address_of(&wallet_key);
    let recipient = Address::repeat_byte(0x6b);

    // Deploy from dev account 0 (anvil signs for its own dev accounts).
    let deploy = rpc
        .request(
            "eth_sendTransaction",
            json!([{ "from": dev, "data": format!("0x{}", hex::encode(token_bytecode())), "gas": "0x100000" }]),
        )
        .await
        .unwrap();
    let hash = deploy.as_str().unwrap().parse().unwrap();
    let receipt = wait_receipt(&rpc, hash).await;
    assert!(receipt.success);
    let token = receipt.contract_address.unwrap();
    let supply = U256::from(1_000_000u64) * U256::from(ETH);
    assert_eq!(rpc.erc20_balance(token, dev).await.unwrap(), supply);
    let decimals = rpc
        .call(&CallRequest {
            from: None,
            to: token,
            value: U256::ZERO,
            data: Bytes::from(vec![0x31, 0x3c, 0xe5, 0x67]),
        })
        .await
        .unwrap();
    assert_eq!(U256::from_be_slice(&decimals), U256::from(18u8));

    let asset = Asset::erc20(token, "MINI", 18).unwrap();
    fund(&rpc, wallet, U256::from(ETH)).await;

    // Dev account 0 sends the wallet 1000 MINI through our builder.
    let fees = rpc.estimate_fees().await.unwrap();
    let mut request = TransferRequest {
        chain_id: CHAIN_ID,
        from: dev,
        recipient: wallet,
        asset: asset.clone(),
        amount: asset.parse_amount("1000").unwrap(),
        nonce: rpc.transaction_count(dev, BlockTag::Pending).await.unwrap(),
        gas_limit: 100_000,
        max_fee_per_gas: fees.max_fee_per_gas,
        max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
    };
    assert!(send(&rpc, &dev_key, &request).await.success);
    assert_eq!(
        rpc.erc20_balance(token, wallet).await.unwrap(),
        asset.parse_amount("1000").unwrap()
    );

    // The wallet sends 123.456 MINI to the recipient.
    let amount = asset.parse_amount("123.456").unwrap();
    let gas = rpc
        .estimate_gas(&CallRequest {
            from: Some(wallet),
            to: token,
            value: U256::ZERO,
            data: transfer_calldata(recipient, amount),
        })
        .await
        .unwrap();
    assert!(gas > 21_000 && gas < 100_000, "{gas}");
    request.from = wallet;
    request.recipient = recipient;
    request.amount = amount;
    request.nonce = rpc
        .transaction_count(wallet, BlockTag::Pending)
        .await
        .unwrap();
    request.gas_limit = gas;
    let eth_before = rpc.balance(wallet).await.unwrap();
    let receipt = send(&rpc, &wallet_key, &request).await;
    assert!(receipt.success);
    assert_eq!(receipt.to, Some(token));
    assert_eq!(rpc.erc20_balance(token, recipient).await.unwrap(), amount);
    assert_eq!(
        rpc.erc20_balance(token, wallet).await.unwrap(),
        asset.parse_amount("876.544").unwrap()
    );
    assert_eq!(
        asset
            .format_amount(rpc.erc20_balance(token, wallet).await.unwrap())
            .unwrap(),
        "876.544"
    );
    // Only gas left the wallet in ETH.
    assert_eq!(
        eth_before - rpc.balance(wallet).await.unwrap(),
        receipt.fee_paid_wei()
    );

    // Overspending reverts on chain (status 0): the token enforces balances.
    request.amount = asset.parse_amount("1000").unwrap();
    request.nonce += 1;
    request.gas_limit = 100_000;
    let reverted = send(&rpc, &wallet_key, &request).await;
    assert!(!reverted.success);
    assert_eq!(rpc.erc20_balance(token, recipient).await.unwrap(), amount);

    // balanceOf on an address without code is not an ERC-20 answer.
    assert!(matches!(
        rpc.erc20_balance(recipient, wallet).await,
        Err(ChainError::RpcMalformed { .. })
    ));
}

#[tokio::test]
async fn built_transaction_matches_what_anvil_decodes() {
    // The node's own view of our signed bytes: same fields as requested.
    let anvil = Anvil::start().await;
    let rpc = anvil.rpc();
    let dev_key = key_from_hex(DEV_KEY_0);
    let dev = address_of(&dev_key);
    let recipient = Address::repeat_byte(0x3c);
    let request = native_request(&rpc, dev, recipient, U256::from(42u64)).await;
    let unsigned = build_unsigned(&request).unwrap();
    let signed = sign_request(&dev_key, &request);
    rpc.send_raw_transaction(&signed.raw).await.unwrap();
    let tx = rpc
        .request("eth_getTransactionByHash", json!([signed.hash]))
        .await
        .unwrap();
    assert_eq!(tx["type"], "0x2");
    assert_eq!(
        tx["to"].as_str().unwrap().to_lowercase(),
        format!("0x{}", hex::encode(recipient))
    );
    assert_eq!(tx["value"], "0x2a");
    assert_eq!(tx["chainId"], format!("{:#x}", CHAIN_ID));
    assert_eq!(
        tx["from"].as_str().unwrap().to_lowercase(),
        format!("0x{}", hex::encode(dev))
    );
    assert_eq!(tx["gas"], format!("{:#x}", unsigned.as_eip1559().gas_limit));
}

/// A loopback URL nothing listens on.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/key-in-path")
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_over_to_the_next() {
    let anvil = Anvil::start().await;
    let mut config = RpcConfig::new(&dead_url());
    config.fallback_urls = vec![anvil.url.clone()];
    config.timeout = std::time::Duration::from_secs(2);
    let rpc = EvmRpc::new(config).unwrap();
    assert_eq!(rpc.chain_id().await.unwrap(), CHAIN_ID);
    // The node that answered is used from now on; reads and sends work.
    assert!(rpc.block_number().await.is_ok());
    assert_eq!(
        rpc.endpoints(),
        vec![
            "http://127.0.0.1/…".to_owned(),
            "http://127.0.0.1/…".to_owned()
        ],
        "redacted: no path, no key"
    );
    // Every endpoint's own answer, for the start-up chain check.
    let each = rpc.chain_id_of_each().await;
    assert!(
        matches!(each[0].1, Err(ChainError::RpcUnreachable(_))),
        "{each:?}"
    );
    assert_eq!(each[1].1.as_ref().unwrap(), &CHAIN_ID);
    // A node that answers with a JSON-RPC error is not skipped: its answer counts.
    let mut config = RpcConfig::new(&anvil.url);
    config.fallback_urls = vec![dead_url()];
    let rpc = EvmRpc::new(config).unwrap();
    assert!(matches!(
        rpc.request("eth_noSuchMethod", json!([])).await,
        Err(ChainError::RpcError { .. })
    ));
    // None reachable: the last transport error.
    let mut config = RpcConfig::new(&dead_url());
    config.fallback_urls = vec![dead_url()];
    let e = EvmRpc::new(config).unwrap().chain_id().await.unwrap_err();
    assert!(matches!(e, ChainError::RpcUnreachable(_)), "{e}");
    // A bad fallback is a config error naming it.
    let mut config = RpcConfig::new(&anvil.url);
    config.fallback_urls = vec!["ftp://node".into()];
    let e = EvmRpc::new(config).unwrap_err();
    assert!(e.to_string().contains("fallback RPC url 1"), "{e}");
}

//! `custos demo --eth-rpc URL`: the withdrawal flow on a real EVM node (anvil):
//! fund the wallet from the node's dev account, withdraw 1.5 ETH through the
//! policy and two approvals, wait for `confirmed`, then show the transaction
//! hash, its receipt and the balance changes, all read from the node.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use custos_chains::evm::address::parse_address;
use custos_chains::evm::rpc::quantity::{format_quantity, parse_b256, parse_u256};
use custos_chains::evm::rpc::{BlockTag, EvmRpc, Receipt, RpcConfig};
use custos_chains::evm::signature::assemble_signed;
use custos_chains::evm::tx::{decode_unsigned_transfer, signing_digest};
use custos_chains::{Address, B256, U256};
use custos_devkit::client::{Client, connect_as};
use custos_devkit::{APPROVER_CLIENT, BACKEND_CLIENT, ClusterLayout, DEFAULT_BASE_PORT, EvmChain};
use custos_proto::custody::{GetWithdrawalRequest, Key, Withdrawal};
use serde_json::{Value, json};

use super::{
    DemoArgs, approve_as_treasurers, create, ensure_key, print_result, say, verify, wait_until,
};
use crate::cmd::view::{human_amount, withdrawal_json};

/// Wallet of the chain demo: in the demo policy's `hot` group.
const WALLET: &str = "eth-hot-1";
/// The demo policy's `anvil-payee`: anvil's dev account 1.
const PAYEE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
/// 1.5 ETH: above the `hot-small` limit, so the `large-whitelisted` rule
/// (two treasury approvals, 5 s time lock) decides.
const PAYOUT_WEI: u128 = 1_500_000_000_000_000_000;
/// Room for the fee on top of the payout (the ETH default fee cap is 0.0021 ETH).
const FEE_MARGIN_WEI: u128 = 10_000_000_000_000_000;
/// What the dev account sends when the wallet holds too little: 10 ETH.
const FUND_WEI: u128 = 10_000_000_000_000_000_000;

/// The cluster's chain if it was started with the node at `url`; otherwise
/// an error telling the exact commands that restart it with that node.
pub(super) fn cluster_chain(
    layout: &ClusterLayout,
    dir: &Path,
    url: &str,
) -> anyhow::Result<EvmChain> {
    let restart = format!(
        "`custos dev down --dir {}` then `{}`",
        dir.display(),
        dev_up_command(dir, layout.base_port, url)
    );
    match &layout.evm_chain {
        Some(chain) if chain.uses_rpc(url) => Ok(chain.clone()),
        Some(chain) => bail!(
            "the dev cluster in {} uses the EVM node at {}, not --eth-rpc {url}: run \
             `custos demo --eth-rpc {}`, or restart the cluster with {url}: {restart}",
            dir.display(),
            chain.rpc_url,
            chain.rpc_url
        ),
        None => bail!(
            "the dev cluster in {} was started without an EVM chain, so it cannot \
             broadcast to --eth-rpc {url}: restart it with that node: {restart}",
            dir.display()
        ),
    }
}

/// `custos dev up` for the cluster in `dir` on `base_port` with the node at `url`.
pub(crate) fn dev_up_command(dir: &Path, base_port: u16, url: &str) -> String {
    let port = if base_port == DEFAULT_BASE_PORT {
        String::new()
    } else {
        format!(" --base-port {base_port}")
    };
    format!(
        "custos dev up --dir {}{port} --eth-rpc {url}",
        dir.display()
    )
}

/// A JSON-RPC client for the node at `url`.
fn node(url: &str) -> anyhow::Result<EvmRpc> {
    let mut config = RpcConfig::new(url);
    config.timeout = Duration::from_secs(10);
    EvmRpc::new(config).with_context(|| format!("--eth-rpc {url}"))
}

/// The chain id the node at `url` reports (`eth_chainId`).
pub(crate) async fn node_chain_id(url: &str) -> anyhow::Result<u64> {
    node(url)?.chain_id().await.with_context(|| {
        format!("cannot ask the EVM node at {url} for its chain id (eth_chainId): is it running?")
    })
}

/// The chain demo, after the signer group is ready.
pub(super) async fn run(
    layout: &ClusterLayout,
    chain: &EvmChain,
    args: &DemoArgs,
    mut client: Client,
    aux_secs: f64,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let url = args.eth_rpc.as_deref().unwrap_or(&chain.rpc_url);
    let rpc = node(url)?;
    let at_node = |what: &str| format!("EVM node {url}: {what}");
    let node_chain = node_chain_id(url).await?;
    if node_chain != chain.chain_id {
        bail!(
            "the EVM node at {url} is on chain id {node_chain}, but the cluster was started \
             for chain id {}: restart the cluster (`custos dev down --dir {}` then `{}`)",
            chain.chain_id,
            args.dir.display(),
            dev_up_command(&args.dir, layout.base_port, url)
        );
    }
    let wallet = args.wallet.clone().unwrap_or_else(|| WALLET.into());
    let to = args.to.clone().unwrap_or_else(|| PAYEE.into());
    let payee = parse_address(&to).with_context(|| format!("--to {to}"))?;
    let (key, keygen_ms) = ensure_key(&mut client, &wallet, &chain.name, json).await?;
    let sender = parse_address(&key.ethereum_address)
        .with_context(|| format!("the address of wallet {wallet}"))?;
    let funding = fund(&rpc, url, sender, json).await?;

    let mut backend = connect_as(layout, BACKEND_CLIENT).await?;
    let mut approver = connect_as(layout, APPROVER_CLIENT).await?;
    say(
        json,
        &format!(
            "\nwithdrawal on {} (chain id {}): {} from {wallet} to {to}\n   (policy: 2 treasury \
             approvals, then a time lock; then signed, broadcast and confirmed)",
            chain.name,
            chain.chain_id,
            eth(U256::from(PAYOUT_WEI)),
        ),
    );
    let w = create(
        &mut backend,
        &wallet,
        &to,
        (PAYOUT_WEI, "ETH"),
        "demo: on-chain payout",
    )
    .await?;
    let (review, approvals) = approve_as_treasurers(&mut backend, &mut approver, &w, json).await?;
    let w = match wait_until(&mut backend, &w.id, "confirmed", json).await {
        Ok(w) => w,
        Err(e) => return Err(explain_stuck(&rpc, &mut backend, &w.id, sender, e).await),
    };
    // The signature is checked over the transaction it signs; the hash on
    // chain is the server's (a fee bump may have been replaced by the
    // version it replaced, if that one was mined first).
    let rebuilt = signed_tx_hash(&key, &w, sender)?;
    let hash: B256 = if w.tx_hash.is_empty() {
        rebuilt
    } else {
        w.tx_hash
            .parse()
            .with_context(|| format!("withdrawal {}: tx_hash {:?}", w.id, w.tx_hash))?
    };
    let receipt = rpc
        .transaction_receipt(hash)
        .await
        .with_context(|| at_node("eth_getTransactionReceipt"))?
        .ok_or_else(|| {
            anyhow!(
                "withdrawal {} is confirmed but the node at {url} has no receipt for {hash:#x}",
                w.id
            )
        })?;
    // Balances just before and at the block of the transaction.
    let before = receipt.block_number.saturating_sub(1);
    let sender_change = BalanceChange::read(&rpc, sender, before, receipt.block_number)
        .await
        .with_context(|| at_node("eth_getBalance"))?;
    let payee_change = BalanceChange::read(&rpc, payee, before, receipt.block_number)
        .await
        .with_context(|| at_node("eth_getBalance"))?;

    let payee_name = if w.destination_label.is_empty() {
        String::new()
    } else {
        format!("{} ", w.destination_label)
    };
    say(
        json,
        &format!(
            "   confirmed: tx {hash:#x}\n   receipt: status {} ({}), block {}, gas used {}, \
             effective gas price {} wei ({:.3} gwei), fee {}\n   sender {wallet} {sender}: {}\n   \
             payee  {payee_name}{payee}: {}\n\ndone in {:.1}s. Try: custos show {}, custos ledger \
             balances, custos report fees",
            u8::from(receipt.success),
            if receipt.success {
                "success"
            } else {
                "reverted"
            },
            receipt.block_number,
            receipt.gas_used,
            receipt.effective_gas_price,
            gwei(receipt.effective_gas_price),
            eth(receipt.fee_paid_wei()),
            sender_change.describe(),
            payee_change.describe(),
            started.elapsed().as_secs_f64(),
            w.id
        ),
    );
    if !receipt.success {
        bail!("transaction {hash:#x} reverted (receipt status 0)");
    }
    if json {
        print_result(
            &key,
            aux_secs,
            keygen_ms,
            json!({
                "chain": chain.name,
                "chain_id": chain.chain_id,
                "rpc_url": url,
                "funding": funding,
                "withdrawal": withdrawal_json(&w),
                "statement_sha256": review.statement_hash,
                "approvals": approvals,
                "tx_hash": format!("{hash:#x}"),
                "receipt": receipt_json(&receipt),
                "balances": {
                    "sender": sender_change.to_json(),
                    "payee": payee_change.to_json(),
                },
            }),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Funds `wallet` from the node's first dev account (`eth_accounts[0]`, unlocked
/// on anvil) unless it already holds the payout and room for its fee.
async fn fund(rpc: &EvmRpc, url: &str, wallet: Address, json: bool) -> anyhow::Result<Value> {
    let at_node = |what: &str| format!("EVM node {url}: {what}");
    let need = U256::from(PAYOUT_WEI + FEE_MARGIN_WEI);
    let balance = rpc
        .balance(wallet)
        .await
        .with_context(|| at_node("eth_getBalance"))?;
    if balance >= need {
        say(
            json,
            &format!(
                "wallet holds {}: enough for the payout, no funding needed",
                eth(balance)
            ),
        );
        return Ok(Value::Null);
    }
    let accounts = rpc
        .request("eth_accounts", json!([]))
        .await
        .with_context(|| at_node("eth_accounts"))?;
    let from = accounts
        .get(0)
        .and_then(Value::as_str)
        .and_then(|a| parse_address(a).ok())
        .ok_or_else(|| {
            anyhow!(
                "the EVM node at {url} has no unlocked dev account (eth_accounts is empty) to \
                 fund the wallet from: send it at least {} ({wallet}) yourself",
                eth(need - balance.min(need))
            )
        })?;
    if !json {
        eprintln!(
            "   funding the wallet ({}) with {} from the node's dev account {from}",
            eth(balance),
            eth(U256::from(FUND_WEI))
        );
    }
    let sent = rpc
        .request(
            "eth_sendTransaction",
            json!([{ "from": from, "to": wallet, "value": format_quantity(U256::from(FUND_WEI)) }]),
        )
        .await
        .with_context(|| at_node("eth_sendTransaction from its dev account"))?;
    let hash: B256 = sent
        .as_str()
        .and_then(|h| parse_b256(h).ok())
        .ok_or_else(|| anyhow!("EVM node {url}: eth_sendTransaction returned {sent}"))?;
    let receipt = rpc
        .wait_for_receipt(hash, Duration::from_millis(200), Duration::from_secs(120))
        .await
        .with_context(|| at_node(&format!("waiting for the funding transaction {hash:#x}")))?;
    if !receipt.success {
        bail!("the funding transaction {hash:#x} reverted");
    }
    say(
        json,
        &format!(
            "funded wallet {wallet} with {} from {from}: tx {hash:#x} in block {}",
            eth(U256::from(FUND_WEI)),
            receipt.block_number
        ),
    );
    Ok(json!({
        "from": from.to_string(),
        "amount": FUND_WEI.to_string(),
        "tx_hash": format!("{hash:#x}"),
        "block_number": receipt.block_number,
    }))
}

/// The hash of the broadcast transaction: the withdrawal's transaction with its
/// signature, verified with k256 over the transaction's own signing digest
/// (what the signers signed; `tx_digest` is the approved statement's) and
/// recovering to the wallet.
fn signed_tx_hash(key: &Key, w: &Withdrawal, wallet: Address) -> anyhow::Result<B256> {
    let (unsigned, _) = decode_unsigned_transfer(&w.unsigned_tx)
        .with_context(|| format!("withdrawal {}: its transaction", w.id))?;
    verify(
        &key.public_key,
        &signing_digest(&unsigned),
        &w.signature_r,
        &w.signature_s,
    )
    .with_context(|| format!("withdrawal {}: the transaction's signature", w.id))?;
    let (Ok(r), Ok(s), Ok(v)) = (
        <[u8; 32]>::try_from(w.signature_r.as_slice()),
        <[u8; 32]>::try_from(w.signature_s.as_slice()),
        u8::try_from(w.recovery_id),
    ) else {
        bail!("withdrawal {}: malformed signature", w.id);
    };
    let signed = assemble_signed(&unsigned, r, s, v, wallet)
        .with_context(|| format!("withdrawal {}: the signed transaction", w.id))?;
    Ok(signed.hash)
}

/// `error`, plus the likely cause when the transaction waits for an account
/// nonce the chain has not reached (the node was restarted with a fresh chain
/// while the cluster kept its transactions).
async fn explain_stuck(
    rpc: &EvmRpc,
    backend: &mut Client,
    id: &str,
    sender: Address,
    error: anyhow::Error,
) -> anyhow::Error {
    let Ok(w) = backend
        .get_withdrawal(GetWithdrawalRequest { id: id.to_string() })
        .await
    else {
        return error;
    };
    let Ok((_, tx)) = decode_unsigned_transfer(&w.into_inner().unsigned_tx) else {
        return error;
    };
    match rpc.transaction_count(sender, BlockTag::Latest).await {
        Ok(on_chain) if tx.nonce > on_chain => anyhow!(
            "{error:#}\n(its transaction has nonce {}, but the wallet has sent only {on_chain} \
             on this chain: was the node restarted with a fresh chain while the cluster kept \
             its state? Start a fresh cluster directory)",
            tx.nonce
        ),
        _ => error,
    }
}

/// An address's balance just before and at a block.
struct BalanceChange {
    address: Address,
    before: U256,
    after: U256,
}

impl BalanceChange {
    async fn read(
        rpc: &EvmRpc,
        address: Address,
        before: u64,
        after: u64,
    ) -> anyhow::Result<BalanceChange> {
        Ok(BalanceChange {
            address,
            before: balance_at(rpc, address, before).await?,
            after: balance_at(rpc, address, after).await?,
        })
    }

    /// `after - before` as a signed decimal.
    fn change(&self) -> (char, U256) {
        if self.after >= self.before {
            ('+', self.after - self.before)
        } else {
            ('-', self.before - self.after)
        }
    }

    fn describe(&self) -> String {
        let (sign, delta) = self.change();
        format!(
            "{} -> {} ({sign}{})",
            eth(self.before),
            eth(self.after),
            eth(delta)
        )
    }

    fn to_json(&self) -> Value {
        let (sign, delta) = self.change();
        json!({
            "address": self.address.to_string(),
            "before": self.before.to_string(),
            "after": self.after.to_string(),
            "change": format!("{}{delta}", if sign == '-' { "-" } else { "" }),
        })
    }
}

/// `eth_getBalance` at a block number.
async fn balance_at(rpc: &EvmRpc, address: Address, block: u64) -> anyhow::Result<U256> {
    let v = rpc
        .request(
            "eth_getBalance",
            json!([address, format_quantity(U256::from(block))]),
        )
        .await?;
    v.as_str()
        .and_then(|q| parse_u256(q).ok())
        .ok_or_else(|| anyhow!("eth_getBalance returned {v}"))
}

fn receipt_json(r: &Receipt) -> Value {
    json!({
        "transaction_hash": format!("{:#x}", r.transaction_hash),
        "status": u8::from(r.success),
        "block_number": r.block_number,
        "gas_used": r.gas_used,
        "effective_gas_price": r.effective_gas_price.to_string(),
        "fee": r.fee_paid_wei().to_string(),
        "from": r.from.to_string(),
        "to": r.to.map(|a| a.to_string()),
    })
}

/// Wei as ETH (`1.5 ETH`), or wei when too large to convert.
fn eth(wei: U256) -> String {
    u128::try_from(wei)
        .ok()
        .and_then(|w| human_amount(w, "ETH"))
        .unwrap_or_else(|| format!("{wei} wei"))
}

/// Wei as gwei, for display.
#[allow(clippy::cast_precision_loss, reason = "display only")]
fn gwei(wei: u128) -> f64 {
    wei as f64 / 1e9
}

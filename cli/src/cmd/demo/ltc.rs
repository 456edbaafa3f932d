//! `custos demo --ltc-rpc URL`: the withdrawal flow in LTC on a real
//! Litecoin Core regtest node: fund the wallet from a wallet of the node's
//! own (mining regtest blocks for it), withdraw 1.5 LTC through the policy
//! and two approvals, mine the transaction and wait for `confirmed`, then
//! show the transaction as the node has it.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use custos_chains::utxo::rpc::UtxoRpc;
use custos_chains::utxo::{Txid, UtxoNetwork, parse_address};
use custos_devkit::client::{Client, connect_as};
use custos_devkit::{APPROVER_CLIENT, BACKEND_CLIENT, ClusterLayout, UtxoChain};
use serde_json::{Value, json};

use super::{DemoArgs, approve_as_treasurers, create, ensure_key, print_result, say, wait_until};
use crate::cmd::view::withdrawal_json;

/// Wallet of the LTC demo: in the demo policy's `hot` group.
const WALLET: &str = "ltc-hot-1";
/// The demo policy's `ltc-payee` (a public test key's P2WPKH address).
const PAYEE: &str = "rltc1qdmm5875nd4709xuh7f65k9d46laea9qlz5vn5j";
/// 1.5 LTC in litoshi: above `ltc-hot-small`'s 1 LTC, so
/// `ltc-large-whitelisted` decides (two treasury approvals, 5 s time lock).
const PAYOUT: u64 = 150_000_000;
/// What the demo sends the wallet on each run: 2 LTC (the payout and its fee).
const FUNDING_COINS: &str = "2.0";
/// The node wallet the demo mines to and funds from (a normal wallet with
/// keys, unlike the coordinator's watch-only one).
const FUNDS_WALLET: &str = "custos-demo-funds";

/// The cluster's UTXO chain if it was started with the node at `url`;
/// otherwise an error telling the exact commands that restart it with it.
pub(super) fn cluster_chain(
    layout: &ClusterLayout,
    dir: &Path,
    url: &str,
) -> anyhow::Result<UtxoChain> {
    let restart = format!(
        "`custos dev down --dir {0}` then `custos dev up --dir {0} --ltc-rpc URL`",
        dir.display()
    );
    match &layout.utxo_chain {
        Some(chain) if chain.uses_rpc(url) => Ok(chain.clone()),
        Some(_) => bail!(
            "the dev cluster in {} uses another Litecoin node than --ltc-rpc: run `custos demo \
             --ltc-rpc` with the URL it was started with (cluster.json), or restart it with \
             this one: {restart}",
            dir.display(),
        ),
        None => bail!(
            "the dev cluster in {} was started without a UTXO chain, so it cannot spend on \
             --ltc-rpc: restart it with that node: {restart}",
            dir.display()
        ),
    }
}

/// The LTC demo, after the signer group is ready.
pub(super) async fn run(
    layout: &ClusterLayout,
    chain: &UtxoChain,
    args: &DemoArgs,
    mut client: Client,
    aux_secs: f64,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let node = Node::connect(&chain.rpc_url).await?;
    let network: UtxoNetwork = chain
        .name
        .parse()
        .map_err(|e| anyhow!("chain {}: {e}", chain.name))?;
    let wallet = args.wallet.clone().unwrap_or_else(|| WALLET.into());
    let to = args.to.clone().unwrap_or_else(|| PAYEE.into());
    let payee = parse_address(network, &to).with_context(|| format!("--to {to}"))?;
    let (key, keygen_ms) = ensure_key(&mut client, &wallet, &chain.name, json).await?;
    let funding = node.fund(&key.address, json).await?;

    let mut backend = connect_as(layout, BACKEND_CLIENT).await?;
    let mut approver = connect_as(layout, APPROVER_CLIENT).await?;
    say(
        json,
        &format!(
            "\nwithdrawal on {}: {} from {wallet} to {to}\n   (policy: 2 treasury approvals, \
             then a time lock; then each input signed in its own session, broadcast, mined)",
            chain.name,
            ltc(PAYOUT),
        ),
    );
    let w = create(
        &mut backend,
        &wallet,
        &to,
        (u128::from(PAYOUT), chain.symbol()),
        "demo: LTC payout",
    )
    .await?;
    let (review, approvals) = approve_as_treasurers(&mut backend, &mut approver, &w, json).await?;
    let w = wait_until(&mut backend, &w.id, "broadcast", json).await?;
    let txid: Txid = w
        .tx_hash
        .parse()
        .with_context(|| format!("withdrawal {}: tx_hash {:?}", w.id, w.tx_hash))?;
    let block = node.mine(1).await?;
    say(json, &format!("   mined block {block} with {txid}"));
    let w = wait_until(&mut backend, &w.id, "confirmed", json).await?;

    // The transaction as the node has it (the coordinator's watch-only
    // wallet learns it asynchronously after the block).
    let watch = format!("custos-{}", chain.name);
    let (tx, confirmations) = node.wallet_transaction(&watch, &txid).await?;
    let paid = tx
        .output
        .iter()
        .find(|o| o.script_pubkey == payee.script_pubkey)
        .map(|o| o.value.to_sat());
    if paid != Some(PAYOUT) {
        bail!("transaction {txid} pays {paid:?} litoshi to {to}, not {PAYOUT}");
    }
    let fee: u64 = w.fee_paid.parse().unwrap_or_default();
    say(
        json,
        &format!(
            "   confirmed: tx {txid} ({confirmations} confirmation(s)), {} input(s), {} output(s) \
             (payout {} to {}{to}, the rest back to the wallet), fee {}\n\ndone in {:.1}s. Try: \
             custos show {}, custos ledger balances, custos report fees",
            tx.input.len(),
            tx.output.len(),
            ltc(PAYOUT),
            if w.destination_label.is_empty() {
                String::new()
            } else {
                format!("{} ", w.destination_label)
            },
            ltc(fee),
            started.elapsed().as_secs_f64(),
            w.id
        ),
    );
    if json {
        print_result(
            &key,
            aux_secs,
            keygen_ms,
            json!({
                "chain": chain.name,
                "funding": funding,
                "withdrawal": withdrawal_json(&w),
                "statement_sha256": review.statement_hash,
                "approvals": approvals,
                "txid": txid.to_string(),
                "confirmations": confirmations,
                "inputs": tx.input.len(),
                "outputs": tx.output.len(),
                "fee": fee.to_string(),
            }),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The regtest node: its RPC and the demo's funding wallet on it.
struct Node {
    rpc: UtxoRpc,
}

impl Node {
    /// Connects to a regtest node (the demo mines blocks: nowhere else).
    async fn connect(url: &str) -> anyhow::Result<Node> {
        let rpc = UtxoRpc::new(url, Duration::from_secs(30)).context("--ltc-rpc")?;
        let (chain, _) = rpc.chain().await.context(
            "cannot reach the Litecoin node at --ltc-rpc (getblockchaininfo): is it running, \
             and are the user and password in the URL right?",
        )?;
        if chain != "regtest" {
            bail!("the node at --ltc-rpc is on {chain}: the demo mines blocks, so regtest only");
        }
        Ok(Node { rpc })
    }

    async fn call(
        &self,
        wallet: Option<&str>,
        method: &'static str,
        params: Value,
    ) -> anyhow::Result<Value> {
        self.rpc
            .call(wallet, method, params)
            .await
            .with_context(|| format!("Litecoin node: {method}"))
    }

    /// Creates or loads the funding wallet; idempotent.
    async fn funds_wallet(&self) -> anyhow::Result<()> {
        let loaded = self.call(None, "listwallets", json!([])).await?;
        if loaded
            .as_array()
            .is_some_and(|l| l.iter().any(|w| w.as_str() == Some(FUNDS_WALLET)))
        {
            return Ok(());
        }
        if self
            .call(None, "loadwallet", json!([FUNDS_WALLET]))
            .await
            .is_err()
        {
            self.call(None, "createwallet", json!([FUNDS_WALLET]))
                .await?;
        }
        Ok(())
    }

    /// Mines `n` blocks to the funding wallet; returns the last one's hash.
    async fn mine(&self, n: u64) -> anyhow::Result<String> {
        let to = self
            .call(Some(FUNDS_WALLET), "getnewaddress", json!(["", "bech32"]))
            .await?;
        let hashes = self.call(None, "generatetoaddress", json!([n, to])).await?;
        hashes
            .as_array()
            .and_then(|h| h.last())
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("Litecoin node: generatetoaddress returned {hashes}"))
    }

    /// Sends the wallet at `address` [`FUNDING_COINS`] from the funding
    /// wallet (mining it mature coins first if it has too few) and mines
    /// the payment so its coin is spendable.
    async fn fund(&self, address: &str, json: bool) -> anyhow::Result<Value> {
        self.funds_wallet().await?;
        let balance = self
            .call(Some(FUNDS_WALLET), "getbalance", json!([]))
            .await?
            .as_f64()
            .unwrap_or_default();
        if balance < 10.0 {
            if !json {
                eprintln!(
                    "   mining 101 regtest blocks to the node wallet {FUNDS_WALLET} (coinbase \
                     coins mature after 100)"
                );
            }
            self.mine(101).await?;
        }
        let sent = self
            .call(
                Some(FUNDS_WALLET),
                "sendtoaddress",
                json!([address, FUNDING_COINS]),
            )
            .await?;
        let txid = sent
            .as_str()
            .ok_or_else(|| anyhow!("Litecoin node: sendtoaddress returned {sent}"))?
            .to_owned();
        let block = self.mine(1).await?;
        say(
            json,
            &format!(
                "funded the wallet {address} with {FUNDING_COINS} LTC from the node wallet \
                 {FUNDS_WALLET}: tx {txid}, mined in block {block}"
            ),
        );
        Ok(json!({
            "from_wallet": FUNDS_WALLET,
            "amount": "200000000",
            "txid": txid,
            "block_hash": block,
        }))
    }

    /// `txid` as the node's wallet `wallet` has it, with its confirmations
    /// (waiting up to 10 s for the wallet to hear of it).
    async fn wallet_transaction(
        &self,
        wallet: &str,
        txid: &Txid,
    ) -> anyhow::Result<(custos_chains::utxo::Transaction, i64)> {
        let started = Instant::now();
        loop {
            if let Some((tx, status)) = self
                .rpc
                .wallet_transaction(wallet, txid)
                .await
                .with_context(|| format!("Litecoin node: gettransaction {txid}"))?
            {
                return Ok((tx, status.confirmations));
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the node's wallet {wallet} does not know the transaction {txid}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Litoshi as LTC with base units (`1.5 LTC (150000000 base units)`).
fn ltc(litoshi: u64) -> String {
    custos_policy::describe_amount(
        u128::from(litoshi),
        custos_policy::known_decimals("LTC"),
        "LTC",
    )
}

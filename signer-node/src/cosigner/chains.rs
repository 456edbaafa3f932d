//! The signer's own chain facts and its check of an unsigned transaction
//! against the approved withdrawal (docs/SECURITY.md case 11).
//!
//! Each configured chain becomes a [`ChainAdapter`] of its family (decided
//! by the chain's name, as in policies): chain ids, networks and token
//! contracts come from this signer's config, never from the coordinator. A
//! transaction for another chain, to another address, of another amount,
//! with other calldata, other outputs or a higher fee than approved is
//! refused, naming the field or output.

use custos_chains::family::{ChainFamily, family_of, known_chains, native_asset};
use custos_chains::{
    ApprovedTransfer, ChainAdapter, ChainError, CheckedTransaction, EvmAdapter, MessageAdapter,
    UtxoAdapter,
};
use custos_policy::Withdrawal;
use serde::{Deserialize, Serialize};

/// `[cosigner] chains = [...]`: one chain this signer signs transactions on.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerChain {
    /// Chain name as in withdrawals and policies ("anvil", "ethereum",
    /// "litecoin-regtest"); it decides the family.
    pub name: String,
    /// EIP-155 chain id (EVM chains only).
    #[serde(default)]
    pub chain_id: Option<u64>,
    /// Symbol of the native coin (default: the chain's, e.g. "ETH", "LTC").
    #[serde(default)]
    pub native: Option<String>,
    /// ERC-20 tokens: symbol and contract (EVM chains only).
    #[serde(default)]
    pub tokens: Vec<SignerToken>,
}

/// One ERC-20 token a signer knows.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerToken {
    /// Asset symbol as in withdrawals.
    pub symbol: String,
    /// Contract address.
    pub contract: String,
}

/// The adapter for one configured chain, or why the entry is unusable.
pub fn adapter(c: &SignerChain) -> Result<Box<dyn ChainAdapter>, String> {
    let family = family_of(&c.name).ok_or_else(|| {
        format!(
            "name {:?}: unknown chain (known: {})",
            c.name,
            known_chains()
        )
    })?;
    let native = c
        .native
        .clone()
        .or_else(|| native_asset(&c.name).map(str::to_owned))
        .unwrap_or_else(|| "ETH".to_owned());
    match family {
        ChainFamily::Evm => {
            let chain_id = c
                .chain_id
                .ok_or_else(|| format!("{}: chain_id is required for an EVM chain", c.name))?;
            let tokens: Vec<(String, String)> = c
                .tokens
                .iter()
                .map(|t| (t.symbol.clone(), t.contract.clone()))
                .collect();
            EvmAdapter::new(&c.name, chain_id, &native, &tokens)
                .map(|a| Box::new(a) as Box<dyn ChainAdapter>)
                .map_err(|e| e.to_string())
        }
        ChainFamily::Utxo(network) => {
            if c.chain_id.is_some() || !c.tokens.is_empty() {
                return Err(format!(
                    "{}: a {network} chain has no chain_id and no tokens",
                    c.name
                ));
            }
            Ok(Box::new(UtxoAdapter::new(&c.name, network, &native)))
        }
        ChainFamily::Message => {
            if c.chain_id.is_some() || !c.tokens.is_empty() || c.native.is_some() {
                return Err(format!(
                    "{}: the message chain has no chain_id, native coin or tokens",
                    c.name
                ));
            }
            Ok(Box::new(MessageAdapter))
        }
    }
}

/// Checks the configured chains (names unique and known, each usable).
pub fn validate(chains: &[SignerChain]) -> Result<(), String> {
    for (i, c) in chains.iter().enumerate() {
        if c.name.is_empty() || chains.iter().filter(|o| o.name == c.name).count() > 1 {
            return Err(format!("[{i}].name {:?} is empty or listed twice", c.name));
        }
        adapter(c).map_err(|e| format!("[{i}]: {e}"))?;
    }
    Ok(())
}

/// The adapters of the configured chains (entries that fail [`validate`]
/// are left out: the daemon refuses to start with them).
pub fn adapters(chains: &[SignerChain]) -> Vec<Box<dyn ChainAdapter>> {
    chains.iter().filter_map(|c| adapter(c).ok()).collect()
}

/// A transaction checked against its approval.
#[derive(Clone, Debug)]
pub struct CheckedTx {
    /// The digest of this session (computed here from the bytes): the one
    /// of the requested input; its signing session's log entry names it.
    pub digest: [u8; 32],
    /// What the key signs in this session: the digest itself on a
    /// transaction chain, the approved message on the `message` chain.
    pub message: Vec<u8>,
    /// The family's view of it (every input's digest), for replacement
    /// checks and for tying sessions of one transaction together.
    pub checked: CheckedTransaction,
}

fn describe(e: ChainError) -> String {
    match e {
        ChainError::Mismatch(m) => format!(
            "unsigned_tx does not match the approved withdrawal: field {}: {m}",
            m.field()
        ),
        ChainError::MalformedTx(_) | ChainError::UnsupportedCalldata(_) => {
            format!("unsigned_tx: cannot be parsed as a transfer: {e}")
        }
        other => other.to_string(),
    }
}

/// Decodes `unsigned_tx`, checks it against the approved withdrawals `ws`
/// (one, or a batch paid by one UTXO transaction: one output each, in this
/// order, all from one wallet) paid from the wallet key `public_key` (SEC1)
/// and returns the digest of input `input` to sign; an error is the
/// refusal message.
pub fn check_transaction(
    chains: &[Box<dyn ChainAdapter>],
    ws: &[Withdrawal],
    unsigned_tx: &[u8],
    public_key: &[u8],
    input: u32,
) -> Result<CheckedTx, String> {
    let w = ws
        .first()
        .ok_or("no withdrawal to check the transaction against")?;
    if let Some(o) = ws
        .iter()
        .find(|o| o.chain != w.chain || o.wallet != w.wallet || o.asset != w.asset)
    {
        return Err(format!(
            "batch: withdrawal {} pays {} from {} on {}, not {} from {} on {} like withdrawal {}: a batch is one wallet's payouts of one asset",
            o.id, o.asset, o.wallet, o.chain, w.asset, w.wallet, w.chain, w.id
        ));
    }
    let chain = chains.iter().find(|c| c.name() == w.chain).ok_or_else(|| {
        format!(
            "chain {}: this signer has no transaction adapter configured for it ([cosigner] chains)",
            w.chain
        )
    })?;
    let approved: Vec<ApprovedTransfer<'_>> = ws
        .iter()
        .map(|w| ApprovedTransfer {
            withdrawal_id: &w.id,
            asset: &w.asset,
            destination: &w.destination,
            amount: w.amount.0,
            fee_cap: w.fee_cap.0,
        })
        .collect();
    let checked = chain
        .check_unsigned(unsigned_tx, &approved, public_key)
        .map_err(describe)?;
    // One signing session signs one digest: a transaction with several (a
    // UTXO spend of several coins) gets one session per input, each with its
    // own presignature.
    let digest = usize::try_from(input)
        .ok()
        .and_then(|i| checked.digests.get(i))
        .copied()
        .ok_or_else(|| {
            format!(
                "input_index {input}: the transaction has {} input(s) to sign",
                checked.digests.len()
            )
        })?;
    let message = checked.message(usize::try_from(input).unwrap_or(usize::MAX));
    Ok(CheckedTx {
        digest,
        message,
        checked,
    })
}

/// Checks that `next` (already checked against the approval) replaces the
/// transaction this signer signed before, `previous_tx`: only one of them
/// can be mined.
pub fn check_fee_bump(
    chains: &[Box<dyn ChainAdapter>],
    ws: &[Withdrawal],
    previous_tx: &[u8],
    public_key: &[u8],
    next: &CheckedTx,
) -> Result<(), String> {
    let w = ws
        .first()
        .ok_or("no withdrawal to check the replacement against")?;
    // A replacement of several inputs is signed one session per input like
    // the first version: this check admits its first session; the others
    // sign the very bytes admitted here (`Cosigner::bump_input`).
    let previous = check_transaction(chains, ws, previous_tx, public_key, 0)
        .map_err(|e| format!("the transaction signed before cannot be read: {e}"))?;
    let chain = chains
        .iter()
        .find(|c| c.name() == w.chain)
        .ok_or_else(|| format!("chain {}: no adapter", w.chain))?;
    chain
        .check_replacement(&previous.checked, &next.checked)
        .map_err(|e| match e {
            ChainError::InvalidRequest { field, reason } => {
                format!("unsigned_tx: field {field}: {reason}")
            }
            other => format!("unsigned_tx: {other}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use custos_chains::utxo::{self, BuildRequest, Payout, Utxo, UtxoNetwork};
    use custos_policy::Amount as PolicyAmount;

    fn chain(text: &str) -> SignerChain {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn configs_are_checked_per_family() {
        let ok = [
            chain("name = \"anvil\"\nchain_id = 31337"),
            chain("name = \"litecoin-regtest\""),
        ];
        validate(&ok).unwrap();
        assert_eq!(adapters(&ok).len(), 2);
        for (bad, why) in [
            ("name = \"dogecoin\"", "unknown chain"),
            ("name = \"anvil\"", "chain_id is required"),
            ("name = \"litecoin\"\nchain_id = 2", "no chain_id"),
            ("name = \"anvil\"\nchain_id = 0", "must not be 0"),
        ] {
            let e = validate(&[chain(bad)]).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let twice = [chain("name = \"litecoin\""), chain("name = \"litecoin\"")];
        assert!(validate(&twice).unwrap_err().contains("listed twice"));
    }

    fn coins(pk: &[u8], values: &[u64]) -> Vec<Utxo> {
        utxo::testing::coins(&utxo::wallet_script(pk).unwrap(), values)
    }

    /// A UTXO withdrawal reaches the signer's check through the seam with the
    /// wallet key from its own store; each input is its own session with its
    /// own digest, and a foreign key's coins are not the wallet's.
    #[test]
    fn utxo_transactions_go_through_the_adapter_with_the_signers_own_wallet_key() {
        let net = UtxoNetwork::LitecoinRegtest;
        let adapters = adapters(&[chain("name = \"litecoin-regtest\"")]);
        let secp = bitcoin::secp256k1::Secp256k1::new();
        let key = |seed: u8| {
            let sk = bitcoin::secp256k1::SecretKey::from_slice(&[seed; 32]).unwrap();
            bitcoin::secp256k1::PublicKey::from_secret_key(&secp, &sk)
                .serialize()
                .to_vec()
        };
        let pk = key(11);
        let payee = utxo::wallet_address(net, &key(12)).unwrap();
        let w = Withdrawal {
            source: None,
            id: "w-ltc".into(),
            wallet: "ltc-hot".into(),
            chain: "litecoin-regtest".into(),
            asset: "LTC".into(),
            destination: payee.text.clone(),
            amount: PolicyAmount(150_000),
            fee_cap: PolicyAmount(10_000),
            initiator: "backend".into(),
            tx_digest: String::new(),
        };
        let build = |coins: &[Utxo]| {
            utxo::build_unsigned(&BuildRequest {
                coins,
                required: &[],
                payouts: &[Payout {
                    withdrawal_id: w.id.clone(),
                    script_pubkey: payee.script_pubkey.clone(),
                    amount: 150_000,
                    fee_cap: 10_000,
                }],
                change_script: &utxo::wallet_script(&pk).unwrap(),
                fee_rate_sat_per_kvb: 2_000,
            })
            .unwrap()
        };
        let one = build(&coins(&pk, &[200_000]));
        let checked =
            check_transaction(&adapters, std::slice::from_ref(&w), &one.psbt, &pk, 0).unwrap();
        assert_eq!(checked.checked.digests, vec![checked.digest]);
        let e =
            check_transaction(&adapters, std::slice::from_ref(&w), &one.psbt, &pk, 1).unwrap_err();
        assert!(
            e.contains("input_index 1") && e.contains("1 input(s)"),
            "{e}"
        );
        // Two coins: one session per input, each its own digest.
        let two = build(&coins(&pk, &[100_000, 90_000]));
        let first =
            check_transaction(&adapters, std::slice::from_ref(&w), &two.psbt, &pk, 0).unwrap();
        let second =
            check_transaction(&adapters, std::slice::from_ref(&w), &two.psbt, &pk, 1).unwrap();
        assert_eq!(first.checked.digests, vec![first.digest, second.digest]);
        assert_ne!(first.digest, second.digest);
        let e =
            check_transaction(&adapters, std::slice::from_ref(&w), &one.psbt, &[], 0).unwrap_err();
        assert!(e.contains("public key"), "{e}");
        let mut other = w.clone();
        other.amount = PolicyAmount(150_001);
        let e = check_transaction(&adapters, std::slice::from_ref(&other), &one.psbt, &pk, 0)
            .unwrap_err();
        assert!(e.contains("output 0: amount 150000"), "{e}");
        other.chain = "litecoin".into();
        let e = check_transaction(&adapters, std::slice::from_ref(&other), &one.psbt, &pk, 0)
            .unwrap_err();
        assert!(e.contains("no transaction adapter"), "{e}");

        // Fee bumps of a two-input transaction (SECURITY.md case 60): the
        // replacement the engine builds is admitted against the version
        // signed; one that leaves a coin out (both could confirm) or pays no
        // more is refused, naming why.
        let own = utxo::wallet_script(&pk).unwrap();
        let payouts = [Payout {
            withdrawal_id: w.id.clone(),
            script_pubkey: payee.script_pubkey.clone(),
            amount: 150_000,
            fee_cap: 10_000,
        }];
        let bump = |replaced: &[u8], rate: u64| {
            utxo::build_replacement(&utxo::ReplacementRequest {
                replaced,
                fee_floor: 0,
                payouts: &payouts,
                change_script: &own,
                min_rate_sat_per_kvb: rate,
                incremental_sat_per_kvb: 1_000,
            })
            .unwrap()
        };
        let next = bump(&two.psbt, 3_000);
        for input in 0..2 {
            let checked =
                check_transaction(&adapters, std::slice::from_ref(&w), &next.psbt, &pk, input)
                    .unwrap();
            check_fee_bump(
                &adapters,
                std::slice::from_ref(&w),
                &two.psbt,
                &pk,
                &checked,
            )
            .unwrap();
        }
        let back =
            check_transaction(&adapters, std::slice::from_ref(&w), &two.psbt, &pk, 0).unwrap();
        let e = check_fee_bump(&adapters, std::slice::from_ref(&w), &next.psbt, &pk, &back)
            .unwrap_err();
        assert!(e.contains("is not above the replaced fee"), "{e}");
        let other_coins = coins(&pk, &[300_000]);
        let elsewhere = build(&other_coins);
        let checked =
            check_transaction(&adapters, std::slice::from_ref(&w), &elsewhere.psbt, &pk, 0)
                .unwrap();
        let e = check_fee_bump(
            &adapters,
            std::slice::from_ref(&w),
            &two.psbt,
            &pk,
            &checked,
        )
        .unwrap_err();
        assert!(e.contains("does not spend"), "{e}");
    }
}

//! The signer's own chain facts and its check of an unsigned transaction
//! against the approved withdrawal (docs/SECURITY.md case 11).
//!
//! The chain id and the token contracts come from this signer's config, never
//! from the coordinator: a transaction for another chain, to another address,
//! of another amount, with other calldata or a higher fee cap than approved is
//! refused, naming the field.

use custos_chains::evm::address::parse_address;
use custos_chains::evm::tx::{
    DecodedTransfer, ExpectedTransfer, check_against, check_replacement, decode_unsigned_transfer,
    signing_digest,
};
use custos_chains::{Address, U256};
use custos_policy::Withdrawal;
use serde::Deserialize;

/// `[cosigner] chains = [...]`: one chain this signer signs transactions on.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerChain {
    /// Chain name as in withdrawals ("anvil", "ethereum").
    pub name: String,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Symbol of the native coin (default "ETH").
    #[serde(default = "eth")]
    pub native: String,
    /// ERC-20 tokens: symbol and contract.
    #[serde(default)]
    pub tokens: Vec<SignerToken>,
}

/// One ERC-20 token a signer knows.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerToken {
    /// Asset symbol as in withdrawals.
    pub symbol: String,
    /// Contract address.
    pub contract: String,
}

fn eth() -> String {
    "ETH".into()
}

/// Checks the configured chains (names unique, chain ids and contracts valid).
pub fn validate(chains: &[SignerChain]) -> Result<(), String> {
    for (i, c) in chains.iter().enumerate() {
        if c.name.is_empty() || chains.iter().filter(|o| o.name == c.name).count() > 1 {
            return Err(format!("[{i}].name {:?} is empty or listed twice", c.name));
        }
        if c.chain_id == 0 {
            return Err(format!("[{i}].chain_id must not be 0"));
        }
        for t in &c.tokens {
            parse_address(&t.contract)
                .map_err(|e| format!("[{i}].tokens {}: contract: {e}", t.symbol))?;
        }
    }
    Ok(())
}

/// A transaction checked against its approval.
#[derive(Clone, Debug)]
pub struct CheckedTx {
    /// The digest to sign (computed here from the bytes).
    pub digest: [u8; 32],
    /// What it moves, with its nonce and fees.
    pub decoded: DecodedTransfer,
}

/// Decodes `unsigned_tx`, checks it against the approved withdrawal `w` and
/// returns the digest to sign; an error is the refusal message.
pub fn check_transaction(
    chains: &[SignerChain],
    w: &Withdrawal,
    unsigned_tx: &[u8],
) -> Result<CheckedTx, String> {
    let chain = chains.iter().find(|c| c.name == w.chain).ok_or_else(|| {
        format!(
            "chain {}: this signer has no transaction adapter configured for it ([cosigner] chains)",
            w.chain
        )
    })?;
    let token: Option<Address> = if w.asset == chain.native {
        None
    } else {
        let t = chain
            .tokens
            .iter()
            .find(|t| t.symbol == w.asset)
            .ok_or_else(|| {
                format!(
                    "asset {} on {}: unknown to this signer ([cosigner] chains tokens)",
                    w.asset, w.chain
                )
            })?;
        Some(parse_address(&t.contract).map_err(|e| format!("asset {} contract: {e}", w.asset))?)
    };
    let recipient = parse_address(&w.destination).map_err(|e| format!("destination: {e}"))?;
    let (unsigned, decoded) = decode_unsigned_transfer(unsigned_tx)
        .map_err(|e| format!("unsigned_tx: cannot be parsed as a transfer: {e}"))?;
    let expected = ExpectedTransfer {
        chain_id: chain.chain_id,
        token,
        recipient,
        amount: U256::from(w.amount.0),
        max_fee_wei: U256::from(w.fee_cap.0),
        nonce: None,
    };
    check_against(&decoded, &expected).map_err(|m| {
        format!(
            "unsigned_tx does not match the approved withdrawal: field {}: {m}",
            m.field()
        )
    })?;
    Ok(CheckedTx {
        digest: signing_digest(&unsigned),
        decoded,
    })
}

/// Checks that `next` (already checked against the approval) replaces the
/// transaction this signer signed before, `previous_tx`: the same transfer,
/// nonce and gas limit with higher fees. Only one of them can be mined.
pub fn check_fee_bump(previous_tx: &[u8], next: &CheckedTx) -> Result<(), String> {
    let (_, previous) = decode_unsigned_transfer(previous_tx)
        .map_err(|e| format!("the transaction signed before cannot be read: {e}"))?;
    check_replacement(&previous, &next.decoded)
        .map_err(|m| format!("unsigned_tx: field {}: {m}", m.field()))
}

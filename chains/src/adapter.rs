//! The chain seam: what a signer needs from a chain family to check a
//! transaction against its approvals before signing it.
//!
//! A [`ChainAdapter`] is built from the signer's own configuration (chain id,
//! network, token contracts: never from the coordinator). It decodes the
//! unsigned transaction itself, refuses anything that differs from the
//! approved transfers, and returns the digests to sign, one per signing
//! session (one for an EVM transaction, one per input for a UTXO one).
//! Adding a chain family adds an implementation, not a branch in the signer.

use std::fmt;

use alloy_primitives::{Address, U256};
use bitcoin::ScriptBuf;

use crate::error::{ChainError, Result};
use crate::evm::address::{address_from_sec1, parse_address as parse_evm, to_checksum};
use crate::evm::tx::{
    DecodedTransfer, ExpectedTransfer, check_against, decode_unsigned_transfer, signing_digest,
};
use crate::family::{ChainFamily, CheckedAddress, check_address};
use crate::utxo::{CheckedUtxoTx, Payout, UtxoNetwork};

/// One approved transfer, as its approval statement binds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApprovedTransfer<'a> {
    /// The withdrawal.
    pub withdrawal_id: &'a str,
    /// Asset symbol.
    pub asset: &'a str,
    /// Destination address (canonical text).
    pub destination: &'a str,
    /// Amount, base units.
    pub amount: u128,
    /// The most fee it may pay, base units of the chain's native asset.
    pub fee_cap: u128,
}

/// A transaction decoded and checked against its approvals.
#[derive(Clone, Debug)]
pub struct CheckedTransaction {
    /// What to sign: one digest per signing session, in order.
    pub digests: Vec<[u8; 32]>,
    /// The family's view of it.
    pub detail: CheckedDetail,
}

/// A checked transaction as its family sees it.
#[derive(Clone, Debug)]
pub enum CheckedDetail {
    /// An EIP-1559 transfer.
    Evm(Box<DecodedTransfer>),
    /// A segwit transaction with its proved inputs.
    Utxo(Box<CheckedUtxoTx>),
    /// A message of the `message` chain (the bytes the key signs).
    Message(Vec<u8>),
}

impl CheckedTransaction {
    /// What the key signs in session `input`: the message itself on the
    /// `message` chain, the digest of that input on a transaction chain
    /// (empty when there is no such input).
    pub fn message(&self, input: usize) -> Vec<u8> {
        match &self.detail {
            CheckedDetail::Message(m) => m.clone(),
            _ => self
                .digests
                .get(input)
                .map(|d| d.to_vec())
                .unwrap_or_default(),
        }
    }
}

/// What a signer needs from one chain.
pub trait ChainAdapter: Send + Sync + fmt::Debug {
    /// The chain's name ("anvil", "litecoin-regtest").
    fn name(&self) -> &str;

    /// Its family.
    fn family(&self) -> ChainFamily;

    /// Checks an address for this chain; returns its canonical form.
    fn check_address(&self, text: &str) -> Result<CheckedAddress> {
        check_address(self.name(), text)
    }

    /// The address of a wallet key (SEC1 public key) on this chain.
    fn wallet_address(&self, public_key: &[u8]) -> Result<String>;

    /// Decodes `unsigned` and checks it pays exactly `approved` from the
    /// wallet of `public_key`; returns the digests to sign.
    fn check_unsigned(
        &self,
        unsigned: &[u8],
        approved: &[ApprovedTransfer<'_>],
        public_key: &[u8],
    ) -> Result<CheckedTransaction>;

    /// Checks that `next` may replace `previous` (both checked against the
    /// same approvals): only one of them can ever be mined.
    fn check_replacement(
        &self,
        previous: &CheckedTransaction,
        next: &CheckedTransaction,
    ) -> Result<()>;
}

/// The one approved transfer of a family that signs one at a time.
pub(crate) fn only_one<'s, 'a>(
    approved: &'s [ApprovedTransfer<'a>],
    rule: &str,
) -> Result<&'s ApprovedTransfer<'a>> {
    match approved {
        [w] => Ok(w),
        _ => Err(ChainError::InvalidRequest {
            field: "approved",
            reason: format!("{rule}, {} given", approved.len()),
        }),
    }
}

fn refused(why: impl Into<String>) -> ChainError {
    ChainError::UtxoRefused(why.into())
}

/// An EVM chain as a signer configures it.
#[derive(Clone, Debug)]
pub struct EvmAdapter {
    name: String,
    chain_id: u64,
    native: String,
    tokens: Vec<(String, Address)>,
}

impl EvmAdapter {
    /// `tokens`: (symbol, contract address text) of the ERC-20s it signs.
    pub fn new(
        name: &str,
        chain_id: u64,
        native: &str,
        tokens: &[(String, String)],
    ) -> Result<Self> {
        if chain_id == 0 {
            return Err(ChainError::InvalidConfig(format!(
                "{name}: chain_id must not be 0"
            )));
        }
        let tokens = tokens
            .iter()
            .map(|(symbol, contract)| {
                parse_evm(contract)
                    .map(|a| (symbol.clone(), a))
                    .map_err(|e| {
                        ChainError::InvalidConfig(format!("{name}: token {symbol}: contract: {e}"))
                    })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            name: name.to_owned(),
            chain_id,
            native: native.to_owned(),
            tokens,
        })
    }
}

impl ChainAdapter for EvmAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn family(&self) -> ChainFamily {
        ChainFamily::Evm
    }

    fn wallet_address(&self, public_key: &[u8]) -> Result<String> {
        Ok(to_checksum(&address_from_sec1(public_key)?))
    }

    fn check_unsigned(
        &self,
        unsigned: &[u8],
        approved: &[ApprovedTransfer<'_>],
        _public_key: &[u8],
    ) -> Result<CheckedTransaction> {
        // The sender is not in an EVM transaction: the signature makes it,
        // so the key signing is the wallet by construction.
        let w = only_one(approved, "an EVM transaction pays one withdrawal")?;
        let token = if w.asset == self.native {
            None
        } else {
            let found = self.tokens.iter().find(|(symbol, _)| symbol == w.asset);
            Some(found.map(|(_, a)| *a).ok_or_else(|| {
                ChainError::InvalidAsset(format!(
                    "asset {} on {}: unknown to this signer ([cosigner] chains tokens)",
                    w.asset, self.name
                ))
            })?)
        };
        let recipient = parse_evm(w.destination)
            .map_err(|e| ChainError::InvalidAddress(format!("destination: {e}")))?;
        let (tx, decoded) = decode_unsigned_transfer(unsigned)?;
        let expected = ExpectedTransfer {
            chain_id: self.chain_id,
            token,
            recipient,
            amount: U256::from(w.amount),
            max_fee_wei: U256::from(w.fee_cap),
            nonce: None,
        };
        check_against(&decoded, &expected)?;
        Ok(CheckedTransaction {
            digests: vec![signing_digest(&tx)],
            detail: CheckedDetail::Evm(Box::new(decoded)),
        })
    }

    fn check_replacement(
        &self,
        previous: &CheckedTransaction,
        next: &CheckedTransaction,
    ) -> Result<()> {
        match (&previous.detail, &next.detail) {
            (CheckedDetail::Evm(p), CheckedDetail::Evm(n)) => {
                crate::evm::tx::check_replacement(p, n).map_err(|m| ChainError::InvalidRequest {
                    field: m.field(),
                    reason: m.to_string(),
                })
            }
            _ => Err(ChainError::InvalidRequest {
                field: "unsigned_tx",
                reason: "not two EVM transactions".into(),
            }),
        }
    }
}

/// A Bitcoin-format chain as a signer configures it.
#[derive(Clone, Debug)]
pub struct UtxoAdapter {
    name: String,
    network: UtxoNetwork,
    native: String,
}

impl UtxoAdapter {
    /// A chain on `network` whose coin is `native` ("BTC", "LTC").
    pub fn new(name: &str, network: UtxoNetwork, native: &str) -> Self {
        Self {
            name: name.to_owned(),
            network,
            native: native.to_owned(),
        }
    }

    fn payouts(&self, approved: &[ApprovedTransfer<'_>]) -> Result<Vec<Payout>> {
        approved
            .iter()
            .map(|w| {
                if w.asset != self.native {
                    return Err(ChainError::InvalidAsset(format!(
                        "asset {} on {}: only {} moves on this chain",
                        w.asset, self.name, self.native
                    )));
                }
                let to_u64 = |v: u128, what: &str| {
                    u64::try_from(v).map_err(|_| {
                        refused(format!(
                            "withdrawal {}: {what} {v} too large",
                            w.withdrawal_id
                        ))
                    })
                };
                Ok(Payout {
                    withdrawal_id: w.withdrawal_id.to_owned(),
                    script_pubkey: crate::utxo::parse_address(self.network, w.destination)?
                        .script_pubkey,
                    amount: to_u64(w.amount, "amount")?,
                    fee_cap: to_u64(w.fee_cap, "fee cap")?,
                })
            })
            .collect()
    }
}

impl ChainAdapter for UtxoAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn family(&self) -> ChainFamily {
        ChainFamily::Utxo(self.network)
    }

    fn wallet_address(&self, public_key: &[u8]) -> Result<String> {
        Ok(crate::utxo::wallet_address(self.network, public_key)?.text)
    }

    fn check_unsigned(
        &self,
        unsigned: &[u8],
        approved: &[ApprovedTransfer<'_>],
        public_key: &[u8],
    ) -> Result<CheckedTransaction> {
        let payouts = self.payouts(approved)?;
        let own: [ScriptBuf; 1] = [crate::utxo::wallet_script(public_key)?];
        let checked = crate::utxo::check_psbt(unsigned, &payouts, &own)?;
        Ok(CheckedTransaction {
            digests: checked.digests.clone(),
            detail: CheckedDetail::Utxo(Box::new(checked)),
        })
    }

    fn check_replacement(
        &self,
        previous: &CheckedTransaction,
        next: &CheckedTransaction,
    ) -> Result<()> {
        match (&previous.detail, &next.detail) {
            (CheckedDetail::Utxo(p), CheckedDetail::Utxo(n)) => {
                crate::utxo::check_replacement(p, n)
            }
            _ => Err(refused("not two UTXO transactions")),
        }
    }
}

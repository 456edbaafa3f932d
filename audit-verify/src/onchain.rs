//! Mined nonces against the log: every transaction an EVM wallet of the log
//! has mined must be one the log shows prepared (and so signed through a
//! logged signing session).
//!
//! An EVM account's transactions are numbered by nonce: when the chain says
//! the wallet's address has mined N transactions, nonces 0..N were each
//! signed by the wallet's key. A nonce no `transaction_prepared` entry of
//! the log names is a signature made outside the log, which the signers'
//! log gate should have made impossible. Needs a bundle from the start of
//! the log (the keys' creation entries and every transaction).
//!
//! [`LoggedNonces`] reads the log (pure); [`query`] (feature `evm-rpc`) asks
//! the chains' nodes how many transactions each wallet mined.

use std::collections::{BTreeMap, BTreeSet};

use custos_audit::{Entry, EntryBody, ExportBundle};
use custos_chains::Address;
use custos_chains::evm::address::{address_from_sec1, parse_address};
use custos_chains::evm::tx::{decode_unsigned, signing_digest};
use custos_policy::ApprovalStatement;

use crate::VerifyError;

/// One wallet on one chain, as the chain and the log see it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WalletNonces {
    /// Chain name (as in the log).
    pub chain: String,
    /// Key id (wallet).
    pub key_id: String,
    /// `m` for the key's own address, else the derived path.
    pub path: String,
    /// The wallet's EVM address.
    pub address: String,
    /// Transactions the chain says the address mined.
    pub mined: u64,
    /// Mined nonces no logged transaction names.
    pub unlogged: Vec<u64>,
}

impl WalletNonces {
    /// [`VerifyError::SignedOutsideLog`] if some mined nonce is not in the log.
    pub fn outside_log(&self) -> Option<VerifyError> {
        (!self.unlogged.is_empty()).then(|| VerifyError::SignedOutsideLog {
            key_id: if self.path == "m" {
                self.key_id.clone()
            } else {
                format!("{} {}", self.key_id, self.path)
            },
            chain: self.chain.clone(),
            address: self.address.clone(),
            mined: self.mined,
            nonces: self.unlogged.clone(),
        })
    }
}

/// The EVM wallets of a log and the nonces of the transactions it prepared.
#[derive(Clone, Debug, Default)]
pub struct LoggedNonces {
    /// Each secp256k1 key's EVM addresses (`m` for its own, then each
    /// logged derived path), by key id.
    wallets: BTreeMap<String, BTreeMap<String, Address>>,
    /// Nonces of prepared transactions, by (chain, sending address).
    prepared: BTreeMap<(String, Address), BTreeSet<u64>>,
    /// Every chain a withdrawal names.
    chains: BTreeSet<String>,
}

/// A prepared transaction before its sender is known.
struct Prepared {
    withdrawal_id: String,
    chain: String,
    nonce: u64,
    digest: [u8; 32],
}

impl LoggedNonces {
    /// Reads the bundle's entries (not verified here: run the bundle
    /// verifier too).
    ///
    /// Each derived address has its own nonces. A prepared transaction
    /// counts for the address its logged signature recovers to (one of
    /// its key's addresses); without a logged signature (a coordinator
    /// stopped between signing and logging it), for the derived source its
    /// approvals name, else for the key's own address.
    ///
    /// # Errors
    ///
    /// [`VerifyError::NotFromStart`] if the bundle does not start at entry 0;
    /// [`VerifyError::EntryNotHex`] or [`VerifyError::EntryUndecodable`] for
    /// the first bad entry.
    pub fn from_bundle(bundle: &ExportBundle) -> Result<Self, VerifyError> {
        if bundle.start != 0 {
            return Err(VerifyError::NotFromStart {
                start: bundle.start,
            });
        }
        let mut out = LoggedNonces::default();
        let mut wallet_of: BTreeMap<String, String> = BTreeMap::new();
        let mut prepared: Vec<Prepared> = Vec::new();
        let mut signatures: BTreeMap<[u8; 32], Vec<Vec<u8>>> = BTreeMap::new();
        let mut approved_source: BTreeMap<String, Address> = BTreeMap::new();
        for (i, hex_entry) in (0u64..).zip(&bundle.entries) {
            let bytes =
                hex::decode(hex_entry).map_err(|_| VerifyError::EntryNotHex { entry: i })?;
            let entry = Entry::decode(&bytes)
                .map_err(|source| VerifyError::EntryUndecodable { entry: i, source })?;
            match entry.body {
                EntryBody::KeyCreated {
                    key_id,
                    scheme,
                    public_key,
                    ..
                } if scheme == "ecdsa-secp256k1" => {
                    if let Ok(a) = address_from_sec1(&public_key) {
                        out.wallets.entry(key_id).or_default().insert("m".into(), a);
                    }
                }
                EntryBody::AddressDerived {
                    key_id,
                    path,
                    address,
                    ..
                } => {
                    if let (Some(w), Ok(a)) =
                        (out.wallets.get_mut(&key_id), parse_address(&address))
                    {
                        w.insert(path, a);
                    }
                }
                EntryBody::WithdrawalRequested {
                    withdrawal_id,
                    key_id,
                    chain,
                    ..
                } => {
                    out.chains.insert(chain);
                    wallet_of.insert(withdrawal_id, key_id);
                }
                EntryBody::Approval {
                    withdrawal_id,
                    statement,
                    ..
                } => {
                    let source = ApprovalStatement::decode(&statement)
                        .ok()
                        .and_then(|s| s.source)
                        .and_then(|s| parse_address(&s.address).ok());
                    if let Some(a) = source {
                        approved_source.insert(withdrawal_id, a);
                    }
                }
                EntryBody::TransactionPrepared {
                    withdrawal_id,
                    chain,
                    unsigned_tx,
                } => {
                    let Ok(tx) = decode_unsigned(&unsigned_tx) else {
                        continue;
                    };
                    prepared.push(Prepared {
                        withdrawal_id,
                        chain,
                        nonce: tx.as_eip1559().nonce,
                        digest: signing_digest(&tx),
                    });
                }
                EntryBody::SignatureProduced {
                    message_digest,
                    signature,
                    ..
                } => signatures
                    .entry(message_digest)
                    .or_default()
                    .push(signature),
                _ => {}
            }
        }
        for p in prepared {
            let Some(own) = wallet_of
                .get(&p.withdrawal_id)
                .and_then(|k| out.wallets.get(k))
            else {
                continue;
            };
            let recovered = signatures
                .get(&p.digest)
                .into_iter()
                .flatten()
                .flat_map(|sig| senders(&p.digest, sig))
                .find(|a| own.values().any(|o| o == a));
            let sender = recovered
                .or_else(|| approved_source.get(&p.withdrawal_id).copied())
                .or_else(|| own.get("m").copied());
            if let Some(sender) = sender {
                out.prepared
                    .entry((p.chain, sender))
                    .or_default()
                    .insert(p.nonce);
            }
        }
        Ok(out)
    }

    /// The EVM addresses: key id, path (`m` for the key's own) and address.
    pub fn wallets(&self) -> impl Iterator<Item = (&str, &str, Address)> {
        self.wallets
            .iter()
            .flat_map(|(k, paths)| paths.iter().map(move |(p, a)| (k.as_str(), p.as_str(), *a)))
    }

    /// The log names a withdrawal on `chain` (a misspelt chain name would
    /// report every mined nonce as unlogged).
    ///
    /// # Errors
    ///
    /// [`VerifyError::UnknownChain`], listing the chains the log names.
    pub fn check_chain(&self, chain: &str) -> Result<(), VerifyError> {
        if self.chains.contains(chain) {
            return Ok(());
        }
        Err(VerifyError::UnknownChain {
            chain: chain.to_owned(),
            known: self.chains.iter().cloned().collect(),
        })
    }

    /// Compares `mined`, the number of transactions `address` (of
    /// `key_id`, at `path`) has mined on `chain`, with the transactions
    /// the log prepared from it.
    pub fn compare(
        &self,
        chain: &str,
        key_id: &str,
        path: &str,
        address: Address,
        mined: u64,
    ) -> WalletNonces {
        let have = self.prepared.get(&(chain.to_owned(), address));
        WalletNonces {
            chain: chain.to_owned(),
            key_id: key_id.to_owned(),
            path: path.to_owned(),
            address: format!("{address:#x}"),
            mined,
            unlogged: (0..mined)
                .filter(|n| !have.is_some_and(|h| h.contains(n)))
                .collect(),
        }
    }
}

/// The addresses a 64-byte ECDSA signature over `digest` recovers to
/// (one per recovery id).
fn senders(digest: &[u8; 32], signature: &[u8]) -> Vec<Address> {
    let Ok(sig) = k256::ecdsa::Signature::from_slice(signature.get(..64).unwrap_or(signature))
    else {
        return Vec::new();
    };
    (0u8..2)
        .filter_map(k256::ecdsa::RecoveryId::from_byte)
        .filter_map(|id| k256::ecdsa::VerifyingKey::recover_from_prehash(digest, &sig, id).ok())
        .filter_map(|k| address_from_sec1(k.to_encoded_point(true).as_bytes()).ok())
        .collect()
}

/// Asks each chain's node (`rpcs`: chain name and JSON-RPC URL) how many
/// transactions each EVM wallet of the bundle mined, and compares with the
/// transactions the log prepared.
///
/// # Errors
///
/// Those of [`LoggedNonces::from_bundle`] and [`LoggedNonces::check_chain`];
/// [`VerifyError::Rpc`] or [`VerifyError::RpcCall`] if a node cannot be asked.
#[cfg(feature = "evm-rpc")]
pub async fn query(
    bundle: &ExportBundle,
    rpcs: &[(String, String)],
) -> Result<Vec<WalletNonces>, VerifyError> {
    use custos_chains::evm::rpc::{BlockTag, EvmRpc, RpcConfig};

    let logged = LoggedNonces::from_bundle(bundle)?;
    for (chain, _) in rpcs {
        logged.check_chain(chain)?;
    }
    let mut out = Vec::new();
    for (chain, url) in rpcs {
        let rpc = EvmRpc::new(RpcConfig::new(url)).map_err(|source| VerifyError::Rpc {
            chain: chain.clone(),
            source: Box::new(source),
        })?;
        for (key_id, path, address) in logged.wallets() {
            let mined = rpc
                .transaction_count(address, BlockTag::Latest)
                .await
                .map_err(|source| VerifyError::RpcCall {
                    chain: chain.clone(),
                    address: format!("{address:#x}"),
                    source: Box::new(source),
                })?;
            out.push(logged.compare(chain, key_id, path, address, mined));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::chain_tx::tests::tx;

    const TO: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    /// A secp256k1 generator point, compressed (any valid SEC1 key will do).
    const KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    fn bundle(start: u64, bodies: Vec<EntryBody>) -> ExportBundle {
        ExportBundle {
            format: custos_audit::bundle::BUNDLE_FORMAT.into(),
            origin: "custos.test/log".into(),
            start,
            prefix: vec![],
            entries: (start..)
                .zip(bodies)
                .map(|(index, body)| {
                    hex::encode(
                        Entry {
                            index,
                            timestamp_ms: 1_700_000_000_000,
                            body,
                        }
                        .encode()
                        .unwrap(),
                    )
                })
                .collect(),
            leaf_hashes: vec![],
            checkpoints: vec![],
            consistency_proofs: vec![],
            context: vec![],
            policy_documents: BTreeMap::new(),
        }
    }

    fn log() -> Vec<EntryBody> {
        vec![
            EntryBody::KeyCreated {
                key_id: "w-eth".into(),
                scheme: "ecdsa-secp256k1".into(),
                public_key: hex::decode(KEY).unwrap(),
                threshold: 2,
                participants: vec!["signer-1".into(), "signer-2".into(), "signer-3".into()],
            },
            EntryBody::WithdrawalRequested {
                withdrawal_id: "wd-1".into(),
                key_id: "w-eth".into(),
                chain: "anvil".into(),
                asset: "ETH".into(),
                destination: TO.into(),
                amount: "1".into(),
                tx_digest: None,
                requested_by: "payments-backend".into(),
            },
            EntryBody::TransactionPrepared {
                withdrawal_id: "wd-1".into(),
                chain: "anvil".into(),
                unsigned_tx: tx(TO, 1, 1_000_000_000),
            },
        ]
    }

    #[test]
    fn a_mined_nonce_the_log_never_prepared_is_named() {
        let logged = LoggedNonces::from_bundle(&bundle(0, log())).unwrap();
        let (key_id, path, address) = logged.wallets().next().unwrap();
        assert_eq!((key_id, path), ("w-eth", "m"));
        // Nonce 0 is the logged transaction.
        let one = logged.compare("anvil", key_id, path, address, 1);
        assert_eq!(one.unlogged, Vec::<u64>::new());
        assert!(one.outside_log().is_none());
        // Nonces 1 and 2 were signed outside the log.
        let three = logged.compare("anvil", key_id, path, address, 3);
        assert_eq!(three.unlogged, vec![1, 2]);
        let e = three.outside_log().unwrap().to_string();
        assert!(
            e.starts_with("w-eth on anvil: 0x") && e.contains("nonce(s) [1, 2]"),
            "{e}"
        );
        // Another chain's nonces are not this chain's.
        assert_eq!(
            logged.compare("sepolia", key_id, path, address, 1).unlogged,
            vec![0]
        );
    }

    #[test]
    fn an_unknown_chain_or_a_partial_bundle_is_refused() {
        let logged = LoggedNonces::from_bundle(&bundle(0, log())).unwrap();
        logged.check_chain("anvil").unwrap();
        let e = logged.check_chain("ethereum").unwrap_err().to_string();
        assert!(e.contains("its chains: anvil"), "{e}");
        let e = LoggedNonces::from_bundle(&bundle(5, log()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("starts at entry 5"), "{e}");
    }

    /// A derived address has its own nonces: its transaction (found by the
    /// logged signature recovering to it) is not the master address's.
    #[test]
    fn a_derived_address_has_its_own_nonces() {
        use k256::ecdsa::SigningKey;
        let child = SigningKey::from_slice(&[2; 32]).unwrap();
        let child_address =
            address_from_sec1(child.verifying_key().to_encoded_point(true).as_bytes()).unwrap();
        let unsigned = tx(TO, 1, 1_000_000_000);
        let digest = signing_digest(&decode_unsigned(&unsigned).unwrap());
        let (sig, _) = child.sign_prehash_recoverable(&digest).unwrap();
        let mut entries = log();
        // The master's transaction is gone: only the derived one is logged.
        entries.truncate(2);
        entries.extend([
            EntryBody::AddressDerived {
                key_id: "w-eth".into(),
                chain: "anvil".into(),
                path: "m/0/7".into(),
                address: format!("{child_address:#x}"),
                public_key: vec![],
                chain_code: vec![],
                actor: "backend".into(),
            },
            EntryBody::TransactionPrepared {
                withdrawal_id: "wd-1".into(),
                chain: "anvil".into(),
                unsigned_tx: unsigned,
            },
            EntryBody::SignatureProduced {
                withdrawal_id: "wd-1".into(),
                key_id: "w-eth".into(),
                execution_id: vec![1],
                message_digest: digest,
                signature: sig.to_bytes().to_vec(),
            },
        ]);
        let logged = LoggedNonces::from_bundle(&bundle(0, entries)).unwrap();
        let wallets: Vec<_> = logged.wallets().collect();
        assert_eq!(wallets.len(), 2);
        let (_, _, master) = wallets[0];
        assert_eq!(wallets[1], ("w-eth", "m/0/7", child_address));
        assert!(
            logged
                .compare("anvil", "w-eth", "m/0/7", child_address, 1)
                .unlogged
                .is_empty()
        );
        // The master address's nonce 0 is not covered by the child's.
        let m = logged.compare("anvil", "w-eth", "m", master, 1);
        assert_eq!(m.unlogged, vec![0]);
        let derived = logged.compare("anvil", "w-eth", "m/0/7", child_address, 2);
        let e = derived.outside_log().unwrap().to_string();
        assert!(e.starts_with("w-eth m/0/7 on anvil"), "{e}");
    }
}

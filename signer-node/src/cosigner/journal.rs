//! The signer's own record of withdrawals: when it saw each quorum (its time
//! locks run from there), which it was told are cancelled, and what it signed
//! (velocity limits and replay refusal). Append-only JSON lines, fsync'd
//! before the signer acts on them; a torn last line from a crash is ignored.
//! It also keeps the sign counter of every passkey whose approvals this
//! signer accepted, so a counter that repeats or goes backwards is refused.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use custos_policy::{Amount, HistoryEntry, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// What this signer issued for a withdrawal.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignedRecord {
    /// Presignature consumed.
    pub presig_id: String,
    /// Digest signed, hex.
    pub digest: String,
    /// Statement hash verified, hex.
    pub statement_hash: String,
    /// The partial signature issued (public once sent), returned again on an
    /// identical retry so a coordinator crash mid-signing does not strand the
    /// withdrawal.
    pub partial: String,
    /// Velocity bookkeeping.
    pub wallet: String,
    /// Chain.
    pub chain: String,
    /// Asset.
    pub asset: String,
    /// Destination.
    pub destination: String,
    /// Initiator.
    pub initiator: String,
    /// Base units, decimal.
    pub amount: String,
    /// Fee cap in native base units, decimal (empty in older records).
    #[serde(default)]
    pub fee_cap: String,
    /// Unix seconds (this signer's clock) of the first signature of this
    /// withdrawal (velocity counts it from then).
    pub at: i64,
    /// The intent digest of the approved withdrawal, hex: a fee bump must be
    /// for the very same withdrawal.
    #[serde(default)]
    pub intent: String,
    /// The unsigned transaction signed, hex (empty for an intent digest): a
    /// fee bump must keep its transfer, nonce and gas limit.
    #[serde(default)]
    pub tx: String,
    /// The rule this signer found the withdrawal approved under: it decides
    /// whether a fee bump needs new approvals (empty in records written
    /// before this field existed: such bumps are refused, fail closed).
    #[serde(default)]
    pub rule_id: String,
    /// The input of `tx` this signature is for (0 for single-digest
    /// transactions; a UTXO spend of several coins has one record per input).
    #[serde(default)]
    pub input: u32,
}

/// A withdrawal this signer verified as authorised (quorum registered or
/// allowed): counted by velocity limits even when other signers sign it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Spend {
    /// Wallet.
    pub wallet: String,
    /// Chain.
    pub chain: String,
    /// Asset.
    pub asset: String,
    /// Destination.
    pub destination: String,
    /// Initiator.
    pub initiator: String,
    /// Base units, decimal.
    pub amount: String,
    /// Fee cap in the chain's native base units, decimal (empty in records
    /// written before fees counted).
    #[serde(default)]
    pub fee_cap: String,
    /// Unix seconds (this signer's clock).
    pub at: i64,
}

/// One journal line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Line {
    QuorumSeen {
        id: String,
        at: i64,
        statement_hash: String,
    },
    Cancelled {
        id: String,
        at: i64,
        by: String,
    },
    Authorized {
        id: String,
        spend: Box<Spend>,
    },
    Signed {
        id: String,
        record: Box<SignedRecord>,
    },
    /// A passkey assertion this signer accepted.
    PasskeySeen {
        /// Credential id, base64url.
        credential: String,
        counter: u32,
        /// SHA-256 of the assertion, hex.
        assertion: String,
    },
    /// A key this signer retired (the log's `key_retired` entry it
    /// witnessed) and what it destroyed of it.
    KeyRetired {
        key_id: String,
        retirement_index: u64,
        /// Unix seconds (this signer's clock).
        at: i64,
        shares: usize,
        presignatures: usize,
    },
}

/// One passkey use: credential id (base64url), sign counter, assertion digest (hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyUse {
    /// Credential id, base64url.
    pub credential: String,
    /// The sign counter the authenticator reported.
    pub counter: u32,
    /// SHA-256 of the assertion, hex.
    pub assertion: String,
}

/// Per credential: the highest counter accepted and every assertion accepted
/// (seeing one again is re-verification, not a replay).
type PasskeyIndex = HashMap<String, (u32, BTreeSet<String>)>;

/// What the journal knows of one withdrawal.
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// When this signer first verified the quorum, and over which statement.
    pub quorum_seen: Option<(i64, String)>,
    /// Who cancelled it.
    pub cancelled_by: Option<String>,
    /// What this signer signed for it last (a fee bump replaces the record).
    pub signed: Option<SignedRecord>,
    /// The records of the transaction signed last, by input: each input of
    /// one transaction is signed once (a fee bump starts a new set).
    pub inputs: BTreeMap<u32, SignedRecord>,
    /// How many transactions this signer signed for it (1 + fee bumps),
    /// whatever their number of inputs.
    pub signings: u32,
    /// Verified as authorised (velocity).
    pub authorized: Option<Spend>,
}

/// When a record becomes durable: at once, or at the caller's next
/// [`Journal::sync`] (a batch of records, one fsync).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync'd before the call returns.
    Now,
    /// Written; durable at the next [`Journal::sync`], which must come
    /// before anything is acted on.
    Deferred,
}

/// The journal file and its index.
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    index: Mutex<HashMap<String, Known>>,
    passkeys: Mutex<PasskeyIndex>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens (creating) `dir/withdrawals.log` and replays it.
    pub fn open(dir: &Path) -> Result<Self, NodeError> {
        let path = dir.join("withdrawals.log");
        let mut index: HashMap<String, Known> = HashMap::new();
        let mut passkeys = PasskeyIndex::new();
        if path.exists() {
            let f = File::open(&path).map_err(|e| NodeError::storage(&path, e))?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|e| NodeError::storage(&path, e))?;
                // A torn final line (crash mid-append) was never acted on.
                let Ok(l) = serde_json::from_str::<Line>(&line) else {
                    continue;
                };
                apply(&mut index, &mut passkeys, l);
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| NodeError::storage(&path, e))?;
        Ok(Self {
            path,
            file: Mutex::new(file),
            index: Mutex::new(index),
            passkeys: Mutex::new(passkeys),
        })
    }

    fn append(&self, l: Line) -> Result<(), NodeError> {
        self.write(l, Durability::Now)
    }

    /// Writes `l` and applies it to the index; with [`Durability::Deferred`] the
    /// caller makes it durable with [`Journal::sync`] before acting on it
    /// (several records, one fsync). Applying it at once keeps a batch's
    /// later checks (velocity, counters) aware of its earlier records.
    fn write(&self, l: Line, durability: Durability) -> Result<(), NodeError> {
        let mut bytes = serde_json::to_vec(&l).map_err(|e| NodeError::Internal(e.to_string()))?;
        bytes.push(b'\n');
        {
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            // A torn line left by a crash would glue onto ours: start fresh.
            f.write_all(b"\n")
                .and_then(|_| f.write_all(&bytes))
                .and_then(|_| match durability {
                    Durability::Now => f.sync_data(),
                    Durability::Deferred => Ok(()),
                })
                .map_err(|e| NodeError::storage(&self.path, e))?;
        }
        apply(
            &mut self.index.lock().unwrap_or_else(|p| p.into_inner()),
            &mut self.passkeys.lock().unwrap_or_else(|p| p.into_inner()),
            l,
        );
        Ok(())
    }

    /// Makes every record written so far durable.
    pub fn sync(&self) -> Result<(), NodeError> {
        self.file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync_data()
            .map_err(|e| NodeError::storage(&self.path, e))
    }

    /// Checks the passkey uses of one quorum against the counters this
    /// signer recorded, then records them: each credential's counter must be
    /// above the highest accepted before (or both 0), unless the very same
    /// assertion was accepted before. Nothing is recorded when one fails.
    pub fn passkeys_seen(&self, uses: &[PasskeyUse]) -> Result<(), String> {
        let mut fresh = Vec::new();
        {
            let index = self.passkeys.lock().unwrap_or_else(|p| p.into_inner());
            for u in uses {
                let (last, seen) = index
                    .get(&u.credential)
                    .map_or((0, None), |(c, s)| (*c, Some(s)));
                if seen.is_some_and(|s| s.contains(&u.assertion)) {
                    continue;
                }
                custos_policy::check_sign_counter(last, u.counter)
                    .map_err(|e| format!("passkey {}: {e}", u.credential))?;
                fresh.push(u.clone());
            }
        }
        for u in fresh {
            self.append(Line::PasskeySeen {
                credential: u.credential,
                counter: u.counter,
                assertion: u.assertion,
            })
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// What is known of a withdrawal.
    pub fn get(&self, id: &str) -> Known {
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Records when this signer first saw a valid quorum over
    /// `statement_hash` and returns that time. The time lock runs from it: a
    /// new statement under the same withdrawal id (other terms, another
    /// expiry) starts its own lock, so re-approving cannot inherit an older
    /// statement's elapsed time (docs/SECURITY.md case 29).
    pub fn quorum_seen(
        &self,
        id: &str,
        at: i64,
        statement_hash: &str,
        durability: Durability,
    ) -> Result<i64, NodeError> {
        if let Some((t, seen_hash)) = self.get(id).quorum_seen
            && seen_hash == statement_hash
        {
            return Ok(t);
        }
        self.write(
            Line::QuorumSeen {
                id: id.to_owned(),
                at,
                statement_hash: statement_hash.to_owned(),
            },
            durability,
        )?;
        Ok(at)
    }

    /// Records a withdrawal verified as authorised (once).
    pub fn authorized(
        &self,
        id: &str,
        spend: Spend,
        durability: Durability,
    ) -> Result<(), NodeError> {
        if self.get(id).authorized.is_some() {
            return Ok(());
        }
        self.write(
            Line::Authorized {
                id: id.to_owned(),
                spend: Box::new(spend),
            },
            durability,
        )
    }

    /// Records a cancellation.
    pub fn cancelled(&self, id: &str, at: i64, by: &str) -> Result<(), NodeError> {
        self.append(Line::Cancelled {
            id: id.to_owned(),
            at,
            by: by.to_owned(),
        })
    }

    /// Records a signature issued.
    pub fn signed(&self, id: &str, record: SignedRecord) -> Result<(), NodeError> {
        self.append(Line::Signed {
            id: id.to_owned(),
            record: Box::new(record),
        })
    }

    /// Records that this signer retired `key_id` (after `retirement_index`
    /// in the log) and destroyed `shares` share files and `presignatures`
    /// pool items of it.
    pub fn key_retired(
        &self,
        key_id: &str,
        retirement_index: u64,
        at: i64,
        shares: usize,
        presignatures: usize,
    ) -> Result<(), NodeError> {
        self.append(Line::KeyRetired {
            key_id: key_id.to_owned(),
            retirement_index,
            at,
            shares,
            presignatures,
        })
    }

    /// Every withdrawal this signer signed since `since` (velocity history),
    /// except `exclude`.
    pub fn history(&self, since: i64, exclude: &str) -> Vec<HistoryEntry> {
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(id, _)| id.as_str() != exclude)
            .filter_map(|(id, k)| {
                // Signed counts always; authorised counts unless cancelled.
                let s: Spend = match (&k.signed, &k.authorized) {
                    (Some(s), _) => Spend {
                        wallet: s.wallet.clone(),
                        chain: s.chain.clone(),
                        asset: s.asset.clone(),
                        destination: s.destination.clone(),
                        initiator: s.initiator.clone(),
                        amount: s.amount.clone(),
                        fee_cap: s.fee_cap.clone(),
                        at: s.at,
                    },
                    (None, Some(a)) if k.cancelled_by.is_none() => a.clone(),
                    _ => return None,
                };
                if s.at < since {
                    return None;
                }
                Some(HistoryEntry {
                    id: id.clone(),
                    wallet: s.wallet,
                    chain: s.chain,
                    asset: s.asset,
                    destination: s.destination,
                    initiator: s.initiator,
                    amount: Amount(s.amount.parse().ok()?),
                    fee_cap: Amount(s.fee_cap.parse().unwrap_or(0)),
                    at: Timestamp(s.at),
                })
            })
            .collect()
    }
}

fn apply(index: &mut HashMap<String, Known>, passkeys: &mut PasskeyIndex, l: Line) {
    match l {
        // The store's retirement record is what refuses the key.
        Line::KeyRetired { .. } => {}
        Line::PasskeySeen {
            credential,
            counter,
            assertion,
        } => {
            let e = passkeys.entry(credential).or_default();
            e.0 = e.0.max(counter);
            e.1.insert(assertion);
        }
        Line::QuorumSeen {
            id,
            at,
            statement_hash,
        } => {
            let k = index.entry(id).or_default();
            if k.quorum_seen
                .as_ref()
                .is_none_or(|(_, h)| *h != statement_hash)
            {
                k.quorum_seen = Some((at, statement_hash));
            }
        }
        Line::Cancelled { id, by, .. } => {
            index.entry(id).or_default().cancelled_by = Some(by);
        }
        Line::Authorized { id, spend } => {
            let k = index.entry(id).or_default();
            if k.authorized.is_none() {
                k.authorized = Some(*spend);
            }
        }
        Line::Signed { id, mut record } => {
            let k = index.entry(id).or_default();
            if let Some(first) = &k.signed {
                record.at = first.at;
            }
            let same_tx = k.signed.as_ref().is_some_and(|s| s.tx == record.tx);
            if !same_tx {
                k.signings = k.signings.saturating_add(1);
                k.inputs.clear();
            }
            k.inputs.insert(record.input, (*record).clone());
            k.signed = Some(*record);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn survives_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path()).unwrap();
            assert_eq!(
                j.quorum_seen("w1", 100, "aa", Durability::Now).unwrap(),
                100
            );
            assert_eq!(
                j.quorum_seen("w1", 200, "aa", Durability::Now).unwrap(),
                100
            );
            j.cancelled("w2", 150, "dave").unwrap();
        }
        // Simulate a crash mid-append.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("withdrawals.log"))
            .unwrap();
        f.write_all(b"{\"event\":\"signed\",\"id\":\"w3\",\"rec")
            .unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.get("w1").quorum_seen.map(|q| q.0), Some(100));
        assert_eq!(j.get("w2").cancelled_by.as_deref(), Some("dave"));
        assert!(j.get("w3").signed.is_none());
        j.quorum_seen("w4", 300, "bb", Durability::Now).unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.get("w4").quorum_seen.map(|q| q.0), Some(300));
    }

    /// Deferred records count at once for the checks that follow them, and
    /// one sync makes all of them durable.
    #[test]
    fn deferred_records_apply_at_once_and_survive_after_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path()).unwrap();
            for (i, id) in ["b1", "b2", "b3"].into_iter().enumerate() {
                let at = 100 + i64::try_from(i).unwrap();
                assert_eq!(
                    j.quorum_seen(id, at, "h", Durability::Deferred).unwrap(),
                    at
                );
            }
            // Seen again within the batch: the first time stands.
            assert_eq!(
                j.quorum_seen("b2", 500, "h", Durability::Deferred).unwrap(),
                101
            );
            j.sync().unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.get("b1").quorum_seen.map(|q| q.0), Some(100));
        assert_eq!(j.get("b3").quorum_seen.map(|q| q.0), Some(102));
        let lines = std::fs::read_to_string(dir.path().join("withdrawals.log")).unwrap();
        assert_eq!(lines.lines().filter(|l| !l.is_empty()).count(), 3);
    }

    fn pk(credential: &str, counter: u32, assertion: &str) -> PasskeyUse {
        PasskeyUse {
            credential: credential.into(),
            counter,
            assertion: assertion.into(),
        }
    }

    /// Passkey counters must grow per credential, across a reopen; the same
    /// assertion seen again (quorum registration, then signing) is accepted;
    /// a failing quorum records nothing.
    #[test]
    fn passkey_counters_grow_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path()).unwrap();
            j.passkeys_seen(&[pk("a", 5, "x1"), pk("b", 1, "y1")])
                .unwrap();
            j.passkeys_seen(&[pk("a", 5, "x1")]).unwrap();
            let e = j.passkeys_seen(&[pk("a", 5, "x2")]).unwrap_err();
            assert!(
                e.contains("sign counter 5 is not above the last one seen (5)"),
                "{e}"
            );
            // b's counter would be fine, a's is not: b is not recorded.
            assert!(
                j.passkeys_seen(&[pk("b", 2, "y2"), pk("a", 4, "x3")])
                    .is_err()
            );
        }
        let j = Journal::open(dir.path()).unwrap();
        assert!(j.passkeys_seen(&[pk("a", 3, "x4")]).is_err());
        assert!(j.passkeys_seen(&[pk("a", 5, "x1")]).is_ok());
        j.passkeys_seen(&[pk("b", 2, "y2"), pk("a", 6, "x5")])
            .unwrap();
        // Authenticators without a counter report 0 every time.
        j.passkeys_seen(&[pk("c", 0, "z1")]).unwrap();
        j.passkeys_seen(&[pk("c", 0, "z2")]).unwrap();
    }

    fn record(tx: &str, input: u32, at: i64) -> SignedRecord {
        SignedRecord {
            presig_id: format!("p-{tx}-{input}"),
            digest: format!("d-{tx}-{input}"),
            statement_hash: "s".into(),
            partial: "00".into(),
            wallet: "w".into(),
            chain: "litecoin-regtest".into(),
            asset: "LTC".into(),
            destination: "d".into(),
            initiator: "i".into(),
            amount: "1".into(),
            fee_cap: "1".into(),
            at,
            intent: "i".into(),
            tx: tx.into(),
            rule_id: "r".into(),
            input,
        }
    }

    /// The inputs of one transaction are one signing (the fee-bump count is
    /// of transactions), each input recorded once, and a new transaction
    /// starts a new set; all of it survives a reopen.
    #[test]
    fn inputs_of_one_transaction_count_as_one_signing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path()).unwrap();
            j.signed("w", record("aa", 0, 10)).unwrap();
            j.signed("w", record("aa", 1, 20)).unwrap();
            let k = j.get("w");
            assert_eq!(k.signings, 1);
            assert_eq!(k.inputs.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
            assert_eq!(k.inputs[&1].at, 10, "velocity counts from the first");
            j.signed("w", record("bb", 0, 30)).unwrap();
        }
        let k = Journal::open(dir.path()).unwrap().get("w");
        assert_eq!(k.signings, 2);
        assert_eq!(k.inputs.len(), 1);
        assert_eq!(k.inputs[&0].tx, "bb");
    }
}

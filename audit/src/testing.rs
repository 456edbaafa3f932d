//! Test helpers for [`LogStore`] backends (feature `testing`).
//!
//! The coordinator's SQLite and PostgreSQL stores run the same contract and
//! tamper scenarios as [`crate::MemoryStore`]:
//!
//! ```ignore
//! custos_audit::testing::store_conformance(SqliteLogStore::open(tmp)?)?;
//! custos_audit::testing::edited_entry_is_named(store, |s, idx, bytes| {
//!     // UPDATE audit_entries SET bytes = ? WHERE idx = ?  (behind the log's back)
//! })?;
//! ```
//!
//! Every helper returns `Err(description)` instead of panicking so it can be
//! used from any test harness.

use ed25519_dalek::{Signer, SigningKey};

use crate::bundle::{FailureKind, TrustRoots, verify_bundle};
use crate::entry::{AdminSignature, DecisionOutcome, Entry, EntryBody, MembershipAction, Verdict};
use crate::hash::{leaf_hash, root_from_leaf_hashes};
use crate::note::{SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_ED25519, VerifierKey};
use crate::replay::RequireSatisfiedDecision;
use crate::store::{AppendBatch, LogStore};
use crate::{AuditError, Log, LogSigner, SignatureAlgorithm, Witness};

/// Origin of the logs the helpers build.
pub const ORIGIN: &str = "custos.test/log";
/// The timestamp (ms) the helpers' logs start at.
pub const T0: u64 = 1_764_072_000_000;

/// A software Ed25519 [`LogSigner`] from a fixed seed. Tests only: the key is
/// derived from one byte.
pub struct TestSigner(SigningKey);

impl TestSigner {
    /// The key whose 32 seed bytes are all `seed`.
    pub fn from_seed(seed: u8) -> Self {
        Self(SigningKey::from_bytes(&[seed; 32]))
    }
}

impl std::fmt::Debug for TestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestSigner(<redacted>)")
    }
}

impl LogSigner for TestSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::Ed25519
    }
    fn public_key(&self) -> Vec<u8> {
        self.0.verifying_key().to_bytes().to_vec()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuditError> {
        Ok(self.0.sign(message).to_bytes().to_vec())
    }
}

fn h(tag: &str) -> [u8; 32] {
    leaf_hash(tag.as_bytes())
}

/// Membership, key creation and the policy activation a log starts with.
pub fn sample_genesis() -> Vec<EntryBody> {
    let admin = vec![AdminSignature {
        admin_id: "admin-1".into(),
        signature: vec![9; 64],
    }];
    vec![
        EntryBody::MembershipChanged {
            node_id: "signer-1".into(),
            action: MembershipAction::Joined,
            public_key: vec![1; 32],
            admin_signatures: admin.clone(),
        },
        EntryBody::KeyCreated {
            key_id: "key-1".into(),
            scheme: "ecdsa-secp256k1".into(),
            participants: vec!["signer-1".into(), "signer-2".into(), "signer-3".into()],
            threshold: 2,
            public_key: vec![2; 33],
        },
        EntryBody::PolicyActivated {
            policy_hash: h("policy-v1"),
            policy_version: 1,
            admin_signatures: admin,
        },
    ]
}

/// The entries of one withdrawal authorised by `approvals` approvals (0:
/// allowed outright), from request to broadcast.
pub fn sample_withdrawal(n: u64, approvals: u16) -> Vec<EntryBody> {
    let id = format!("wd-{n}");
    let digest = h(&format!("tx-{n}"));
    let exec = format!("exec-{n}").into_bytes();
    let mut v = vec![
        EntryBody::WithdrawalRequested {
            withdrawal_id: id.clone(),
            key_id: "key-1".into(),
            chain: "eip155:1".into(),
            asset: "ETH".into(),
            destination: "0x00000000000000000000000000000000000000aa".into(),
            amount: format!("{}", 1_000_000_000_000_000_000u128 + u128::from(n)),
            tx_digest: Some(digest),
            requested_by: "backend".into(),
        },
        EntryBody::RiskScored {
            withdrawal_id: id.clone(),
            provider: "risk".into(),
            score: 7,
            details_hash: h("risk"),
        },
        EntryBody::PolicyDecision {
            withdrawal_id: id.clone(),
            policy_hash: h("policy-v1"),
            rule_id: "large-eth".into(),
            outcome: if approvals == 0 {
                DecisionOutcome::Allow
            } else {
                DecisionOutcome::RequireApprovals { quorum: approvals }
            },
            explanation_hash: h("why"),
        },
    ];
    for a in 0..approvals {
        v.push(EntryBody::Approval {
            withdrawal_id: id.clone(),
            approver_id: format!("approver-{a}"),
            verdict: Verdict::Approve,
            statement: format!("statement {n}").into_bytes(),
            signature: vec![a as u8; 64],
        });
    }
    v.push(EntryBody::SigningSession {
        withdrawal_id: id.clone(),
        key_id: "key-1".into(),
        execution_id: exec.clone(),
        participants: vec!["signer-1".into(), "signer-2".into()],
        presignature_id: Some(format!("presig-{n}")),
        message_digest: digest,
    });
    v.push(EntryBody::SignatureProduced {
        withdrawal_id: id.clone(),
        key_id: "key-1".into(),
        execution_id: exec,
        message_digest: digest,
        signature: vec![0x30; 64],
    });
    v.push(EntryBody::TransactionBroadcast {
        withdrawal_id: id,
        chain: "eip155:1".into(),
        txid: format!("0x{n:064x}"),
    });
    v
}

/// The verifier key of [`TestSigner::from_seed(1)`](TestSigner::from_seed),
/// the log key the helpers sign checkpoints with.
pub fn log_key() -> Result<VerifierKey, String> {
    VerifierKey::from_signer(ORIGIN, SIG_TYPE_ED25519, &TestSigner::from_seed(1))
        .map_err(|e| e.to_string())
}

/// A fresh witness (`witness.custos.test`, key seed 11) of the helpers' log,
/// trusting on first use.
pub fn witness() -> Result<Witness<TestSigner>, String> {
    Witness::new(
        "witness.custos.test",
        TestSigner::from_seed(11),
        ORIGIN,
        log_key()?,
        None,
    )
    .map_err(|e| e.to_string())
}

/// What an auditor trusts for the helpers' logs: [`log_key`] and the
/// [`witness`]'s key, quorum 1.
pub fn trust() -> Result<TrustRoots, String> {
    let w = VerifierKey::from_signer(
        "witness.custos.test",
        SIG_TYPE_COSIGNATURE_V1,
        &TestSigner::from_seed(11),
    )
    .map_err(|e| e.to_string())?;
    Ok(TrustRoots {
        log_key: log_key()?,
        witness_keys: vec![w],
        witness_quorum: 1,
    })
}

fn e<T>(r: Result<T, AuditError>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn ensure(cond: bool, what: &str) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what.to_owned()) }
}

/// Signs and co-signs a checkpoint of the current tree.
fn checkpoint<S: LogStore>(
    log: &mut Log<S>,
    w: &mut Witness<TestSigner>,
) -> Result<String, String> {
    let note = e(log.checkpoint(&TestSigner::from_seed(1), T0 + log.size()))?;
    let from = w.last().map_or(0, |c| c.size);
    let proof = e(log.consistency_proof(from, log.size()))?;
    let line = e(w.cosign(&note, &proof, T0 / 1000))?;
    e(log.add_cosignatures(log.size(), &[line]))
}

/// Fills `store` (which must be empty) with a realistic log: genesis and
/// `withdrawals` withdrawals, checkpointed and co-signed after each one.
pub fn populate<S: LogStore>(
    store: S,
    withdrawals: u64,
) -> Result<(Log<S>, Witness<TestSigner>), String> {
    let mut log = e(Log::open(store, ORIGIN))?;
    ensure(log.size() == 0, "store is not empty")?;
    let mut w = witness()?;
    e(log.append_batch(sample_genesis().into_iter().map(|b| (T0, b)).collect()))?;
    checkpoint(&mut log, &mut w)?;
    for n in 0..withdrawals {
        for b in sample_withdrawal(n, (n % 3) as u16) {
            e(log.append(T0 + n, b))?;
        }
        checkpoint(&mut log, &mut w)?;
    }
    Ok((log, w))
}

/// The [`LogStore`] contract, checked on an empty store: appends and reads,
/// leaf and interior nodes, atomic rejection of a conflicting batch,
/// checkpoint storage, reopening, and an export that verifies. Returns the
/// populated store.
pub fn store_conformance<S: LogStore>(store: S) -> Result<S, String> {
    ensure(e(store.size())? == 0, "a new store has size 0")?;
    ensure(e(store.entry(0))?.is_none(), "entry 0 of an empty store")?;
    ensure(
        e(store.node(0, 0))?.is_none(),
        "node (0, 0) of an empty store",
    )?;
    ensure(
        e(store.latest_checkpoint())?.is_none(),
        "checkpoint of an empty store",
    )?;
    let (log, _) = populate(store, 7)?;
    let n = log.size();
    let store = log.into_store();
    ensure(e(store.size())? == n, "store size after appends")?;
    let mut leaves = Vec::new();
    for i in 0..n {
        let bytes = e(store.entry(i))?.ok_or(format!("entry {i} missing"))?;
        let entry = e(Entry::decode(&bytes))?;
        ensure(
            entry.index == i,
            &format!("entry {i} has index {}", entry.index),
        )?;
        let leaf = e(store.node(0, i))?.ok_or(format!("leaf {i} missing"))?;
        ensure(leaf == leaf_hash(&bytes), &format!("leaf hash {i}"))?;
        leaves.push(leaf);
    }
    ensure(e(store.entry(n))?.is_none(), "entry past the end")?;
    // A batch that does not start at the current size changes nothing.
    let stale = [vec![1u8]];
    let nodes = [(0u8, n - 1, leaf_hash(&stale[0]))];
    let mut store = store;
    match store.append(&AppendBatch {
        first_index: n - 1,
        entries: &stale,
        nodes: &nodes,
    }) {
        Err(AuditError::AppendConflict { .. }) => {}
        other => {
            return Err(format!(
                "stale append must be an AppendConflict, got {other:?}"
            ));
        }
    }
    ensure(e(store.size())? == n, "size after a refused append")?;
    // Checkpoints: ascending, latest last, bounded queries.
    let cps = e(store.checkpoints(0, n))?;
    ensure(
        cps.len() == 8,
        &format!("expected 8 checkpoints, got {}", cps.len()),
    )?;
    ensure(
        cps.windows(2).all(|w| w[0].0 < w[1].0),
        "checkpoints ascending by size",
    )?;
    ensure(
        e(store.latest_checkpoint())?.map(|c| c.0) == Some(n),
        "latest checkpoint",
    )?;
    ensure(
        e(store.checkpoints(cps[2].0, cps[4].0))?.len() == 3,
        "checkpoint range is inclusive",
    )?;
    ensure(
        e(store.checkpoints(n, 0))?.is_empty(),
        "empty checkpoint range",
    )?;
    // Reopening reads the head from the stored nodes.
    let log = e(Log::open(store, ORIGIN))?;
    ensure(
        log.root() == root_from_leaf_hashes(&leaves),
        "root after reopening",
    )?;
    for size in [1, n / 2, n] {
        let want = root_from_leaf_hashes(&leaves[..size as usize]);
        ensure(e(log.root_at(size))? == want, &format!("root at {size}"))?;
    }
    let report = verify_bundle(
        &e(log.export(0, n, None))?,
        &trust()?,
        None,
        &RequireSatisfiedDecision,
    );
    ensure(
        report.is_ok(),
        &format!("export does not verify: {:?}", report.first_failure()),
    )?;
    Ok(log.into_store())
}

/// docs/SECURITY.md case 19 on a real backend: `edit(store, index, bytes)` must
/// overwrite the stored entry `index` with `bytes` behind the log's back; the
/// verifier must then name exactly that entry.
pub fn edited_entry_is_named<S: LogStore>(
    store: S,
    edit: impl FnOnce(&mut S, u64, Vec<u8>) -> Result<(), String>,
) -> Result<(), String> {
    let (log, _) = populate(store, 4)?;
    let victim = log.size() / 2;
    let mut entry = e(Entry::decode(&e(log.entry(victim))?))?;
    entry.timestamp_ms += 1;
    let mut store = log.into_store();
    edit(&mut store, victim, e(entry.encode())?)?;
    let log = e(Log::open(store, ORIGIN))?;
    let report = verify_bundle(
        &e(log.export(0, log.size(), None))?,
        &trust()?,
        None,
        &RequireSatisfiedDecision,
    );
    match report.first_failure() {
        Some(f) if f.entry == Some(victim) && f.kind == FailureKind::EntryMismatch => Ok(()),
        other => Err(format!(
            "expected entry {victim} to be named, got {other:?}"
        )),
    }
}

/// docs/SECURITY.md cases 19 and 20 on a real backend: `truncate(store, size)`
/// must delete entries from `size` on and the tree nodes covering them. The
/// verifier, given the auditor's previous checkpoint, must name the missing
/// entry; the witness must refuse the checkpoint of the rewritten log (split
/// view) and any growth from it.
pub fn truncation_is_detected<S: LogStore>(
    store: S,
    truncate: impl FnOnce(&mut S, u64) -> Result<(), String>,
) -> Result<(), String> {
    let (log, mut w) = populate(store, 4)?;
    let n = log.size();
    let previous = e(log.latest_checkpoint())?.ok_or("no checkpoint")?;
    let mut store = log.into_store();
    truncate(&mut store, n - 1)?;
    let mut log = e(Log::open(store, ORIGIN))?;
    ensure(log.size() == n - 1, "truncation did not shrink the log")?;
    let report = verify_bundle(
        &e(log.export(0, n - 1, None))?,
        &trust()?,
        Some(&previous),
        &RequireSatisfiedDecision,
    );
    ensure(
        report
            .failures
            .iter()
            .any(|f| f.kind == FailureKind::EntryMissing && f.entry == Some(n - 1)),
        &format!("truncation not named: {:?}", report.failures),
    )?;
    ensure(
        report.first_failure().and_then(|f| f.entry) == Some(n - 1),
        "first bad entry after truncation",
    )?;
    // The operator rewrites the tail and asks the witness to co-sign.
    e(log.append(
        T0,
        EntryBody::Cancelled {
            withdrawal_id: "wd-3".into(),
            cancelled_by: "m".into(),
            reason: "".into(),
        },
    ))?;
    let forged = e(log.checkpoint(&TestSigner::from_seed(1), T0))?;
    match w.cosign(&forged, &[], T0 / 1000) {
        Err(AuditError::SplitView { .. }) => {}
        other => return Err(format!("witness must refuse a split view, got {other:?}")),
    }
    e(log.append(
        T0,
        EntryBody::Cancelled {
            withdrawal_id: "wd-3".into(),
            cancelled_by: "m".into(),
            reason: "".into(),
        },
    ))?;
    let grown = e(log.checkpoint(&TestSigner::from_seed(1), T0))?;
    let proof = e(log.consistency_proof(n, log.size()))?;
    ensure(
        w.cosign(&grown, &proof, T0 / 1000).is_err(),
        "witness co-signed growth from a rewritten log",
    )?;
    ensure(w.last().map(|c| c.size) == Some(n), "witness state moved")
}

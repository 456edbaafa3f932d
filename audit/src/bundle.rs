//! Export bundles and the offline verifier.
//!
//! A bundle is JSON: the entries of a range, the leaf hashes the log stored
//! for them, the perfect-subtree hashes summarising the entries before the
//! range, every checkpoint (with cosignatures) in the range, and optionally a
//! consistency proof connecting an auditor's older checkpoint. Nothing in it is
//! trusted: only checkpoints signed by the log key and co-signed by a quorum
//! of witnesses anchor the verification.
//!
//! # Locating tampering
//!
//! The stored leaf hashes come from the tree table, not the entries table.
//! When they reproduce every checkpoint root they are authentic (SHA-256
//! collision resistance), and each entry is compared with its own leaf hash,
//! so an edited, removed, reordered or inserted entry is named exactly. If the
//! tree table was altered too, the verifier falls back to the first checkpoint
//! whose root no longer matches and to each entry's own `index` field.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::deposits::{DepositReplay, DepositSummary};
use crate::entry::{Entry, EntryBody};
use crate::hash::{Hash, leaf_hash};
use crate::note::{VerifiedCheckpoint, VerifierKey};
use crate::proof::verify_consistency;
use crate::refusal::Refusal;
use crate::replay::{AuthorizationReplay, ReplayContext};
use crate::tree::CompactRange;

/// Value of [`ExportBundle::format`].
pub const BUNDLE_FORMAT: &str = "custos-audit-bundle/v1";

/// A consistency proof shipped in a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyRecord {
    /// Older tree size.
    pub from_size: u64,
    /// Newer tree size (a checkpoint in the bundle).
    pub to_size: u64,
    /// Proof hashes, hex.
    pub proof: Vec<String>,
}

/// An entry from before the range that the replay needs (the policy bundle
/// in force, earlier entries of withdrawals still open), with an inclusion
/// proof to a checkpoint in the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextEntry {
    /// Entry index.
    pub index: u64,
    /// Canonical encoding, hex.
    pub entry: String,
    /// Size of the checkpoint the proof is for.
    pub tree_size: u64,
    /// Inclusion proof, hex.
    pub proof: Vec<String>,
}

/// Entries and checkpoints of a range of the log, for offline verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportBundle {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// Log origin.
    pub origin: String,
    /// Index of the first entry.
    pub start: u64,
    /// Perfect-subtree hashes covering `[0, start)`, largest first, hex.
    pub prefix: Vec<String>,
    /// Canonical entry encodings, hex.
    pub entries: Vec<String>,
    /// Leaf hashes from the log's tree storage, hex (may be empty).
    #[serde(default)]
    pub leaf_hashes: Vec<String>,
    /// Signed checkpoint notes, ascending by size.
    pub checkpoints: Vec<String>,
    /// Proofs connecting older checkpoints to ones in this bundle.
    #[serde(default)]
    pub consistency_proofs: Vec<ConsistencyRecord>,
    /// Earlier entries the replay needs, ascending by index.
    #[serde(default)]
    pub context: Vec<ContextEntry>,
    /// Policy bundle documents by lowercase hex hash, for full replay.
    #[serde(default)]
    pub policy_documents: BTreeMap<String, String>,
}

/// What the auditor trusts.
#[derive(Clone, Debug)]
pub struct TrustRoots {
    /// The log's checkpoint key.
    pub log_key: VerifierKey,
    /// Witness keys (cosignature/v1).
    pub witness_keys: Vec<VerifierKey>,
    /// Distinct valid cosignatures each checkpoint needs.
    pub witness_quorum: usize,
}

/// Kind of a verification failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The bundle itself is unusable (format, hex, prefix).
    Bundle,
    /// A checkpoint is malformed or not signed by the log key.
    CheckpointSignature,
    /// No checkpoint in the bundle has the witness quorum.
    WitnessQuorum,
    /// Two checkpoints of one size with different roots, or out of order.
    SplitView,
    /// An entry differs from the one the log committed to.
    EntryMismatch,
    /// A committed entry is missing from the bundle (removed or truncated).
    EntryMissing,
    /// An entry is in the bundle that the log never committed to.
    EntryUnexpected,
    /// An entry cannot be decoded.
    EntryMalformed,
    /// An entry's own index field is not its position.
    EntryIndex,
    /// Entries not covered by any checkpoint in the bundle.
    Uncovered,
    /// The auditor's previous checkpoint is not consistent with the bundle.
    PreviousCheckpoint,
    /// A signature entry without a satisfied authorisation.
    Unauthorized,
    /// A signer's refusal whose signature does not verify under the
    /// witness key of the signer it names.
    RefusalSignature,
    /// A signing session with a key after the entry that retired it.
    RetiredKeyUsed,
    /// Two derived-address entries disagree: one wallet path with two
    /// addresses, one address with two owners, or one wallet with two
    /// chain codes.
    AddressConflict,
    /// A deposit credited twice without a reversal, credited to a wallet
    /// other than its address's, or a reversal that matches no credit.
    DepositMismatch,
}

/// A signer's refusal found in the log (kind 18), its signature checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoggedRefusal {
    /// Entry index.
    pub entry: u64,
    /// Withdrawal refused (empty if the request was undecodable).
    pub withdrawal_id: String,
    /// The refusing signer.
    pub signer: String,
    /// What was refused.
    pub request: String,
    /// The signer's reason.
    pub reason: String,
    /// The signer's clock, Unix ms.
    pub refused_at_ms: u64,
}

/// A checkpoint the log key signed that fewer witnesses than the quorum
/// co-signed, and that a later checkpoint with the quorum supersedes: its
/// root matches the entries the witnessed checkpoints commit to. Not a
/// failure (the coordinator stopped, or a witness was down, before the
/// round finished), but nothing rests on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Size of the unwitnessed checkpoint.
    pub checkpoint_size: u64,
    /// Its valid witness cosignatures.
    pub cosignatures: usize,
    /// Size of the first witnessed checkpoint at or after it.
    pub superseded_by: u64,
    /// Human explanation.
    pub message: String,
}

/// A share backup exported to a recovery key (kind 19).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoggedShareExport {
    /// Entry index.
    pub entry: u64,
    /// Key whose share was exported.
    pub key_id: String,
    /// The signer that exported it.
    pub signer: String,
    /// SHA-256 of the recovery key's public key, hex.
    pub recipient_fingerprint: String,
    /// SHA-256 of the backup's ciphertext, hex.
    pub backup_hash: String,
    /// The admin client that asked.
    pub actor: String,
}

/// A key retired (kind 22), with what the log says happened around it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoggedRetirement {
    /// Entry index of the retirement.
    pub entry: u64,
    /// Its time, Unix ms (the coordinator's clock).
    pub retired_at_ms: u64,
    /// The retired key.
    pub key_id: String,
    /// The key that took over its balances (empty: none).
    pub successor: String,
    /// The admin client that asked.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Signers whose share destruction the log records (kind 23), in order.
    pub shares_destroyed_by: Vec<String>,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The first entry concerned, if the problem is located at an entry.
    pub entry: Option<u64>,
    /// What kind of problem.
    pub kind: FailureKind,
    /// Human explanation.
    pub message: String,
}

/// The verifier's findings.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Log origin.
    pub origin: String,
    /// First entry index in the bundle.
    pub start: u64,
    /// One past the last entry index in the bundle.
    pub end: u64,
    /// Checkpoints whose log signature and witness quorum verified.
    pub checkpoints_verified: usize,
    /// Sizes of checkpoints signed by the log key but co-signed by fewer
    /// witnesses than the quorum (a witness was down or slow that round).
    /// Their roots are still checked against the entries, so a forked one
    /// is caught, but nothing is taken as proven by them: coverage, the
    /// latest size, context proofs and the previous checkpoint rest on the
    /// checkpoints with the quorum.
    pub checkpoints_below_quorum: Vec<u64>,
    /// Size of the largest verified checkpoint.
    pub latest_size: Option<u64>,
    /// Its root, hex.
    pub latest_root: Option<String>,
    /// Count of entries by kind.
    pub entry_kinds: BTreeMap<String, u64>,
    /// Signature entries whose authorisation was replayed successfully.
    pub signatures_authorised: u64,
    /// Signing-session entries whose authorisation was replayed
    /// successfully. Signers release partials only for sessions in the log,
    /// so a session is where any signature, logged or not, can come from.
    pub signing_sessions_authorised: u64,
    /// Refusals signers signed and the log carries: requests for what the
    /// policy forbids. Not failures (each one is a signature that does not
    /// exist), but each is something the coordinator asked for.
    pub refusals: Vec<LoggedRefusal>,
    /// Unwitnessed checkpoints superseded by witnessed ones (see
    /// [`Warning`]). An unwitnessed checkpoint that is the latest is not a
    /// warning but a failure: the entries only it covers (the unwitnessed
    /// tail) are reported as [`FailureKind::Uncovered`], naming it, while
    /// the witnessed prefix is verified as usual. One that disagrees with
    /// the entries is a [`FailureKind::SplitView`].
    pub warnings: Vec<Warning>,
    /// Share backups exported to a recovery key (kind 19): each is a copy
    /// of a share outside its signer, so an auditor sees every one.
    pub share_exports: Vec<LoggedShareExport>,
    /// Keys retired (kind 22), with the signers that destroyed their
    /// shares (kind 23). A signing session with a retired key after its
    /// retirement is a [`FailureKind::RetiredKeyUsed`] failure.
    pub retirements: Vec<LoggedRetirement>,
    /// Deposit addresses derived and deposits credited or reversed
    /// (kinds 24–26), checked by [`crate::deposits`].
    pub deposits: DepositSummary,
    /// Everything wrong, in discovery order.
    pub failures: Vec<Failure>,
}

impl Report {
    /// No failures.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failure at the lowest entry index, else the first failure.
    /// Entries merely not covered by a checkpoint rank after entries shown
    /// to be bad: after a truncation, the missing entry is the news.
    pub fn first_failure(&self) -> Option<&Failure> {
        let located = |uncovered: bool| {
            self.failures
                .iter()
                .filter(move |f| {
                    f.entry.is_some() && (f.kind == FailureKind::Uncovered) == uncovered
                })
                .min_by_key(|f| f.entry)
        };
        located(false)
            .or_else(|| located(true))
            .or(self.failures.first())
    }

    /// Adds a failure (checks outside this crate, such as the auditor's
    /// re-derivation of addresses, report into the same list).
    pub fn fail(&mut self, entry: Option<u64>, kind: FailureKind, message: impl Into<String>) {
        self.failures.push(Failure {
            entry,
            kind,
            message: message.into(),
        });
    }
}

fn hex_hash(s: &str) -> Option<Hash> {
    hex::decode(s).ok()?.try_into().ok()
}

/// Roots at `sizes` (each in `[start, start + leaves.len()]`) of the tree
/// continuing `prefix` with `leaves`.
fn roots_at(prefix: &CompactRange, leaves: &[Hash], sizes: &[u64]) -> BTreeMap<u64, Hash> {
    let mut out = BTreeMap::new();
    let mut wanted: Vec<u64> = sizes.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut cr = prefix.clone();
    let mut w = wanted.into_iter().peekable();
    while let Some(&s) = w.peek() {
        if s < cr.size() {
            w.next();
            continue;
        }
        if s == cr.size() {
            out.insert(s, cr.root());
            w.next();
            continue;
        }
        let Some(leaf) = usize::try_from(cr.size() - prefix.size())
            .ok()
            .and_then(|i| leaves.get(i))
        else {
            break;
        };
        cr.push(*leaf);
    }
    out
}

/// Verifies a bundle offline. `previous` is the auditor's last checkpoint
/// note, if any. Never panics on hostile input; every problem lands in the
/// report, the first bad entry in [`Report::first_failure`].
pub fn verify_bundle(
    bundle: &ExportBundle,
    trust: &TrustRoots,
    previous: Option<&str>,
    replay: &dyn AuthorizationReplay,
) -> Report {
    let mut report = Report {
        origin: bundle.origin.clone(),
        start: bundle.start,
        ..Report::default()
    };
    if bundle.format != BUNDLE_FORMAT {
        report.fail(
            None,
            FailureKind::Bundle,
            format!("unknown bundle format {:?}", bundle.format),
        );
        return report;
    }
    let start = bundle.start;
    let Some(end) = start.checked_add(bundle.entries.len() as u64) else {
        report.fail(None, FailureKind::Bundle, "entry range overflows");
        return report;
    };
    report.end = end;
    // The log signs checkpoints under a key named after its origin; a bundle
    // claiming another origin is for another log, whatever it carries.
    if bundle.origin != trust.log_key.name() {
        report.fail(
            None,
            FailureKind::Bundle,
            format!(
                "bundle is for log {:?} but the log key is {:?}",
                bundle.origin,
                trust.log_key.name()
            ),
        );
        return report;
    }
    let prefix_hashes: Option<Vec<Hash>> = bundle.prefix.iter().map(|h| hex_hash(h)).collect();
    let prefix = match prefix_hashes.map(|p| CompactRange::from_parts(start, &p)) {
        Some(Ok(p)) => p,
        _ => {
            report.fail(
                Some(start),
                FailureKind::Bundle,
                "prefix hashes do not summarise the entries before the range",
            );
            return report;
        }
    };

    // Entries: raw bytes and their leaf hashes.
    let mut raw: Vec<Vec<u8>> = Vec::with_capacity(bundle.entries.len());
    for (i, e) in bundle.entries.iter().enumerate() {
        raw.push(hex::decode(e).unwrap_or_else(|_| {
            report.fail(
                Some(start + i as u64),
                FailureKind::EntryMalformed,
                "entry is not hex",
            );
            Vec::new()
        }));
    }
    let computed: Vec<Hash> = raw.iter().map(|r| leaf_hash(r)).collect();

    // Checkpoints: log signature, origin, witness quorum, ordering.
    // Every checkpoint signed by the log key (`signed`) is checked against
    // the entries; only those with the witness quorum (`cps`) are relied on.
    let mut signed: Vec<VerifiedCheckpoint> = Vec::new();
    let mut cps: Vec<VerifiedCheckpoint> = Vec::new();
    let mut fewest: Option<(u64, usize)> = None;
    // Below-quorum checkpoints: (size, root, valid cosignatures).
    let mut unwitnessed: Vec<(u64, Hash, usize)> = Vec::new();
    for (i, note) in bundle.checkpoints.iter().enumerate() {
        match VerifiedCheckpoint::verify(note, &trust.log_key, &bundle.origin) {
            Ok(v) => {
                let n = v.valid_cosigners(&trust.witness_keys).len();
                if n < trust.witness_quorum {
                    report.checkpoints_below_quorum.push(v.checkpoint.size);
                    unwitnessed.push((v.checkpoint.size, v.checkpoint.root, n));
                    fewest = Some((v.checkpoint.size, n));
                } else {
                    report.checkpoints_verified += 1;
                    cps.push(v.clone());
                }
                signed.push(v);
            }
            Err(e) => report.fail(
                None,
                FailureKind::CheckpointSignature,
                format!("checkpoint #{i}: {e}"),
            ),
        }
    }
    if cps.is_empty()
        && let Some((size, n)) = fewest
    {
        report.fail(
            None,
            FailureKind::WitnessQuorum,
            format!(
                "no checkpoint has the witness quorum of {}: the one of size {size} has {n} valid witness cosignatures",
                trust.witness_quorum
            ),
        );
    }
    for pair in signed.windows(2) {
        let (a, b) = (&pair[0].checkpoint, &pair[1].checkpoint);
        if a.size == b.size && a.root != b.root {
            report.fail(
                None,
                FailureKind::SplitView,
                format!("two checkpoints of size {} with different roots", a.size),
            );
        } else if b.size < a.size {
            report.fail(
                None,
                FailureKind::SplitView,
                format!("checkpoint of size {} listed after size {}", b.size, a.size),
            );
        }
    }
    if let Some(latest) = cps.iter().map(|c| &c.checkpoint).max_by_key(|c| c.size) {
        report.latest_size = Some(latest.size);
        report.latest_root = Some(hex::encode(latest.root));
    }
    // Only checkpoints whose sizes fall in the bundle can be recomputed.
    // The witnessed ones authenticate the leaves; every unwitnessed one
    // must agree with those leaves too (checked below).
    let in_range: Vec<(u64, Hash)> = cps
        .iter()
        .map(|c| (c.checkpoint.size, c.checkpoint.root))
        .filter(|(s, _)| *s >= start)
        .collect();
    let sizes: Vec<u64> = in_range.iter().map(|(s, _)| *s).collect();

    // Which leaf list do the signed roots authenticate?
    let stored: Option<Vec<Hash>> = if bundle.leaf_hashes.is_empty() {
        None
    } else {
        bundle.leaf_hashes.iter().map(|h| hex_hash(h)).collect()
    };
    let matches_all = |leaves: &[Hash]| {
        let roots = roots_at(&prefix, leaves, &sizes);
        in_range.iter().all(|(s, r)| roots.get(s) == Some(r))
    };
    let authentic: Option<&[Hash]> = match &stored {
        Some(s) if matches_all(s) => Some(s),
        _ => None,
    };
    // What the quorum vouches for.
    let covered_end = cps
        .iter()
        .map(|c| c.checkpoint.size)
        .filter(|s| *s >= start)
        .max();
    if let Some(auth) = authentic {
        let auth_end = start + auth.len() as u64;
        if let Some(ce) = covered_end.filter(|ce| *ce > auth_end) {
            report.fail(
                Some(auth_end),
                FailureKind::EntryMissing,
                format!("checkpoint of size {ce} covers entries the bundle lacks"),
            );
        }
        let idx: HashMap<&Hash, usize> = auth.iter().enumerate().map(|(i, h)| (h, i)).collect();
        let first_diff = computed.iter().zip(auth.iter()).position(|(c, a)| c != a);
        if let Some(i) = first_diff {
            let at = start + i as u64;
            let msg = match idx.get(&computed[i]) {
                Some(j) if *j > i => format!(
                    "entry {at} is missing: the entry found there is the log's entry {}",
                    start + *j as u64
                ),
                Some(j) => format!(
                    "entry at position {at} is the log's entry {} (reordered or duplicated)",
                    start + *j as u64
                ),
                None => format!(
                    "entry {at} differs from the one the log committed to (leaf hash {}, committed {})",
                    hex::encode(computed[i]),
                    hex::encode(auth[i])
                ),
            };
            let kind = match idx.get(&computed[i]) {
                Some(j) if *j > i => FailureKind::EntryMissing,
                _ => FailureKind::EntryMismatch,
            };
            report.fail(Some(at), kind, msg);
        } else if computed.len() < auth.len() {
            let at = start + computed.len() as u64;
            report.fail(
                Some(at),
                FailureKind::EntryMissing,
                format!("entry {at} was committed by the log but is missing"),
            );
        } else if computed.len() > auth.len() {
            let at = start + auth.len() as u64;
            report.fail(
                Some(at),
                FailureKind::EntryUnexpected,
                format!("entry {at} was never committed by the log"),
            );
        }
    } else {
        if stored.is_some() {
            report.fail(None, FailureKind::EntryMismatch, "the stored leaf hashes do not reproduce the signed roots: tree storage was altered too");
        }
        if let Some(ce) = covered_end.filter(|ce| *ce > end) {
            report.fail(
                Some(end),
                FailureKind::EntryMissing,
                format!(
                    "checkpoint of size {ce} covers entries the bundle lacks (entry {end} missing)"
                ),
            );
        }
        // Locate by the first checkpoint the entries no longer reproduce.
        let roots = roots_at(&prefix, &computed, &sizes);
        let mut good = start;
        for (s, r) in &in_range {
            match roots.get(s) {
                Some(c) if c == r => good = good.max(*s),
                Some(_) => {
                    report.fail(
                        Some(good),
                        FailureKind::EntryMismatch,
                        format!("entries [{good}, {s}) do not reproduce the signed root of size {s}: an entry from {good} on was altered, removed, reordered or inserted"),
                    );
                    break;
                }
                None => {}
            }
        }
    }
    check_unwitnessed(
        &mut report,
        &unwitnessed,
        &cps,
        &prefix,
        authentic.unwrap_or(&computed),
        trust.witness_quorum,
    );
    // The unwitnessed tail: entries after the latest witnessed checkpoint,
    // maybe covered by checkpoints the witnesses have not co-signed yet.
    let tail_note = |from: u64| {
        let tail: Vec<String> = unwitnessed
            .iter()
            .filter(|(s, _, _)| *s > from)
            .map(|(s, _, n)| format!("{s} ({n} of {} cosignatures)", trust.witness_quorum))
            .collect();
        if tail.is_empty() {
            String::new()
        } else {
            format!(
                "; only unwitnessed checkpoints cover them: size {} (an unwitnessed tail: the witnesses have not co-signed it yet; export up to the latest witnessed checkpoint to verify the prefix alone)",
                tail.join(", size ")
            )
        }
    };
    match covered_end {
        None if end > start => report.fail(
            Some(start),
            FailureKind::Uncovered,
            format!(
                "no witnessed checkpoint in the bundle covers its entries{}",
                tail_note(start)
            ),
        ),
        Some(ce) if ce < end => report.fail(
            Some(ce),
            FailureKind::Uncovered,
            format!(
                "entries [{ce}, {end}) are not covered by any witnessed checkpoint{}",
                tail_note(ce)
            ),
        ),
        _ => {}
    }

    // The auditor's previous checkpoint.
    if let Some(prev) = previous {
        check_previous(
            &mut report,
            bundle,
            trust,
            prev,
            &prefix,
            authentic.unwrap_or(&computed),
            &cps,
        );
    }

    // Decode, index fields, counts, replay.
    let mut decoded: Vec<Option<Entry>> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let at = start + i as u64;
        match Entry::decode(r) {
            Ok(e) => {
                if e.index != at {
                    report.fail(
                        Some(at),
                        FailureKind::EntryIndex,
                        format!("entry at position {at} says it is entry {}", e.index),
                    );
                }
                *report
                    .entry_kinds
                    .entry(e.body.kind_name().to_owned())
                    .or_default() += 1;
                decoded.push(Some(e));
            }
            Err(e) if !r.is_empty() => {
                report.fail(
                    Some(at),
                    FailureKind::EntryMalformed,
                    format!("entry {at}: {e}"),
                );
                decoded.push(None);
            }
            Err(_) => decoded.push(None),
        }
    }
    let context = verify_context(&mut report, bundle, &cps);
    let mut by_withdrawal: HashMap<&str, Vec<&Entry>> = HashMap::new();
    let mut policies: Vec<&Entry> = Vec::new();
    for e in &context {
        if matches!(e.body, EntryBody::PolicyActivated { .. }) {
            policies.push(e);
        }
        if let Some(w) = e.body.withdrawal_id() {
            by_withdrawal.entry(w).or_default().push(e);
        }
    }
    let mut deposits = DepositReplay::new(bundle.start == 0);
    for e in decoded.iter().flatten() {
        deposits.note(&mut report, e);
        if let Some((refusal, signature)) = Refusal::from_entry(&e.body) {
            if let Err(err) = refusal.verify(signature, &trust.witness_keys) {
                report.fail(
                    Some(e.index),
                    FailureKind::RefusalSignature,
                    format!(
                        "signing_refused entry {}: not signed by {}: {err}",
                        e.index, refusal.signer
                    ),
                );
            }
            report.refusals.push(LoggedRefusal {
                entry: e.index,
                withdrawal_id: refusal.withdrawal_id,
                signer: refusal.signer,
                request: refusal.request,
                reason: refusal.reason,
                refused_at_ms: refusal.refused_at_ms,
            });
        }
        if let EntryBody::ShareExported {
            key_id,
            signer,
            recipient_fingerprint,
            backup_hash,
            actor,
            ..
        } = &e.body
        {
            report.share_exports.push(LoggedShareExport {
                entry: e.index,
                key_id: key_id.clone(),
                signer: signer.clone(),
                recipient_fingerprint: hex::encode(recipient_fingerprint),
                backup_hash: hex::encode(backup_hash),
                actor: actor.clone(),
            });
        }
        note_key_lifecycle(&mut report, e);
        if let EntryBody::SigningSession {
            withdrawal_id,
            key_id,
            execution_id,
            message_digest,
            ..
        } = &e.body
        {
            // Replayed as the signature it may produce (whether or not the
            // coordinator logs that), with the session itself in its history.
            let as_signature = Entry {
                index: e.index,
                timestamp_ms: e.timestamp_ms,
                body: EntryBody::SignatureProduced {
                    withdrawal_id: withdrawal_id.clone(),
                    key_id: key_id.clone(),
                    execution_id: execution_id.clone(),
                    message_digest: *message_digest,
                    signature: Vec::new(),
                },
            };
            let mut history: Vec<&Entry> = by_withdrawal
                .get(withdrawal_id.as_str())
                .cloned()
                .unwrap_or_default();
            history.push(e);
            let ctx = ReplayContext {
                index: e.index,
                signature: &as_signature,
                history: &history,
                policies: &policies,
                policy_documents: &bundle.policy_documents,
            };
            if replay_one(replay, &ctx, &mut report, "signing session") {
                report.signing_sessions_authorised += 1;
            }
        }
        if let EntryBody::SignatureProduced { withdrawal_id, .. } = &e.body {
            let history = by_withdrawal
                .get(withdrawal_id.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let ctx = ReplayContext {
                index: e.index,
                signature: e,
                history,
                policies: &policies,
                policy_documents: &bundle.policy_documents,
            };
            if replay_one(replay, &ctx, &mut report, "signature") {
                report.signatures_authorised += 1;
            }
        }
        if matches!(e.body, EntryBody::PolicyActivated { .. }) {
            policies.push(e);
        }
        if let Some(w) = e.body.withdrawal_id() {
            by_withdrawal.entry(w).or_default().push(e);
        }
    }
    deposits.finish(&mut report);
    report
}

/// Records a key's retirement and its signers' share destruction, and
/// fails a signing session with a key the log retired before it.
fn note_key_lifecycle(report: &mut Report, e: &Entry) {
    match &e.body {
        EntryBody::KeyRetired {
            key_id,
            successor,
            actor,
            reason,
            ..
        } if !report.retirements.iter().any(|r| r.key_id == *key_id) => {
            report.retirements.push(LoggedRetirement {
                entry: e.index,
                retired_at_ms: e.timestamp_ms,
                key_id: key_id.clone(),
                successor: successor.clone(),
                actor: actor.clone(),
                reason: reason.clone(),
                shares_destroyed_by: Vec::new(),
            });
        }
        EntryBody::KeySharesDestroyed {
            key_id, signers, ..
        } => match report.retirements.iter_mut().find(|r| r.key_id == *key_id) {
            Some(r) => r.shares_destroyed_by.extend(signers.iter().cloned()),
            None => report.fail(
                Some(e.index),
                FailureKind::RetiredKeyUsed,
                format!(
                    "key_shares_destroyed entry {}: key {key_id} was never retired before it",
                    e.index
                ),
            ),
        },
        EntryBody::SigningSession {
            withdrawal_id,
            key_id,
            ..
        } => {
            if let Some(r) = report.retirements.iter().find(|r| r.key_id == *key_id) {
                let retired = r.entry;
                report.fail(
                    Some(e.index),
                    FailureKind::RetiredKeyUsed,
                    format!(
                        "signing session entry {} for withdrawal {withdrawal_id}: key {key_id} was retired at entry {retired}",
                        e.index
                    ),
                );
            }
        }
        _ => {}
    }
}

/// Checks each unwitnessed checkpoint (`(size, root, cosignatures)`) in the
/// range against the leaves the witnessed ones authenticate: one that
/// matches and that a witnessed checkpoint supersedes is a warning; one that
/// does not match is a split view (the log key signed another history, or
/// the entries after the witnessed prefix were altered); one larger than
/// the bundle's entries shows entries missing. One that matches but that no
/// witnessed checkpoint follows is left to the coverage check (the
/// unwitnessed tail).
fn check_unwitnessed(
    report: &mut Report,
    unwitnessed: &[(u64, Hash, usize)],
    cps: &[VerifiedCheckpoint],
    prefix: &CompactRange,
    leaves: &[Hash],
    quorum: usize,
) {
    let sizes: Vec<u64> = unwitnessed.iter().map(|(s, _, _)| *s).collect();
    let roots = roots_at(prefix, leaves, &sizes);
    for (size, root, n) in unwitnessed {
        if *size < prefix.size() {
            continue;
        }
        let later = cps
            .iter()
            .map(|c| c.checkpoint.size)
            .filter(|s| s >= size)
            .min();
        match roots.get(size) {
            Some(r) if r != root => report.fail(
                Some(*size),
                FailureKind::SplitView,
                format!(
                    "checkpoint of size {size} ({n} of {quorum} witness cosignatures) does not match the entries{}: the log key signed another history, or the entries were altered",
                    later.map_or(String::new(), |l| format!(
                        " the witnessed checkpoint of size {l} commits to"
                    ))
                ),
            ),
            Some(_) => {
                if let Some(l) = later {
                    report.warnings.push(Warning {
                        checkpoint_size: *size,
                        cosignatures: *n,
                        superseded_by: l,
                        message: format!(
                            "checkpoint of size {size} has {n} of {quorum} witness cosignatures; superseded by the witnessed checkpoint of size {l}, which is consistent with it"
                        ),
                    });
                }
            }
            // Beyond the entries: the log key committed to entries the
            // bundle lacks.
            None => {
                let end = prefix.size() + leaves.len() as u64;
                report.fail(
                    Some(end),
                    FailureKind::EntryMissing,
                    format!(
                        "checkpoint of size {size} ({n} of {quorum} witness cosignatures) covers entries the bundle lacks (entry {end} missing)"
                    ),
                );
            }
        }
    }
}

/// Replays one authorisation; a refusal is reported as a failure at the
/// entry (`what` names its kind). Returns whether it was authorised.
fn replay_one(
    replay: &dyn AuthorizationReplay,
    ctx: &ReplayContext<'_>,
    report: &mut Report,
    what: &str,
) -> bool {
    match replay.check_signature(ctx) {
        Ok(()) => true,
        Err(err) => {
            report.fail(
                Some(ctx.index),
                FailureKind::Unauthorized,
                format!("{what} entry {}: {err}", ctx.index),
            );
            false
        }
    }
}

/// Context entries that are proven included in a checkpoint of the bundle.
fn verify_context(
    report: &mut Report,
    bundle: &ExportBundle,
    cps: &[VerifiedCheckpoint],
) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for c in &bundle.context {
        let fail = |report: &mut Report, why: &str| {
            report.fail(
                Some(c.index),
                FailureKind::Bundle,
                format!("context entry {}: {why}", c.index),
            );
        };
        if c.index >= bundle.start || out.last().is_some_and(|l| l.index >= c.index) {
            fail(report, "not before the range or out of order");
            continue;
        }
        let Ok(raw) = hex::decode(&c.entry) else {
            fail(report, "not hex");
            continue;
        };
        let proof: Option<Vec<Hash>> = c.proof.iter().map(|h| hex_hash(h)).collect();
        let included = cps.iter().any(|cp| {
            cp.checkpoint.size == c.tree_size
                && proof.as_deref().is_some_and(|p| {
                    crate::proof::verify_inclusion(
                        c.index,
                        c.tree_size,
                        &leaf_hash(&raw),
                        p,
                        &cp.checkpoint.root,
                    )
                    .is_ok()
                })
        });
        if !included {
            fail(
                report,
                "no valid inclusion proof to a checkpoint in the bundle",
            );
            continue;
        }
        match Entry::decode(&raw) {
            Ok(e) if e.index == c.index => out.push(e),
            Ok(_) => fail(report, "index field does not match"),
            Err(e) => fail(report, &e.to_string()),
        }
    }
    out
}

fn check_previous(
    report: &mut Report,
    bundle: &ExportBundle,
    trust: &TrustRoots,
    prev: &str,
    prefix: &CompactRange,
    leaves: &[Hash],
    cps: &[VerifiedCheckpoint],
) {
    let prev = match VerifiedCheckpoint::verify(prev, &trust.log_key, &bundle.origin) {
        Ok(p) => p.checkpoint,
        Err(e) => {
            report.fail(
                None,
                FailureKind::PreviousCheckpoint,
                format!("previous checkpoint: {e}"),
            );
            return;
        }
    };
    let end = report.end;
    let latest = cps.iter().map(|c| c.checkpoint.size).max().unwrap_or(0);
    if prev.size > end.max(latest) {
        report.fail(
            Some(end),
            FailureKind::EntryMissing,
            format!("log truncated: your previous checkpoint has size {} but the log now ends at {end}; entry {end} is missing", prev.size),
        );
        return;
    }
    if let Some(c) = cps
        .iter()
        .find(|c| c.checkpoint.size == prev.size && c.checkpoint.root != prev.root)
    {
        report.fail(
            None,
            FailureKind::SplitView,
            format!(
                "checkpoint of size {} differs from your previous one (split view)",
                c.checkpoint.size
            ),
        );
        return;
    }
    if prev.size >= prefix.size() && prev.size <= end {
        let roots = roots_at(prefix, leaves, &[prev.size]);
        if roots.get(&prev.size) != Some(&prev.root) {
            report.fail(
                None,
                FailureKind::PreviousCheckpoint,
                format!("the bundle does not extend your previous checkpoint of size {}: history was rewritten", prev.size),
            );
        }
        return;
    }
    // Older than the range: needs a shipped consistency proof.
    let ok = bundle.consistency_proofs.iter().any(|rec| {
        let proof: Option<Vec<Hash>> = rec.proof.iter().map(|h| hex_hash(h)).collect();
        rec.from_size == prev.size
            && cps.iter().any(|c| {
                c.checkpoint.size == rec.to_size
                    && proof.as_deref().is_some_and(|p| {
                        verify_consistency(
                            prev.size,
                            rec.to_size,
                            &prev.root,
                            &c.checkpoint.root,
                            p,
                        )
                        .is_ok()
                    })
            })
    });
    if !ok {
        report.fail(
            None,
            FailureKind::PreviousCheckpoint,
            format!("no valid consistency proof from your previous checkpoint of size {} to a checkpoint in the bundle", prev.size),
        );
    }
}

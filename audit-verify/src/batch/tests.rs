//! Batched UTXO payouts replayed over synthetic logs, with real PSBTs, the
//! way the bundle verifier replays them (every signing session and
//! signature entry, with its withdrawal's earlier entries).

use std::collections::{BTreeMap, HashMap};

use custos_audit::entry::{DecisionOutcome, Verdict as LogVerdict};
use custos_audit::replay::ReplayContext;
use custos_audit::{AuthorizationReplay, Entry, EntryBody};
use custos_chains::utxo::{self, BuildRequest, Payout, UtxoAddress, UtxoNetwork, wallet_address};
use custos_policy::{
    ActivePolicy, Amount, Approval, ApprovalStatement, Duration, Outcome, Policy, Verdict,
    Withdrawal, evaluate, intent_digest,
};
use sha2::{Digest, Sha256};

use crate::decision::secs;
use crate::replay::{BatchCount, PolicyReplay};
use crate::testing::{activation, bundle, key, policy_header};

const T0: u64 = 1_764_072_000_000;
const NET: UtxoNetwork = UtxoNetwork::LitecoinRegtest;
const CHAIN: &str = "litecoin-regtest";
const WALLET: &str = "w-ltc";
const FEE_CAP: u128 = 10_000;

fn document() -> Vec<u8> {
    let mut doc = policy_header(WALLET);
    doc.push_str(
        r#"
[[rules]]
id = "small"
wallet_groups = ["hot"]
amount = { max = "100000" }
action = "allow"
[[rules]]
id = "two"
amount = { max = "1000000" }
action = "require_approvals"
approvals = { all = [{ group = "treasury", count = 2 }], exclude_initiator = true }
[[rules]]
id = "locked"
action = "require_approvals"
approvals = { all = [{ group = "treasury", count = 2 }] }
delay = "60s"
cancel_group = "security"
"#,
    );
    doc.into_bytes()
}

/// The P2WPKH address of the key with all bytes `seed`.
fn address(seed: u8) -> UtxoAddress {
    let sk = k256::SecretKey::from_slice(&[seed; 32]).unwrap();
    let sec1 = k256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&sk.public_key(), true);
    wallet_address(NET, sec1.as_bytes()).unwrap()
}

/// One withdrawal of the batch.
#[derive(Clone)]
struct Payee {
    id: &'static str,
    /// Seed of its destination's key.
    to: u8,
    amount: u128,
    approvers: Vec<&'static str>,
    /// What its output pays [default: `amount`].
    paid: Option<u64>,
    /// Whether the PSBT pays it.
    in_psbt: bool,
    /// Whether it logs the batch's `transaction_prepared` entry after the
    /// lead's first signing session.
    late: bool,
    /// Whether it is cancelled before the batch is prepared.
    cancelled: bool,
    /// Whether it logs the batch's `transaction_prepared` entry twice.
    twice: bool,
}

fn payee(id: &'static str, to: u8, amount: u128) -> Payee {
    Payee {
        id,
        to,
        amount,
        approvers: vec!["alice", "bob"],
        paid: None,
        in_psbt: true,
        late: false,
        cancelled: false,
        twice: false,
    }
}

/// A batch: the lead (first payee) signs, the others are paid with it.
struct Case {
    payees: Vec<Payee>,
    /// An output no withdrawal prepared: (key seed, amount).
    extra: Option<(u8, u64)>,
    /// Milliseconds from the last approval to the lead's first session.
    session_after_ms: u64,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            payees: vec![
                payee("wd-1", 2, 150_000),
                payee("wd-2", 3, 200_000),
                payee("wd-3", 4, 300_000),
            ],
            extra: None,
            session_after_ms: 1000,
        }
    }
}

fn at(index: usize, ms: u64, body: EntryBody) -> Entry {
    Entry {
        index: index as u64,
        timestamp_ms: ms,
        body,
    }
}

/// Logs one withdrawal's request, risk score, decision and approvals;
/// returns its approval statement's bytes, if any.
fn decide(out: &mut Vec<Entry>, ms: &mut u64, p: &Payee, policy: &Policy) -> Option<Vec<u8>> {
    let mut w = Withdrawal {
        source: None,
        id: p.id.into(),
        wallet: WALLET.into(),
        chain: CHAIN.into(),
        asset: "LTC".into(),
        destination: address(p.to).text,
        amount: Amount(p.amount),
        fee_cap: Amount(0),
        initiator: "payments-backend".into(),
        tx_digest: String::new(),
    };
    let mut log = |ms: &mut u64, body: EntryBody| {
        *ms += 1000;
        out.push(at(out.len(), *ms, body));
    };
    log(
        ms,
        EntryBody::WithdrawalRequested {
            withdrawal_id: w.id.clone(),
            key_id: w.wallet.clone(),
            chain: w.chain.clone(),
            asset: w.asset.clone(),
            destination: w.destination.clone(),
            amount: p.amount.to_string(),
            tx_digest: None,
            requested_by: w.initiator.clone(),
        },
    );
    log(
        ms,
        EntryBody::RiskScored {
            withdrawal_id: w.id.clone(),
            provider: "test".into(),
            score: 10,
            details_hash: [0; 32],
        },
    );
    let active = ActivePolicy::assumed(policy.clone(), secs(T0));
    let decision = evaluate(&active, &w, &[], secs(*ms + 1000), 10).unwrap();
    log(
        ms,
        EntryBody::PolicyDecision {
            withdrawal_id: w.id.clone(),
            policy_hash: policy.hash().0,
            rule_id: decision.rule_id.clone().unwrap(),
            outcome: match decision.outcome {
                Outcome::Allow => DecisionOutcome::Allow,
                _ => DecisionOutcome::RequireApprovals { quorum: 2 },
            },
            explanation_hash: [0; 32],
        },
    );
    if p.cancelled {
        log(
            ms,
            EntryBody::Cancelled {
                withdrawal_id: w.id.clone(),
                cancelled_by: "dave".into(),
                reason: "test".into(),
            },
        );
    }
    if decision.outcome == Outcome::Allow {
        return None;
    }
    w.fee_cap = Amount(FEE_CAP);
    w.tx_digest = hex::encode(intent_digest(&w));
    let statement =
        ApprovalStatement::for_decision(&decision, &w, secs(*ms).plus(Duration(3600))).unwrap();
    let bytes = statement.encode().unwrap();
    for who in &p.approvers {
        let a = Approval::sign(&statement, Verdict::Approve, who, &key(who)).unwrap();
        log(
            ms,
            EntryBody::Approval {
                withdrawal_id: w.id.clone(),
                approver_id: (*who).to_owned(),
                verdict: LogVerdict::Approve,
                statement: bytes.clone(),
                signature: hex::decode(a.signature).unwrap(),
            },
        );
    }
    Some(bytes)
}

/// The batch's PSBT and its input digests.
fn psbt(case: &Case) -> (Vec<u8>, Vec<[u8; 32]>) {
    let wallet = address(1);
    let mut payouts: Vec<Payout> = case
        .payees
        .iter()
        .filter(|p| p.in_psbt)
        .map(|p| Payout {
            withdrawal_id: p.id.into(),
            script_pubkey: address(p.to).script_pubkey,
            amount: p.paid.unwrap_or(p.amount as u64),
            fee_cap: FEE_CAP as u64,
        })
        .collect();
    if let Some((seed, amount)) = case.extra {
        payouts.push(Payout {
            withdrawal_id: "nobody".into(),
            script_pubkey: address(seed).script_pubkey,
            amount,
            fee_cap: FEE_CAP as u64,
        });
    }
    let coins = utxo::testing::coins(&wallet.script_pubkey, &[2_000_000, 1_000_000]);
    let built = utxo::build_unsigned(&BuildRequest {
        coins: &coins,
        required: &[],
        payouts: &payouts,
        change_script: &wallet.script_pubkey,
        fee_rate_sat_per_kvb: 2_000,
    })
    .unwrap();
    let digests = utxo::check_psbt(&built.psbt, &payouts, &[wallet.script_pubkey])
        .unwrap()
        .digests;
    (built.psbt, digests)
}

/// The whole log: activation, each withdrawal's decision and approvals,
/// the prepared transaction of each (lead first), the lead's signing
/// session and signature per input.
fn log(case: &Case) -> Vec<Entry> {
    let policy = Policy::parse(&document()).unwrap();
    let mut out = vec![at(0, T0, activation(&policy, &["admin1"]))];
    let mut ms = T0;
    let statements: Vec<Option<Vec<u8>>> = case
        .payees
        .iter()
        .map(|p| decide(&mut out, &mut ms, p, &policy))
        .collect();
    let (tx, digests) = psbt(case);
    let prepared = |p: &Payee| EntryBody::TransactionPrepared {
        withdrawal_id: p.id.into(),
        chain: CHAIN.into(),
        unsigned_tx: tx.clone(),
    };
    for p in case.payees.iter().filter(|p| !p.late) {
        for _ in 0..if p.twice { 2 } else { 1 } {
            ms += 100;
            out.push(at(out.len(), ms, prepared(p)));
        }
    }
    ms += case.session_after_ms;
    let lead = &case.payees[0];
    let execution_id = statements[0]
        .as_ref()
        .map_or([0xab; 32], |s| Sha256::digest(s).into());
    for (n, digest) in digests.iter().enumerate() {
        let session = EntryBody::SigningSession {
            withdrawal_id: lead.id.into(),
            key_id: WALLET.into(),
            execution_id: execution_id.to_vec(),
            participants: vec!["signer-1".into(), "signer-2".into()],
            presignature_id: None,
            message_digest: *digest,
        };
        out.push(at(out.len(), ms, session));
        if n == 0 {
            for p in case.payees.iter().filter(|p| p.late) {
                out.push(at(out.len(), ms + 100, prepared(p)));
            }
        }
        ms += 500;
        let signature = EntryBody::SignatureProduced {
            withdrawal_id: lead.id.into(),
            key_id: WALLET.into(),
            execution_id: execution_id.to_vec(),
            message_digest: *digest,
            signature: vec![1; 64],
        };
        out.push(at(out.len(), ms, signature));
    }
    out
}

/// Replays every signing session (as the signature it produces) and
/// signature entry as `custos_audit::verify_bundle` does; returns the
/// failures and the batches found authorised.
fn replay(entries: &[Entry]) -> (Vec<String>, BatchCount) {
    let replay =
        PolicyReplay::new(vec![(document(), "test".into())], None, &bundle(entries)).unwrap();
    let docs = BTreeMap::new();
    let mut failures = Vec::new();
    let mut by_withdrawal: HashMap<&str, Vec<&Entry>> = HashMap::new();
    let mut policies: Vec<&Entry> = Vec::new();
    for e in entries {
        let earlier = |w: &str| by_withdrawal.get(w).cloned().unwrap_or_default();
        let check = |signature: &Entry, history: &[&Entry]| {
            replay
                .check_signature(&ReplayContext {
                    index: e.index,
                    signature,
                    history,
                    policies: &policies,
                    policy_documents: &docs,
                })
                .map_err(|err| format!("entry {}: {err}", e.index))
        };
        match &e.body {
            EntryBody::SigningSession {
                withdrawal_id,
                key_id,
                execution_id,
                message_digest,
                ..
            } => {
                let as_signature = Entry {
                    body: EntryBody::SignatureProduced {
                        withdrawal_id: withdrawal_id.clone(),
                        key_id: key_id.clone(),
                        execution_id: execution_id.clone(),
                        message_digest: *message_digest,
                        signature: Vec::new(),
                    },
                    ..e.clone()
                };
                let mut history = earlier(withdrawal_id);
                history.push(e);
                failures.extend(check(&as_signature, &history).err());
            }
            EntryBody::SignatureProduced { withdrawal_id, .. } => {
                failures.extend(check(e, &earlier(withdrawal_id)).err());
            }
            _ => {}
        }
        if matches!(e.body, EntryBody::PolicyActivated { .. }) {
            policies.push(e);
        }
        if let Some(w) = e.body.withdrawal_id() {
            by_withdrawal.entry(w).or_default().push(e);
        }
    }
    (failures, replay.batches_authorised())
}

/// The case's failures: none expected if `why` is empty, else each one
/// contains every part of `why`.
fn expect(case: &Case, why: &[&str]) -> BatchCount {
    let (failures, count) = replay(&log(case));
    if why.is_empty() {
        assert_eq!(failures, Vec::<String>::new());
    } else {
        assert!(!failures.is_empty(), "accepted; expected {why:?}");
        for f in &failures {
            for part in why {
                assert!(f.contains(part), "{f}\nexpected: {part}");
            }
        }
    }
    count
}

#[test]
fn a_batch_of_approved_withdrawals_verifies() {
    let count = expect(&Case::default(), &[]);
    assert_eq!(
        count,
        BatchCount {
            transactions: 1,
            payouts: 3
        }
    );
    // A lead decided `allow` (no approved fee cap in the log), members
    // approved.
    let mut case = Case::default();
    case.payees[0].amount = 50_000;
    case.payees[0].approvers.clear();
    expect(&case, &[]);
    // A time-locked member signed after its delay.
    let mut case = Case {
        session_after_ms: 61_000,
        ..Case::default()
    };
    case.payees[2].amount = 2_000_000;
    expect(&case, &[]);
    // The lead and a member log the transaction twice.
    let mut case = Case::default();
    case.payees[0].twice = true;
    case.payees[1].twice = true;
    expect(&case, &[]);
}

#[test]
fn a_single_payout_utxo_withdrawal_still_verifies() {
    let case = Case {
        payees: vec![payee("wd-1", 2, 150_000)],
        ..Case::default()
    };
    assert_eq!(expect(&case, &[]), BatchCount::default());
}

#[test]
fn a_member_without_its_quorum_is_named() {
    let mut case = Case::default();
    case.payees[1].approvers = vec!["alice"];
    expect(
        &case,
        &[
            "batch member wd-2 (transaction_prepared entry",
            "too few valid approvals for rule two",
        ],
    );
}

#[test]
fn a_member_inside_its_time_lock_is_named() {
    let mut case = Case::default();
    case.payees[2].amount = 2_000_000;
    expect(
        &case,
        &["batch member wd-3", "before rule locked's 60s time lock"],
    );
}

#[test]
fn an_output_no_withdrawal_prepared_is_named() {
    let thief = address(9).text;
    // A batch of three; then a PSBT prepared by the signed withdrawal alone,
    // approved (entries 4 and 5) or decided `allow`, which has no approved
    // transaction to check otherwise.
    for (payees, prepared, output) in [
        (Case::default().payees, 16, 3),
        (vec![payee("wd-1", 2, 150_000)], 6, 1),
        (vec![payee("wd-1", 2, 50_000)], 4, 1),
    ] {
        let case = Case {
            payees,
            extra: Some((9, 50_000)),
            ..Case::default()
        };
        expect(
            &case,
            &[&format!(
                "transaction_prepared entry {prepared}: output {output} pays {thief} (50000): no \
                 withdrawal in the log prepared this transaction"
            )],
        );
    }
}

#[test]
fn a_member_paid_another_amount_or_not_at_all_is_named() {
    let mut case = Case::default();
    case.payees[1].paid = Some(210_000);
    expect(
        &case,
        &[
            "withdrawal wd-2 prepared this transaction at entry",
            "210000 at output 1, its request 200000",
        ],
    );
    let mut case = Case::default();
    case.payees[1].in_psbt = false;
    expect(
        &case,
        &[
            "withdrawal wd-2 prepared this transaction",
            "nothing (its request: 200000)",
        ],
    );
}

#[test]
fn a_member_that_prepared_after_signing_began_is_named() {
    let mut case = Case::default();
    case.payees[2].late = true;
    expect(
        &case,
        &[
            "withdrawal wd-3 prepared this transaction at entry",
            "after its first signing session",
        ],
    );
}

#[test]
fn a_cancelled_member_is_named() {
    let mut case = Case::default();
    case.payees[2].cancelled = true;
    expect(
        &case,
        &[
            "batch member wd-3",
            "withdrawal wd-3 was cancelled at entry",
        ],
    );
}

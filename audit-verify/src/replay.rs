//! The full authorisation replay: every `signature_produced` entry checked
//! against the policy documents the auditor trusts, with the same `policy`
//! crate the coordinator and the signers run.
//!
//! # What is re-checked
//!
//! For each signature entry, on top of the structural replay
//! ([`RequireSatisfiedDecision`]: a latest non-denying decision under the
//! policy bundle active at that point of the log, enough distinct approvals,
//! no rejection, no cancellation, a matching signing session):
//!
//! 1. the decision's policy hash is one of the trusted documents (hashed
//!    here, never trusted by name) and, with an admin set, the activation
//!    entry in force carries a valid admin quorum over that hash;
//! 2. the decision's rule exists in that document and the logged outcome is
//!    the rule's action (`allow`, or `require_approvals` with the rule's total
//!    quorum);
//! 3. re-evaluating the logged request (wallet, chain, asset, destination,
//!    amount, initiator, logged risk score, decision time) with the most
//!    permissive history, no earlier withdrawals and every address-book entry
//!    past its cooling period, matches that rule or an earlier one: a rule the
//!    request cannot match under any history is flagged;
//! 4. for approvals: every approval entry carries the same canonical
//!    statement, its SHA-256 is the signing session's execution id and its
//!    transaction digest is the signed digest; each signature verifies with
//!    the approver's Ed25519 key from the policy over
//!    `signing_message(verdict)`; `check_approvals` (run at the signing
//!    session's time) finds the rule's quorum met by distinct, active,
//!    eligible approvers other than the initiator, no rejection, statement
//!    fields equal to the logged request, policy and rule, not expired;
//!    on chains with a transaction adapter the signed digest is instead the
//!    signing digest of a `transaction_prepared` transaction that pays the
//!    approved destination the approved amount within the approved fee cap,
//!    and the statement's digest is the logged request's transfer intent; a
//!    replacement signed under a rule with `fee_bumps = "reapprove"` needs
//!    its own quorum of `fee_bump_approval` entries over a statement naming
//!    exactly that transaction;
//! 5. the rule's time lock: the signing session started at least `delay`
//!    after the quorum was complete (after the decision, for `allow`), by the
//!    log's own timestamps, with one second of tolerance for the coordinator's
//!    whole-second clock.
//! 6. on UTXO chains, when the signed transaction was prepared by several
//!    withdrawals (a batch, module `batch`): its outputs pay exactly those
//!    withdrawals' logged requests (and change), each fee share within its
//!    withdrawal's approved cap, and every other withdrawal it pays passes
//!    steps 1 to 5 as if signed at the transaction's first signing session.
//!
//! # What is not re-checked
//!
//! Velocity limits and address-book cooling periods depend on history the
//! log does not fully carry (amounts counted per wallet over a window, the
//! policy state's activation times). When re-evaluation matches an *earlier*
//! rule than the logged one, the difference may come from them and is
//! accepted; signers enforce both from their own records.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use custos_audit::replay::ReplayContext;
use custos_audit::{
    AuditError, AuthorizationReplay, Entry, EntryBody, ExportBundle, Report,
    RequireSatisfiedDecision,
};
use custos_policy::{ActionKind, ActivePolicy, AdminSet, FeeBumps, Timestamp};

use crate::VerifyError;
use crate::batch::{BatchIndex, Batches, Lookup};
use crate::chain_tx::{check_intent, check_prepared_transaction};
use crate::decision::{LoggedDecision, Signed, secs};
use crate::fee_bump::check_fee_bump_quorum;
use crate::grant::Grant;
use crate::policies::PolicySet;

/// The policy-engine replay (see the module documentation). Plug it into
/// [`custos_audit::verify_bundle`], or use [`crate::verify`].
pub struct PolicyReplay {
    policies: PolicySet,
    /// The batched UTXO transactions of the bundle it was built from.
    batches: BatchIndex,
    /// Batched transactions found fully authorised so far: the signed
    /// withdrawal's `transaction_prepared` entry → payouts. A map because
    /// each input's session and signature find the same transaction; a
    /// mutex because the bundle verifier holds the replay shared.
    authorised_batches: Mutex<BTreeMap<u64, usize>>,
}

/// Batched transactions whose every payout was authorised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BatchCount {
    /// Transactions paying more than one withdrawal.
    pub transactions: usize,
    /// The withdrawals they pay, signed ones included.
    pub payouts: usize,
}

impl PolicyReplay {
    /// From the trusted policy documents (bytes exactly as the admins signed
    /// them, each with where it came from, for messages) and the trusted
    /// admin set, if activations are to be checked. Documents shipped in
    /// `bundle` are added when their content hashes to their key (a hash
    /// names exactly one document, whoever ships it). The replay is for
    /// `bundle` only: the other withdrawals a batched transaction pays are
    /// looked up in it.
    ///
    /// # Errors
    ///
    /// [`VerifyError::PolicyDocument`] if a supplied document does not parse.
    pub fn new(
        supplied: Vec<(Vec<u8>, String)>,
        admins: Option<AdminSet>,
        bundle: &ExportBundle,
    ) -> Result<Self, VerifyError> {
        Ok(Self {
            policies: PolicySet::new(supplied, admins, bundle)?,
            batches: BatchIndex::new(bundle),
            authorised_batches: Mutex::default(),
        })
    }

    /// The trusted documents: (hash, where it came from).
    pub fn documents(&self) -> impl Iterator<Item = (&str, &str)> {
        self.policies.documents()
    }

    /// Whether admin signatures of policy activations are checked.
    pub fn checks_admins(&self) -> bool {
        self.policies.checks_admins()
    }

    /// Checks every `policy_activated` entry of the bundle (range and
    /// context) against the admin set, adding a failure to `report` for
    /// each bad one (nothing without an admin set).
    pub fn check_activations(&self, bundle: &ExportBundle, report: &mut Report) {
        self.policies.check_activations(bundle, report);
    }

    /// Batched transactions whose every payout [`Self::authorise`] found
    /// authorised so far.
    pub fn batches_authorised(&self) -> BatchCount {
        let found = self
            .authorised_batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        BatchCount {
            transactions: found.len(),
            payouts: found.values().sum(),
        }
    }

    /// Steps 1 to 5 of the replay for one signature, and for each other
    /// withdrawal a batched transaction it signs pays (the structural
    /// replay is not run here: [`AuthorizationReplay::check_signature`]
    /// runs both).
    ///
    /// # Errors
    ///
    /// The first rule the signature's authorisation breaks, naming the entry.
    pub fn authorise(&self, ctx: &ReplayContext<'_>) -> Result<(), VerifyError> {
        let signed = Signed::from_entry(ctx.signature)?;
        // 1 to 3: the decision, its rule and the re-evaluated request.
        let grant = Grant::replay(&self.policies, ctx.history, signed.withdrawal, ctx.policies)?;
        let session = signing_session(grant.after, &signed, &grant.decision)?;
        // A batched transaction: its payouts, and the other withdrawals'
        // authorisation at its first signing session (`batch`). Looked up
        // first: step 4 then knows the transaction is checked.
        let batches = Batches {
            index: &self.batches,
            policies: &self.policies,
            activations: ctx.policies,
        };
        let Lookup { found, refusal } = batches.lookup(&grant, session, signed.digest)?;
        let signature = Authorisation {
            grant,
            signed,
            session,
        };
        // 4. Approvals.
        let quorum_at_ms = match signature.grant.rule.rule.action {
            ActionKind::RequireApprovals => {
                signature.check_approvals(found.is_some(), refusal, &self.policies)?
            }
            _ => {
                // No approved transaction to check against; a batched one
                // that cannot be checked is still refused.
                if let (None, Some(refusal)) = (found, refusal) {
                    return Err(refusal);
                }
                signature.grant.decision.entry.timestamp_ms
            }
        };
        // 5. The time lock.
        signature
            .grant
            .check_time_lock(signature.session, quorum_at_ms)?;
        if let Some(found) = found {
            self.authorised_batches
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(found.prepared, found.payouts);
        }
        Ok(())
    }
}

impl AuthorizationReplay for PolicyReplay {
    fn check_signature(&self, ctx: &ReplayContext<'_>) -> Result<(), AuditError> {
        RequireSatisfiedDecision.check_signature(ctx)?;
        self.authorise(ctx)
            .map_err(|e| AuditError::Unauthorized(e.explain()))
    }
}

/// The signing session of the signature: after the decision, with its
/// execution id and digest.
fn signing_session<'a>(
    after: &[&'a Entry],
    signed: &Signed<'_>,
    decision: &LoggedDecision<'_>,
) -> Result<&'a Entry, VerifyError> {
    after
        .iter()
        .rev()
        .find(|e| {
            matches!(&e.body, EntryBody::SigningSession { execution_id, message_digest, .. }
                if execution_id.as_slice() == signed.execution_id && message_digest == signed.digest)
        })
        .copied()
        .ok_or(VerifyError::NoSigningSession {
            decision: decision.index(),
        })
}

/// One signature with what steps 1 to 3 found for its withdrawal.
struct Authorisation<'a> {
    grant: Grant<'a>,
    signed: Signed<'a>,
    /// The signing session entry.
    session: &'a Entry,
}

impl Authorisation<'_> {
    /// Step 4: the approvals authorise what was signed. `batched`: the
    /// signed digest is a batched transaction's, already checked; else
    /// `refusal` is why a batched transaction of the withdrawal could not
    /// be. Returns the log time at which the quorum was complete.
    fn check_approvals(
        &self,
        batched: bool,
        refusal: Option<VerifyError>,
        policies: &PolicySet,
    ) -> Result<u64, VerifyError> {
        let grant = &self.grant;
        let quorum = grant.quorum()?;
        if quorum.statement.tx_digest.as_slice() != self.signed.digest.as_slice() {
            // A chain transaction built from the approved intent.
            if batched {
                // Its payouts are checked (`batch`); the approvals must bind
                // this withdrawal's intent.
                check_intent(
                    &grant.withdrawal,
                    &quorum.statement,
                    self.signed.digest,
                    quorum.first.index,
                )?;
            } else {
                check_prepared_transaction(
                    grant.history,
                    &grant.withdrawal,
                    &quorum.statement,
                    self.signed.digest,
                    quorum.first.index,
                )
                // A batched transaction that could not be checked says more
                // than the single-payout check that refused it.
                .map_err(|e| refusal.unwrap_or(e))?;
            }
        }
        quorum.check_execution_id(self.signed.execution_id)?;
        // A replacement (fee bump) is signed later: the approvals count as
        // of the withdrawal's first signing session.
        let at = secs(self.first_session_ms());
        if self.is_replacement() && grant.rule.rule.fee_bumps == FeeBumps::Reapprove {
            check_fee_bump_quorum(
                grant.history,
                |hash| {
                    policies
                        .get(hash)
                        .map(|d| ActivePolicy::assumed(d.policy.clone(), Timestamp(0)))
                },
                grant.decision.rule_id,
                grant.request.initiator(),
                self.signed.digest,
                secs(self.session.timestamp_ms),
            )?;
        }
        grant.check_quorum(&quorum, at)
    }

    /// Whether an earlier signature of the withdrawal exists: this one
    /// signs a replacement.
    fn is_replacement(&self) -> bool {
        self.grant
            .history
            .iter()
            .any(|e| matches!(e.body, EntryBody::SignatureProduced { .. }))
    }

    /// Log time of the withdrawal's first signing session after the decision.
    fn first_session_ms(&self) -> u64 {
        self.grant
            .after
            .iter()
            .find(|e| matches!(&e.body, EntryBody::SigningSession { .. }))
            .map_or(self.session.timestamp_ms, |e| e.timestamp_ms)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testing::{activation, bundle, key, policy_header};
    use custos_audit::entry::{DecisionOutcome, Verdict as LogVerdict};
    use custos_policy::{
        AdminSetConfig, Amount, Approval, ApprovalStatement, Outcome, Policy, Verdict, Withdrawal,
        evaluate,
    };
    use sha2::{Digest, Sha256};

    const T0: u64 = 1_764_072_000_000;
    const ETH: u128 = 1_000_000_000_000_000_000;
    const TO: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    const DIGEST: [u8; 32] = [7; 32];

    fn document() -> Vec<u8> {
        let mut doc = policy_header("w-hot");
        doc.push_str(&format!(
            r#"
[[address_book]]
id = "exchange"
chain = "ethereum"
address = "{TO}"
[[rules]]
id = "small"
wallet_groups = ["hot"]
destination = "whitelisted"
amount = {{ max = "1000000000000000000" }}
action = "allow"
[[rules]]
id = "two"
destination = "whitelisted"
amount = {{ max = "10000000000000000000" }}
action = "require_approvals"
approvals = {{ all = [{{ group = "treasury", count = 2 }}], exclude_initiator = true }}
[[rules]]
id = "locked"
destination = "whitelisted"
action = "require_approvals"
approvals = {{ all = [{{ group = "treasury", count = 2 }}] }}
delay = "60s"
cancel_group = "security"
[[rules]]
id = "rest"
action = "block"
reason = "not whitelisted"
"#
        ));
        doc.into_bytes()
    }

    fn policy() -> Policy {
        Policy::parse(&document()).unwrap()
    }

    fn admin_set(keys: &[&str], threshold: usize) -> AdminSet {
        AdminSet::new(&AdminSetConfig {
            threshold,
            keys: keys.iter().map(|k| key(k).public().to_hex()).collect(),
        })
        .unwrap()
    }

    fn empty_bundle() -> ExportBundle {
        bundle(&[])
    }

    fn replay(admins: Option<AdminSet>) -> PolicyReplay {
        PolicyReplay::new(vec![(document(), "test".into())], admins, &empty_bundle()).unwrap()
    }

    /// A withdrawal's life in the log.
    struct Case {
        amount: u128,
        /// Rule and outcome the decision entry claims [default: the evaluation's].
        claim: Option<(&'static str, DecisionOutcome)>,
        /// (approver, verdict, signer key): who signs what is logged.
        approvals: Vec<(&'static str, Verdict, &'static str)>,
        /// Statement amount the approvers actually signed [default: the real one].
        signed_amount: Option<u128>,
        /// Digest the signature entry says was signed.
        signed_digest: [u8; 32],
        /// Milliseconds from the last approval to the signing session.
        session_after_ms: u64,
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                amount: 5 * ETH,
                claim: None,
                approvals: vec![
                    ("alice", Verdict::Approve, "alice"),
                    ("bob", Verdict::Approve, "bob"),
                ],
                signed_amount: None,
                signed_digest: DIGEST,
                session_after_ms: 1000,
            }
        }
    }

    fn entry(index: u64, ms: u64, body: EntryBody) -> Entry {
        Entry {
            index,
            timestamp_ms: ms,
            body,
        }
    }

    /// Entries 0..: activation, request, risk, decision, approvals, session,
    /// signature.
    fn log(case: &Case) -> Vec<Entry> {
        let p = policy();
        let hash = p.hash();
        let mut out = vec![entry(0, T0, activation(&p, &["admin1", "admin2"]))];
        let w = Withdrawal {
            source: None,
            id: "wd-1".into(),
            wallet: "w-hot".into(),
            chain: "ethereum".into(),
            asset: "ETH".into(),
            destination: TO.into(),
            amount: Amount(case.amount),
            fee_cap: Amount(0),
            initiator: "payments-backend".into(),
            tx_digest: hex::encode(DIGEST),
        };
        out.push(entry(
            1,
            T0 + 1000,
            EntryBody::WithdrawalRequested {
                withdrawal_id: w.id.clone(),
                key_id: w.wallet.clone(),
                chain: w.chain.clone(),
                asset: w.asset.clone(),
                destination: w.destination.clone(),
                amount: case.amount.to_string(),
                tx_digest: None,
                requested_by: w.initiator.clone(),
            },
        ));
        out.push(entry(
            2,
            T0 + 2000,
            EntryBody::RiskScored {
                withdrawal_id: w.id.clone(),
                provider: "test".into(),
                score: 10,
                details_hash: [0; 32],
            },
        ));
        let active = ActivePolicy::assumed(p.clone(), secs(T0));
        let decision = evaluate(&active, &w, &[], secs(T0 + 3000), 10).unwrap();
        let real_rule = decision.rule_id.clone().unwrap();
        let (rule_id, outcome) = case.claim.unwrap_or(match decision.outcome {
            Outcome::Allow => ("", DecisionOutcome::Allow),
            _ => ("", DecisionOutcome::RequireApprovals { quorum: 2 }),
        });
        let rule_id = if rule_id.is_empty() {
            real_rule
        } else {
            rule_id.to_owned()
        };
        out.push(entry(
            3,
            T0 + 3000,
            EntryBody::PolicyDecision {
                withdrawal_id: w.id.clone(),
                policy_hash: hash.0,
                rule_id: rule_id.clone(),
                outcome,
                explanation_hash: [0; 32],
            },
        ));
        let mut statement = ApprovalStatement::for_decision(
            &decision,
            &w,
            secs(T0 + 3000).plus(custos_policy::Duration(3600)),
        )
        .unwrap();
        statement.rule_id = rule_id;
        let logged = statement.encode().unwrap();
        let mut signed = statement.clone();
        if let Some(a) = case.signed_amount {
            signed.amount = Amount(a);
        }
        let mut ms = T0 + 3000;
        for (who, verdict, signer) in &case.approvals {
            ms += 1000;
            let a = Approval::sign(&signed, *verdict, who, &key(signer)).unwrap();
            out.push(entry(
                out.len() as u64,
                ms,
                EntryBody::Approval {
                    withdrawal_id: w.id.clone(),
                    approver_id: (*who).to_owned(),
                    verdict: match verdict {
                        Verdict::Reject => LogVerdict::Reject,
                        _ => LogVerdict::Approve,
                    },
                    statement: logged.clone(),
                    signature: hex::decode(a.signature).unwrap(),
                },
            ));
        }
        let execution_id: [u8; 32] = Sha256::digest(&logged).into();
        ms += case.session_after_ms;
        out.push(entry(
            out.len() as u64,
            ms,
            EntryBody::SigningSession {
                withdrawal_id: w.id.clone(),
                key_id: "w-hot".into(),
                execution_id: execution_id.to_vec(),
                participants: vec!["signer-1".into(), "signer-2".into()],
                presignature_id: None,
                message_digest: case.signed_digest,
            },
        ));
        out.push(entry(
            out.len() as u64,
            ms + 500,
            EntryBody::SignatureProduced {
                withdrawal_id: w.id,
                key_id: "w-hot".into(),
                execution_id: execution_id.to_vec(),
                message_digest: case.signed_digest,
                signature: vec![1; 65],
            },
        ));
        out
    }

    fn check(replay: &PolicyReplay, case: &Case) -> Result<(), String> {
        let entries = log(case);
        let (signature, rest) = entries.split_last().unwrap();
        let history: Vec<&Entry> = rest[1..].iter().collect();
        let policies: Vec<&Entry> = vec![&rest[0]];
        let docs = BTreeMap::new();
        replay
            .check_signature(&ReplayContext {
                index: signature.index,
                signature,
                history: &history,
                policies: &policies,
                policy_documents: &docs,
            })
            .map_err(|e| e.to_string())
    }

    fn denied(replay: &PolicyReplay, case: &Case, why: &str) {
        match check(replay, case) {
            Ok(()) => panic!("accepted; expected {why:?}"),
            Err(e) => assert!(e.contains(why), "{e}\nexpected: {why}"),
        }
    }

    #[test]
    fn an_authorised_quorum_passes() {
        let admins = admin_set(&["admin1", "admin2"], 2);
        check(&replay(Some(admins)), &Case::default()).unwrap();
        check(
            &replay(None),
            &Case {
                amount: ETH / 2,
                approvals: vec![],
                ..Case::default()
            },
        )
        .unwrap();
        // A time-locked rule signed after its delay.
        check(
            &replay(None),
            &Case {
                amount: 50 * ETH,
                session_after_ms: 61_000,
                ..Case::default()
            },
        )
        .unwrap();
    }

    #[test]
    fn a_forged_or_foreign_approval_is_flagged() {
        let r = replay(None);
        // Bob's key signed another amount than the logged statement.
        denied(
            &r,
            &Case {
                signed_amount: Some(ETH),
                ..Case::default()
            },
            "does not verify",
        );
        // Mallory signing as bob.
        let mut c = Case::default();
        c.approvals[1] = ("bob", Verdict::Approve, "mallory");
        denied(&r, &c, "approval entry 5 (bob)");
        // Dave is not in the treasury group.
        let mut c = Case::default();
        c.approvals[1] = ("dave", Verdict::Approve, "dave");
        denied(&r, &c, "none of the groups");
        // Carol rejected: the structural replay already refuses.
        let mut c = Case::default();
        c.approvals.push(("carol", Verdict::Reject, "carol"));
        denied(&r, &c, "rejected");
    }

    #[test]
    fn the_signature_must_be_of_the_approved_digest() {
        denied(
            &replay(None),
            &Case {
                signed_digest: [8; 32],
                ..Case::default()
            },
            "is neither the signed digest",
        );
    }

    #[test]
    fn the_decision_must_follow_the_policy() {
        let r = replay(None);
        // 5 ETH can never match the 1 ETH allow rule.
        denied(
            &r,
            &Case {
                claim: Some(("small", DecisionOutcome::Allow)),
                approvals: vec![],
                ..Case::default()
            },
            "cannot match under any history",
        );
        // The rule needs approvals, the log says allow.
        denied(
            &r,
            &Case {
                claim: Some(("two", DecisionOutcome::Allow)),
                approvals: vec![],
                ..Case::default()
            },
            "logs Allow but rule two",
        );
        // A quorum of one where the rule says two.
        denied(
            &r,
            &Case {
                claim: Some(("two", DecisionOutcome::RequireApprovals { quorum: 1 })),
                approvals: vec![("alice", Verdict::Approve, "alice")],
                ..Case::default()
            },
            "quorum 2",
        );
        // Signed inside the time lock.
        denied(
            &r,
            &Case {
                amount: 50 * ETH,
                session_after_ms: 10_000,
                ..Case::default()
            },
            "time lock",
        );
    }

    #[test]
    fn the_policy_and_its_admins_must_be_known() {
        let none = PolicyReplay::new(vec![], None, &empty_bundle()).unwrap();
        denied(&none, &Case::default(), "not among the supplied documents");
        let strangers = replay(Some(admin_set(&["mallory"], 1)));
        denied(&strangers, &Case::default(), "policy activation entry 0");
        // A document shipped in the bundle counts when it hashes to its key.
        let mut b = empty_bundle();
        b.policy_documents.insert(
            policy().hash().to_string(),
            String::from_utf8(document()).unwrap(),
        );
        let shipped = PolicyReplay::new(vec![], None, &b).unwrap();
        check(&shipped, &Case::default()).unwrap();
        let mut b = empty_bundle();
        b.policy_documents
            .insert("00".repeat(32), String::from_utf8(document()).unwrap());
        let mislabelled = PolicyReplay::new(vec![], None, &b).unwrap();
        assert_eq!(mislabelled.documents().count(), 0);
    }
}

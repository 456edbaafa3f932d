//! The one error type of this crate.

use custos_audit::AuditError;
use custos_audit::entry::DecisionOutcome;
use custos_chains::{ChainError, U256};
use custos_policy::{Amount, MissingTerm, PolicyError};

/// Everything the verifier can find wrong, or fail at.
///
/// Variants say who is at fault and name the culprit:
/// - **the auditor's input** ([`VerifyError::PolicyDocument`]): a file the
///   auditor supplied is unusable;
/// - **the log** (most variants): an entry breaks a rule of the policy in
///   force; the variant names the entry (decision, approval, signing session,
///   prepared transaction, activation) and, where there is one, the
///   withdrawal, rule, approver or wallet concerned. The verifier reports
///   these per signature entry through [`VerifyError::explain`];
/// - **a chain node** ([`VerifyError::Rpc`], [`VerifyError::RpcCall`]): an
///   EVM node could not be asked; nothing is known about the log then.
///
/// Display never repeats the source: [`VerifyError::explain`] (or `anyhow`'s
/// `{:#}`) prints the whole chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    // The auditor's input.
    /// A document supplied with `--policy` does not parse.
    #[error("{origin} is not a valid policy document")]
    PolicyDocument {
        /// Where the document came from (a path, "the bundle").
        origin: String,
        /// Why it does not parse.
        #[source]
        source: PolicyError,
    },

    // Policy activations.
    /// A policy activation was expected at this entry.
    #[error("entry {entry} is not a policy activation")]
    NotAnActivation {
        /// The entry.
        entry: u64,
    },
    /// An activation names a policy document the auditor did not supply, so
    /// its admin signatures cannot be checked.
    #[error(
        "policy activation entry {entry}: policy {policy} is not among the supplied documents \
         (--policy), so its admin signatures cannot be checked"
    )]
    ActivationPolicyUnknown {
        /// The activation entry.
        entry: u64,
        /// The activated policy's hash (hex).
        policy: String,
    },
    /// An activation does not carry a valid quorum of the trusted admins.
    #[error("policy activation entry {entry}")]
    AdminQuorum {
        /// The activation entry.
        entry: u64,
        /// The activated policy's hash (hex).
        policy: String,
        /// What is wrong with the admin signatures.
        #[source]
        source: PolicyError,
    },

    // The signature and its decision.
    /// The replay was handed an entry that is not a signature.
    #[error("not a signature entry")]
    NotASignature {
        /// The entry.
        entry: u64,
    },
    /// No policy decision precedes the signature.
    #[error("no policy decision for withdrawal {withdrawal}")]
    NoDecision {
        /// The withdrawal signed.
        withdrawal: String,
    },
    /// The decision was made under a policy the auditor did not supply.
    #[error(
        "decision entry {decision} was made under policy {policy}, which is not among the \
         supplied documents (--policy)"
    )]
    DecisionPolicyUnknown {
        /// The decision entry.
        decision: u64,
        /// The policy hash it names (hex).
        policy: String,
    },
    /// The decision names a rule its policy does not have.
    #[error("decision entry {decision} names rule {rule:?}, which policy {policy} does not have")]
    UnknownRule {
        /// The decision entry.
        decision: u64,
        /// The rule it names.
        rule: String,
        /// The policy hash (hex).
        policy: String,
    },
    /// The logged outcome is not the rule's action (or not its quorum).
    #[error(
        "decision entry {decision} logs {logged:?} but rule {rule} of policy {policy} says \
         {action} (quorum {quorum})"
    )]
    OutcomeMismatch {
        /// The decision entry.
        decision: u64,
        /// The outcome it logs.
        logged: DecisionOutcome,
        /// The rule it names.
        rule: String,
        /// The policy hash (hex).
        policy: String,
        /// The rule's action, as the policy document spells it.
        action: String,
        /// The rule's total quorum.
        quorum: u32,
    },
    /// The request the decision was about is not in the bundle or its context.
    #[error(
        "no withdrawal_requested entry for withdrawal {withdrawal} in the bundle or its context: \
         the decision cannot be re-evaluated"
    )]
    NoRequest {
        /// The withdrawal.
        withdrawal: String,
    },
    /// No risk score precedes the decision.
    #[error("no risk_scored entry for withdrawal {withdrawal} before decision entry {decision}")]
    NoRiskScore {
        /// The withdrawal.
        withdrawal: String,
        /// The decision entry.
        decision: u64,
    },
    /// The logged request's amount is not an integer.
    #[error("amount {amount:?} of withdrawal {withdrawal}")]
    BadAmount {
        /// The `withdrawal_requested` entry.
        request: u64,
        /// The withdrawal.
        withdrawal: String,
        /// The amount as logged.
        amount: String,
    },
    /// An approval's statement does not decode.
    #[error("approval entry {entry}")]
    BadStatement {
        /// The approval entry.
        entry: u64,
        /// Why it does not decode.
        #[source]
        source: PolicyError,
    },
    /// The policy engine refused to re-evaluate the logged request.
    #[error("re-evaluating withdrawal {withdrawal} (decision entry {decision})")]
    Reevaluation {
        /// The withdrawal.
        withdrawal: String,
        /// The decision entry.
        decision: u64,
        /// The engine's refusal.
        #[source]
        source: PolicyError,
    },
    /// Even under the most permissive history the request matches a later
    /// rule (or none) than the one logged.
    #[error(
        "decision entry {decision} claims rule {rule}, which withdrawal {withdrawal} cannot match \
         under any history: re-evaluation matched {}",
        .matched.as_deref().unwrap_or("no rule")
    )]
    RuleCannotMatch {
        /// The decision entry.
        decision: u64,
        /// The rule it claims.
        rule: String,
        /// The withdrawal.
        withdrawal: String,
        /// The rule re-evaluation matched, if any.
        matched: Option<String>,
    },
    /// No signing session with the signature's execution id and digest
    /// follows the decision.
    #[error("no signing session for this execution id follows decision entry {decision}")]
    NoSigningSession {
        /// The decision entry.
        decision: u64,
    },

    // Approvals.
    /// The rule requires approvals and none is logged.
    #[error("decision entry {decision} requires approvals and none was logged")]
    NoApprovals {
        /// The decision entry.
        decision: u64,
    },
    /// Two approvals of one withdrawal carry different statements.
    #[error("approval entry {entry} signs another statement than approval entry {first}")]
    StatementDiffers {
        /// The approval entry that differs.
        entry: u64,
        /// The first approval entry.
        first: u64,
    },
    /// The signing session's execution id is not the approved statement's hash.
    #[error(
        "the statement of approval entry {approval} hashes to {statement_hash}, the signing \
         execution id is {execution_id}"
    )]
    ExecutionIdMismatch {
        /// The first approval entry.
        approval: u64,
        /// SHA-256 of its statement (hex).
        statement_hash: String,
        /// The signature's execution id (hex).
        execution_id: String,
    },
    /// Valid approvals fall short of the rule's quorum.
    #[error(
        "too few valid approvals for rule {rule}: counted [{}], needs {}",
        .counted.join(", "),
        needs(.missing)
    )]
    QuorumMissing {
        /// The rule.
        rule: String,
        /// Approvers counted.
        counted: Vec<String>,
        /// What is still needed, from which group.
        missing: Vec<MissingTerm>,
    },
    /// An authorised approver rejected the withdrawal.
    #[error("rejected by {}", .by.join(", "))]
    Rejected {
        /// Who rejected.
        by: Vec<String>,
    },
    /// Approvals that do not count (bad signature, unknown or ineligible
    /// approver, statement fields that differ from the request, expired).
    #[error("invalid approvals: {}", list_problems(.problems, "approval"))]
    InvalidApprovals {
        /// Every problem, with its approval entry.
        problems: Vec<ApprovalProblem>,
    },
    /// The signing session started inside the rule's time lock.
    #[error(
        "signing session entry {session} started {after_ms} ms after the quorum (entry time \
         {quorum_at_ms} ms), before rule {rule}'s {delay_secs}s time lock"
    )]
    TimeLock {
        /// The signing session entry.
        session: u64,
        /// Milliseconds between the quorum and the session.
        after_ms: u64,
        /// Log time at which the quorum was complete (or the decision made).
        quorum_at_ms: u64,
        /// The rule.
        rule: String,
        /// The rule's delay, seconds.
        delay_secs: u64,
    },

    // The chain transaction signed for an approved intent.
    /// The approved digest is neither what was signed nor the request's
    /// transfer intent.
    #[error(
        "approval entry {approval}: the approved digest {approved} is neither the signed digest \
         {signed} nor the transfer intent {intent} of the logged request"
    )]
    IntentMismatch {
        /// The first approval entry.
        approval: u64,
        /// The statement's digest (hex).
        approved: String,
        /// The signed digest (hex).
        signed: String,
        /// The logged request's transfer intent (hex).
        intent: String,
    },
    /// No logged transaction has the signed digest.
    #[error(
        "approval entry {approval}: digest {digest} was signed, and no transaction_prepared entry \
         of withdrawal {withdrawal} has it as its signing digest"
    )]
    NoPreparedTransaction {
        /// The first approval entry.
        approval: u64,
        /// The signed digest (hex).
        digest: String,
        /// The withdrawal.
        withdrawal: String,
    },
    /// The logged transaction is not a transfer this verifier can read.
    #[error("approval entry {approval}: transaction_prepared entry {entry}: not a transfer")]
    NotATransfer {
        /// The first approval entry.
        approval: u64,
        /// The `transaction_prepared` entry.
        entry: u64,
        /// Why it does not decode.
        #[source]
        source: Box<ChainError>,
    },
    /// The logged request's destination is not an address of the chain.
    #[error("approval entry {approval}: logged destination {destination:?}")]
    BadDestination {
        /// The first approval entry.
        approval: u64,
        /// The destination as logged.
        destination: String,
        /// Why it does not parse.
        #[source]
        source: Box<ChainError>,
    },
    /// The logged transaction pays someone other than the approved destination.
    #[error(
        "approval entry {approval}: transaction_prepared entry {entry} pays {pays}, the approval \
         names {approved}"
    )]
    WrongRecipient {
        /// The first approval entry.
        approval: u64,
        /// The `transaction_prepared` entry.
        entry: u64,
        /// Who the transaction pays.
        pays: String,
        /// The approved destination.
        approved: String,
    },
    /// The logged transaction moves another amount than approved.
    #[error(
        "approval entry {approval}: transaction_prepared entry {entry} moves {moves}, the approval {approved}"
    )]
    WrongAmount {
        /// The first approval entry.
        approval: u64,
        /// The `transaction_prepared` entry.
        entry: u64,
        /// What the transaction moves.
        moves: U256,
        /// The approved amount.
        approved: Amount,
    },
    /// The logged transaction may pay more in fees than the approved cap.
    #[error(
        "approval entry {approval}: transaction_prepared entry {entry} may pay {fee} wei in fees, \
         above the approved fee cap of {cap}"
    )]
    FeeAboveCap {
        /// The first approval entry.
        approval: u64,
        /// The `transaction_prepared` entry.
        entry: u64,
        /// Its maximum fee, wei.
        fee: U256,
        /// The approved fee cap.
        cap: Amount,
    },

    // Batched UTXO transactions (one transaction paying several withdrawals).
    /// The withdrawal was cancelled before it was signed (checked here for
    /// the other withdrawals of a batched transaction; the structural
    /// replay checks the signed one).
    #[error("withdrawal {withdrawal} was cancelled at entry {entry}")]
    Cancelled {
        /// The withdrawal.
        withdrawal: String,
        /// The `cancelled` entry.
        entry: u64,
    },
    /// The latest decision denies the withdrawal.
    #[error("decision entry {decision} (rule {rule}) denied the withdrawal")]
    Denied {
        /// The decision entry.
        decision: u64,
        /// The rule it names.
        rule: String,
    },
    /// The decision names another policy than the one active at that point
    /// of the log (or none was active).
    #[error("decision entry {decision} used policy {policy}, which was not the active policy")]
    PolicyNotActive {
        /// The decision entry.
        decision: u64,
        /// The policy hash it names (hex).
        policy: String,
    },
    /// A logged PSBT that several withdrawals prepared does not pay what they
    /// asked (or is not a transaction the verifier can read).
    #[error("batched transaction_prepared entry {prepared} (withdrawals {})", .withdrawals.join(", "))]
    BatchRefused {
        /// The signed withdrawal's `transaction_prepared` entry.
        prepared: u64,
        /// The withdrawals that prepared it, in log order.
        withdrawals: Vec<String>,
        /// What the transaction check refused.
        #[source]
        source: Box<ChainError>,
    },
    /// An output of a batched transaction pays someone no withdrawal that
    /// prepared it asked to pay, and is not change.
    #[error(
        "transaction_prepared entry {prepared}: output {output} pays {pays} ({amount}): no \
         withdrawal in the log prepared this transaction"
    )]
    BatchOutputUnprepared {
        /// The signed withdrawal's `transaction_prepared` entry.
        prepared: u64,
        /// The output's position.
        output: usize,
        /// Its address (or script, hex, when it has none).
        pays: String,
        /// Its amount, base units.
        amount: u64,
    },
    /// A withdrawal prepared a batched transaction that does not pay it.
    #[error(
        "withdrawal {withdrawal} prepared this transaction at entry {prepared}, which pays its \
         destination {destination} {}",
        paid_instead(.paid, .requested)
    )]
    BatchPayoutMissing {
        /// The withdrawal.
        withdrawal: String,
        /// Its `transaction_prepared` entry.
        prepared: u64,
        /// Its logged destination.
        destination: String,
        /// Its logged amount.
        requested: Amount,
        /// An output paying its destination another amount, if any
        /// (position, amount).
        paid: Option<(usize, u64)>,
    },
    /// A withdrawal logged the batched transaction only after the signers
    /// began signing it.
    #[error(
        "withdrawal {withdrawal} prepared this transaction at entry {prepared}, after its first \
         signing session (entry {session})"
    )]
    BatchPreparedLate {
        /// The withdrawal.
        withdrawal: String,
        /// Its `transaction_prepared` entry.
        prepared: u64,
        /// The first signing session of the transaction.
        session: u64,
    },
    /// A withdrawal's destination is not an address of the chain.
    #[error("withdrawal {withdrawal}: logged destination {destination:?}")]
    BatchDestination {
        /// The withdrawal.
        withdrawal: String,
        /// The destination as logged.
        destination: String,
        /// Why it does not parse.
        #[source]
        source: Box<ChainError>,
    },
    /// Another withdrawal paid by the signed (batched) transaction was not
    /// authorised when the transaction's first input was signed.
    #[error(
        "batch member {member} (transaction_prepared entry {prepared}) is not authorised at \
         signing session entry {session}"
    )]
    BatchMember {
        /// The member withdrawal.
        member: String,
        /// Its `transaction_prepared` entry of the transaction.
        prepared: u64,
        /// The first signing session of the transaction (the signed
        /// withdrawal's), the time the member is authorised at.
        session: u64,
        /// The rule its authorisation breaks.
        #[source]
        source: Box<VerifyError>,
    },

    // Fee bumps under `fee_bumps = "reapprove"`.
    /// A fee-bump approval's statement does not decode.
    #[error("fee_bump_approval entry {entry}: statement does not decode")]
    FeeBumpStatementUndecodable {
        /// The `fee_bump_approval` entry.
        entry: u64,
    },
    /// Two fee-bump approvals of one replacement carry different statements.
    #[error("fee_bump_approval entry {entry} signs another statement for the same replacement")]
    FeeBumpStatementDiffers {
        /// The `fee_bump_approval` entry that differs.
        entry: u64,
    },
    /// A replacement was signed without any fee-bump approval.
    #[error(
        "replacement {replacement} was signed under rule {rule} (fee_bumps = \"reapprove\") with \
         no fee_bump_approval entries for it"
    )]
    NoFeeBumpApprovals {
        /// The replacement's signed digest (hex).
        replacement: String,
        /// The rule.
        rule: String,
    },
    /// The fee-bump statement names another rule than the decision.
    #[error("the fee-bump statement names rule {named:?}, the decision {rule:?}")]
    FeeBumpRuleMismatch {
        /// The rule the statement names.
        named: String,
        /// The decision's rule.
        rule: String,
    },
    /// The fee-bump statement names a policy the auditor did not supply.
    #[error(
        "the fee-bump statement names policy {policy}, which is not among the supplied documents \
         (--policy)"
    )]
    FeeBumpPolicyUnknown {
        /// The policy hash (hex).
        policy: String,
    },
    /// Valid fee-bump approvals fall short of the rule's quorum.
    #[error("too few valid fee-bump approvals for rule {rule}: counted [{}]", .counted.join(", "))]
    FeeBumpQuorumMissing {
        /// The rule.
        rule: String,
        /// Approvers counted.
        counted: Vec<String>,
    },
    /// An authorised approver rejected the fee bump.
    #[error("fee bump rejected by {}", .by.join(", "))]
    FeeBumpRejected {
        /// Who rejected.
        by: Vec<String>,
    },
    /// Fee-bump approvals that do not count.
    #[error("invalid fee-bump approvals: {}", list_problems(.problems, "fee_bump_approval"))]
    FeeBumpApprovalsInvalid {
        /// Every problem, with its `fee_bump_approval` entry.
        problems: Vec<ApprovalProblem>,
    },

    // Mined nonces against the log (`onchain`).
    /// The nonce comparison needs every entry from the start of the log.
    #[error(
        "--evm-rpc needs a bundle from the start of the log (this one starts at entry {start}): \
         keys and earlier transactions would be missing"
    )]
    NotFromStart {
        /// The bundle's first entry.
        start: u64,
    },
    /// A bundle entry is not hex.
    #[error("entry {entry}: not hex")]
    EntryNotHex {
        /// The entry's position in the bundle.
        entry: u64,
    },
    /// A bundle entry does not decode.
    #[error("entry {entry}")]
    EntryUndecodable {
        /// The entry's position in the bundle.
        entry: u64,
        /// Why.
        #[source]
        source: AuditError,
    },
    /// The log names no withdrawal on a chain the auditor asked about (a
    /// misspelt name would report every mined nonce as unlogged).
    #[error(
        "--evm-rpc {chain}=...: the log names no withdrawal on chain {chain:?} (its chains: {})",
        if .known.is_empty() { "none".to_owned() } else { .known.join(", ") }
    )]
    UnknownChain {
        /// The chain asked about.
        chain: String,
        /// The chains the log names.
        known: Vec<String>,
    },
    /// The RPC client for a chain could not be set up.
    #[error("--evm-rpc {chain}")]
    Rpc {
        /// The chain.
        chain: String,
        /// The client's error.
        #[source]
        source: Box<ChainError>,
    },
    /// A chain node did not answer.
    #[error("{chain}: eth_getTransactionCount({address})")]
    RpcCall {
        /// The chain.
        chain: String,
        /// The wallet address asked about.
        address: String,
        /// The node's or transport's error.
        #[source]
        source: Box<ChainError>,
    },
    /// A wallet mined transactions with nonces no logged transaction has:
    /// its key signed outside the log.
    #[error(
        "{key_id} on {chain}: {address} mined {mined} transaction(s); nonce(s) {nonces:?} have no \
         logged transaction: signed outside the log"
    )]
    SignedOutsideLog {
        /// The wallet key.
        key_id: String,
        /// The chain.
        chain: String,
        /// The wallet's address.
        address: String,
        /// Transactions the chain says it mined.
        mined: u64,
        /// Mined nonces no logged transaction names.
        nonces: Vec<u64>,
    },
}

/// One approval (or fee-bump approval) that does not count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalProblem {
    /// The log entry of the approval, when the problem is with one approval
    /// (`None`: with the statement they share).
    pub entry: Option<u64>,
    /// The approver id as claimed.
    pub approver: String,
    /// Why it does not count.
    pub reason: String,
}

impl VerifyError {
    /// The message with every cause, `: `-separated: what the verifier's
    /// report says for the entry.
    pub fn explain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }
}

fn paid_instead(paid: &Option<(usize, u64)>, requested: &Amount) -> String {
    match paid {
        Some((output, amount)) => format!("{amount} at output {output}, its request {requested}"),
        None => format!("nothing (its request: {requested})"),
    }
}

fn needs(missing: &[MissingTerm]) -> String {
    let terms: Vec<String> = missing
        .iter()
        .map(|m| format!("{} more from {}", m.still_needed, m.group))
        .collect();
    terms.join(" and ")
}

fn list_problems(list: &[ApprovalProblem], kind: &str) -> String {
    let lines: Vec<String> = list
        .iter()
        .map(|p| match p.entry {
            Some(entry) => format!("{kind} entry {entry} ({}): {}", p.approver, p.reason),
            None => p.reason.clone(),
        })
        .collect();
    lines.join("; ")
}

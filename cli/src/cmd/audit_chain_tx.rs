//! The chain-transaction part of `custos audit verify --policy`.
//!
//! Approvals bind a transfer intent (the withdrawal's fields and fee cap,
//! `custos_policy::intent_digest`); on chains with a transaction adapter the
//! signers sign the transaction built from it, whose digest differs. The
//! coordinator logs each such transaction (`transaction_prepared`) before
//! its signing session, so the replay links the two: the signed digest is
//! the signing digest of a logged transaction, and that transaction pays the
//! approved destination exactly the approved amount, with fees within the
//! approved cap. A replacement (fee bump) signed under a rule with
//! `fee_bumps = "reapprove"` must also carry its own quorum over a fee-bump
//! statement naming exactly that transaction.
//!
//! Not re-checked: the chain id and an ERC-20 token's contract address
//! (chain configuration the log does not carry); the signers check both
//! against their own configuration.

use custos_audit::entry::Verdict as LogVerdict;
use custos_audit::{Entry, EntryBody};
use custos_chains::U256;
use custos_chains::evm::address::parse_address;
use custos_chains::evm::tx::{decode_unsigned, decode_unsigned_transfer, signing_digest};
use custos_policy::{
    ActivePolicy, Approval, ApprovalStatement, ApprovalStatus, FeeBumpStatement, Timestamp,
    Verdict, Withdrawal, check_fee_bump_approvals, intent_digest,
};

/// Checks that `message_digest`, signed for the approved `statement` of
/// `withdrawal` (the logged request), is a logged transaction that moves
/// what was approved. `history` is the withdrawal's earlier entries.
pub fn check_prepared_transaction(
    history: &[&Entry],
    withdrawal: &Withdrawal,
    statement: &ApprovalStatement,
    message_digest: &[u8],
) -> Result<(), String> {
    let mut w = withdrawal.clone();
    w.fee_cap = statement.fee_cap;
    let intent = intent_digest(&w);
    if statement.tx_digest.as_slice() != intent.as_slice() {
        return Err(format!(
            "the approved digest {} is neither the signed digest {} nor the transfer intent {} of the logged request",
            hex::encode(&statement.tx_digest),
            hex::encode(message_digest),
            hex::encode(intent)
        ));
    }
    let Some((index, tx)) = history.iter().find_map(|e| match &e.body {
        EntryBody::TransactionPrepared { unsigned_tx, .. }
            if decode_unsigned(unsigned_tx)
                .is_ok_and(|u| signing_digest(&u).as_slice() == message_digest) =>
        {
            Some((e.index, unsigned_tx))
        }
        _ => None,
    }) else {
        return Err(format!(
            "digest {} was signed, and no transaction_prepared entry of withdrawal {} has it as its signing digest",
            hex::encode(message_digest),
            w.id
        ));
    };
    let (_, d) = decode_unsigned_transfer(tx)
        .map_err(|e| format!("transaction_prepared entry {index}: not a transfer: {e}"))?;
    let destination = parse_address(&w.destination)
        .map_err(|e| format!("logged destination {:?}: {e}", w.destination))?;
    if d.recipient != destination {
        return Err(format!(
            "transaction_prepared entry {index} pays {}, the approval names {destination}",
            d.recipient
        ));
    }
    if d.amount != U256::from(w.amount.0) {
        return Err(format!(
            "transaction_prepared entry {index} moves {}, the approval {}",
            d.amount, w.amount
        ));
    }
    if d.fee_cap_wei > U256::from(statement.fee_cap.0) {
        return Err(format!(
            "transaction_prepared entry {index} may pay {} wei in fees, above the approved fee cap of {}",
            d.fee_cap_wei, statement.fee_cap
        ));
    }
    Ok(())
}

/// Verdicts on one fee-bump statement, with the index of the entry of each.
type BumpVerdicts = Vec<(u64, Approval)>;

/// The fee-bump approvals logged for the replacement signed as
/// `message_digest`: the statement bytes and the verdicts over them (all
/// entries must carry the same statement).
fn bump_verdicts(
    history: &[&Entry],
    message_digest: &[u8],
) -> Result<Option<(FeeBumpStatement, BumpVerdicts)>, String> {
    let mut found: Option<(Vec<u8>, FeeBumpStatement, BumpVerdicts)> = None;
    for e in history {
        let EntryBody::FeeBumpApproval {
            approver_id,
            verdict,
            statement,
            signature,
            ..
        } = &e.body
        else {
            continue;
        };
        let Ok(decoded) = FeeBumpStatement::decode(statement) else {
            return Err(format!(
                "fee_bump_approval entry {}: statement does not decode",
                e.index
            ));
        };
        if decoded.replacement.as_slice() != message_digest {
            continue;
        }
        let approval = Approval {
            approver: approver_id.clone(),
            verdict: match verdict {
                LogVerdict::Approve => Verdict::Approve,
                LogVerdict::Reject => Verdict::Reject,
            },
            signature: hex::encode(signature),
        };
        match &mut found {
            None => found = Some((statement.clone(), decoded, vec![(e.index, approval)])),
            Some((bytes, _, list)) if bytes == statement => list.push((e.index, approval)),
            Some(_) => {
                return Err(format!(
                    "fee_bump_approval entry {} signs another statement for the same replacement",
                    e.index
                ));
            }
        }
    }
    Ok(found.map(|(_, s, l)| (s, l)))
}

/// For a replacement signed as `message_digest` under `rule_id` (which says
/// `fee_bumps = "reapprove"`): the rule's quorum, in the policy the fee-bump
/// statement names (`policy` finds it among the supplied documents), approved
/// a statement naming exactly this transaction, valid at `at`.
pub fn check_fee_bump_quorum(
    history: &[&Entry],
    policy: impl Fn(&str) -> Option<ActivePolicy>,
    rule_id: &str,
    initiator: &str,
    message_digest: &[u8],
    at: Timestamp,
) -> Result<(), String> {
    let Some((statement, verdicts)) = bump_verdicts(history, message_digest)? else {
        return Err(format!(
            "replacement {} was signed under rule {rule_id} (fee_bumps = \"reapprove\") with no fee_bump_approval entries for it",
            hex::encode(message_digest)
        ));
    };
    if statement.rule_id != rule_id {
        return Err(format!(
            "the fee-bump statement names rule {:?}, the decision {rule_id:?}",
            statement.rule_id
        ));
    }
    let hash = statement.policy_hash.to_string();
    let active = policy(&hash).ok_or_else(|| {
        format!("the fee-bump statement names policy {hash}, which is not among the supplied documents (--policy)")
    })?;
    let list: Vec<Approval> = verdicts.iter().map(|(_, a)| a.clone()).collect();
    match check_fee_bump_approvals(&active, initiator, &statement, &list, at) {
        ApprovalStatus::Satisfied { .. } => Ok(()),
        ApprovalStatus::Missing { approvers, .. } => Err(format!(
            "too few valid fee-bump approvals for rule {rule_id}: counted [{}]",
            approvers.join(", ")
        )),
        ApprovalStatus::Rejected { by } => Err(format!("fee bump rejected by {}", by.join(", "))),
        ApprovalStatus::Invalid { problems } => {
            let p: Vec<String> = problems
                .iter()
                .map(|p| match p.index.and_then(|i| verdicts.get(i)) {
                    Some((index, _)) => {
                        format!(
                            "fee_bump_approval entry {index} ({}): {}",
                            p.approver, p.reason
                        )
                    }
                    None => p.reason.clone(),
                })
                .collect();
            Err(format!("invalid fee-bump approvals: {}", p.join("; ")))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use custos_chains::evm::asset::Asset;
    use custos_chains::evm::tx::{TransferRequest, build_unsigned, encode_unsigned};
    use custos_policy::{Amount, Policy, PolicyHash, SecretKey, Zeroizing};

    const TO: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    const OTHER: &str = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359";
    const FEE_CAP: u128 = 2_100_000_000_000_000;

    fn withdrawal() -> Withdrawal {
        Withdrawal {
            id: "wd-1".into(),
            wallet: "w-eth".into(),
            chain: "anvil".into(),
            asset: "ETH".into(),
            destination: TO.into(),
            amount: Amount(1_500_000_000_000_000_000),
            fee_cap: Amount(FEE_CAP),
            initiator: "payments-backend".into(),
            tx_digest: String::new(),
        }
    }

    fn statement(w: &Withdrawal) -> ApprovalStatement {
        ApprovalStatement {
            withdrawal_id: w.id.clone(),
            chain: w.chain.clone(),
            asset: w.asset.clone(),
            source_wallet: w.wallet.clone(),
            destination: w.destination.clone(),
            amount: w.amount,
            fee_cap: Amount(FEE_CAP),
            tx_digest: intent_digest(w).to_vec(),
            policy_hash: PolicyHash([1; 32]),
            rule_id: "two".into(),
            expiry: Timestamp(2_000_000_000),
        }
    }

    fn tx(to: &str, amount: u128, max_fee_per_gas: u128) -> Vec<u8> {
        encode_unsigned(
            &build_unsigned(&TransferRequest {
                chain_id: 31337,
                from: parse_address("0x90F79bf6EB2c4f870365E785982E1f101E93b906").unwrap(),
                recipient: parse_address(to).unwrap(),
                asset: Asset::eth(),
                amount: U256::from(amount),
                nonce: 0,
                gas_limit: 21_000,
                max_fee_per_gas,
                max_priority_fee_per_gas: 1,
            })
            .unwrap(),
        )
    }

    fn digest(tx: &[u8]) -> Vec<u8> {
        signing_digest(&decode_unsigned(tx).unwrap()).to_vec()
    }

    fn entry(index: u64, body: EntryBody) -> Entry {
        Entry {
            index,
            timestamp_ms: 1_700_000_000_000 + index,
            body,
        }
    }

    fn prepared(index: u64, unsigned_tx: Vec<u8>) -> Entry {
        entry(
            index,
            EntryBody::TransactionPrepared {
                withdrawal_id: "wd-1".into(),
                chain: "anvil".into(),
                unsigned_tx,
            },
        )
    }

    fn check(entries: &[Entry], st: &ApprovalStatement, d: &[u8]) -> Result<(), String> {
        let history: Vec<&Entry> = entries.iter().collect();
        check_prepared_transaction(&history, &withdrawal(), st, d)
    }

    #[test]
    fn a_logged_transaction_of_the_approved_transfer_links_the_digests() {
        let w = withdrawal();
        let st = statement(&w);
        let good = tx(TO, w.amount.0, 1_000_000_000);
        assert_eq!(
            check(&[prepared(1, good.clone())], &st, &digest(&good)),
            Ok(())
        );
        // Nothing logged with that digest.
        let e = check(&[], &st, &digest(&good)).unwrap_err();
        assert!(e.contains("no transaction_prepared entry"), "{e}");
        // Logged, but paying someone else, another amount, or above the cap.
        for (bad, why) in [
            (tx(OTHER, w.amount.0, 1_000_000_000), "pays"),
            (tx(TO, w.amount.0 + 1, 1_000_000_000), "moves"),
            (
                tx(TO, w.amount.0, FEE_CAP / 21_000 + 1),
                "above the approved fee cap",
            ),
        ] {
            let e = check(&[prepared(2, bad.clone())], &st, &digest(&bad)).unwrap_err();
            assert!(e.contains(why) && e.contains("entry 2"), "{why}: {e}");
        }
        // A statement whose digest is not the request's intent.
        let mut other = st.clone();
        other.tx_digest = vec![9; 32];
        let e = check(&[prepared(1, good.clone())], &other, &digest(&good)).unwrap_err();
        assert!(e.contains("transfer intent"), "{e}");
    }

    fn key(name: &str) -> SecretKey {
        let pem = match name {
            "alice" => include_str!("../../../examples/keys/alice.pem"),
            "bob" => include_str!("../../../examples/keys/bob.pem"),
            other => panic!("no key {other}"),
        };
        SecretKey::from_pem(&Zeroizing::new(pem.to_owned())).unwrap()
    }

    fn policy() -> ActivePolicy {
        let doc = format!(
            "version = 1\n\
             [[approvers]]\nid = \"alice\"\nrole = \"treasury\"\ned25519 = \"{}\"\n\
             [[approvers]]\nid = \"bob\"\nrole = \"treasury\"\ned25519 = \"{}\"\n\
             [groups]\ntreasury = [\"alice\", \"bob\"]\n\
             [[rules]]\nid = \"two\"\naction = \"require_approvals\"\n\
             approvals = {{ all = [{{ group = \"treasury\", count = 2 }}] }}\n\
             fee_bumps = \"reapprove\"\n",
            key("alice").public().to_hex(),
            key("bob").public().to_hex()
        );
        ActivePolicy::assumed(Policy::parse(doc.as_bytes()).unwrap(), Timestamp(0))
    }

    fn bump_statement(active: &ActivePolicy, replacement: &[u8]) -> FeeBumpStatement {
        FeeBumpStatement {
            withdrawal_id: "wd-1".into(),
            statement_hash: [3; 32],
            chain: "anvil".into(),
            nonce: 0,
            replaces: [4; 32],
            replacement: replacement.try_into().unwrap(),
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 2,
            gas_limit: 21_000,
            policy_hash: active.policy().hash(),
            rule_id: "two".into(),
            expiry: Timestamp(1_700_000_000 + 3600),
        }
    }

    fn verdict(index: u64, s: &FeeBumpStatement, who: &str) -> Entry {
        let a = s.sign(Verdict::Approve, who, &key(who)).unwrap();
        entry(
            index,
            EntryBody::FeeBumpApproval {
                withdrawal_id: "wd-1".into(),
                approver_id: who.into(),
                verdict: LogVerdict::Approve,
                statement: s.encode().unwrap(),
                signature: hex::decode(a.signature).unwrap(),
            },
        )
    }

    #[test]
    fn a_reapproved_replacement_needs_its_quorum_over_exactly_it() {
        let active = policy();
        let replacement = digest(&tx(TO, 1, 2_000_000_000));
        let s = bump_statement(&active, &replacement);
        let at = Timestamp(1_700_000_100);
        let run = |entries: &[Entry], d: &[u8]| {
            let history: Vec<&Entry> = entries.iter().collect();
            let p = active.clone();
            check_fee_bump_quorum(
                &history,
                |h| (h == p.policy().hash().to_string()).then(|| p.clone()),
                "two",
                "payments-backend",
                d,
                at,
            )
        };
        let both = [verdict(5, &s, "alice"), verdict(6, &s, "bob")];
        assert_eq!(run(&both, &replacement), Ok(()));
        let e = run(&both[..1], &replacement).unwrap_err();
        assert!(e.contains("too few"), "{e}");
        let e = run(&[], &replacement).unwrap_err();
        assert!(e.contains("no fee_bump_approval entries"), "{e}");
        // Approvals of another replacement do not count for this one.
        let e = run(&both, &[8; 32]).unwrap_err();
        assert!(e.contains("no fee_bump_approval entries"), "{e}");
        // Expired by the time the replacement was signed.
        let late = FeeBumpStatement {
            expiry: Timestamp(at.0 - 1),
            ..s.clone()
        };
        let e = run(
            &[verdict(5, &late, "alice"), verdict(6, &late, "bob")],
            &replacement,
        )
        .unwrap_err();
        assert!(e.contains("expired"), "{e}");
        // A statement naming a policy the auditor was not given.
        let foreign = FeeBumpStatement {
            policy_hash: PolicyHash([0; 32]),
            ..s.clone()
        };
        let e = run(
            &[verdict(5, &foreign, "alice"), verdict(6, &foreign, "bob")],
            &replacement,
        )
        .unwrap_err();
        assert!(e.contains("not among the supplied documents"), "{e}");
    }
}

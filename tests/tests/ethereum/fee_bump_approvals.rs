//! Fee bumps under a rule with `fee_bumps = "reapprove"` (issue #7: a
//! replacement is re-approved when the policy says a fee bump needs it).
//!
//! On a real anvil with mining paused: the stuck transaction's replacement
//! waits for the rule's quorum over a fee-bump statement; a reject abandons
//! it (the transaction in flight stays) and a new one is proposed; signers
//! refuse a replacement whose approvals are missing, short or of the wrong
//! kind; the approved replacement is signed, mined and confirmed, and every
//! verdict is in the audit log.

use custos_chains::evm::tx::{
    ReplacementFees, decode_unsigned, encode_unsigned, signing_digest, with_fees,
};
use custos_policy::{Approval, ApprovalStatement, FeeBumpStatement, Verdict};
use custos_proto::custody::SubmitApprovalRequest;
use custos_proto::signer::WithdrawalAuthorization;
use sha2::Digest;
use tonic::Code;

use super::*;

/// The Ethereum test policy with `fee_bumps = "reapprove"` on its 2-of-3 rule.
fn reapproving_policy() -> String {
    let text = eth_policy_text();
    let out = text.replace(
        "id = \"medium-two-approvals\"\n",
        "id = \"medium-two-approvals\"\nfee_bumps = \"reapprove\"\n",
    );
    assert_ne!(out, text, "the fixture has the rule");
    out
}

/// Signs the pending fee bump of `w` as `who` and submits it.
async fn bump_verdict(
    fc: &FlowCluster,
    w: &Withdrawal,
    who: &str,
    verdict: Verdict,
) -> Result<Withdrawal, tonic::Status> {
    let statement = FeeBumpStatement::decode(&w.fee_bump_statement).unwrap();
    let a = statement.sign(verdict, who, &approver_key(who)).unwrap();
    submit_bump(fc, w, &a, w.fee_bump_statement.clone()).await
}

async fn submit_bump(
    fc: &FlowCluster,
    w: &Withdrawal,
    a: &Approval,
    statement: Vec<u8>,
) -> Result<Withdrawal, tonic::Status> {
    let verdict = match a.verdict {
        Verdict::Reject => custos_proto::custody::Verdict::Reject,
        _ => custos_proto::custody::Verdict::Approve,
    };
    fc.approver
        .clone()
        .submit_approval(SubmitApprovalRequest {
            withdrawal_id: w.id.clone(),
            approver: a.approver.clone(),
            verdict: verdict as i32,
            signature: a.signature.clone(),
            reason: String::new(),
            fee_bump_statement: statement,
            webauthn: None,
        })
        .await
        .map(|r| r.into_inner())
}

/// Runs the `custos` CLI against the cluster in `dir`; returns its stdout
/// (panics, with its stderr, if it fails).
fn cli(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(bin_dir().join("custos"))
        .args(args)
        .arg("--cluster")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "custos {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits for a fee-bump statement other than `not` to be pending on `id`.
async fn wait_for_bump(fc: &FlowCluster, id: &str, not: &[u8]) -> (Withdrawal, FeeBumpStatement) {
    let w = wait_until(
        fc,
        id,
        Duration::from_secs(60),
        "a fee bump awaiting approvals",
        |x| !x.fee_bump_statement.is_empty() && x.fee_bump_statement != not,
    )
    .await;
    let s = FeeBumpStatement::decode(&w.fee_bump_statement).unwrap();
    (w, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fee_bump_under_a_reapprove_rule_waits_for_its_quorum() {
    let anvil = Anvil::start().await;
    let rpc = rpc(&anvil.url);
    let policy = reapproving_policy();
    let (fc, addrs) = start_eth_policy(
        &anvil,
        &["w-eth"],
        None,
        "resubmit_after_secs = 2\nfee_bump_percent = 25",
        Some(&policy),
    )
    .await;
    let wallet = addrs[0];
    fund(&rpc, wallet, 5 * ETH).await;
    let payee_before = rpc.balance(addr(PAYEE_1)).await.unwrap();
    automine(&rpc, false).await;

    let w = create(&fc, "reapprove-1", "w-eth", "ETH", PAYEE_1, 3 * ETH / 2).await;
    let w = wait_for(&fc, &w.id, "awaiting_approvals", Duration::from_secs(20)).await;
    assert_eq!(w.rule_id, "medium-two-approvals");
    approve(&fc.approver, &w, "alice").await;
    approve(&fc.approver, &w, "bob").await;
    let first = wait_in_pool(&fc, &rpc, &w.id).await;
    let first_unsigned = decode_unsigned(&first.unsigned_tx).unwrap();

    // 1. Stuck: a replacement is proposed and waits for approvers; nothing
    //    is signed meanwhile.
    let (pending, st) = wait_for_bump(&fc, &w.id, &[]).await;
    assert_eq!(st.withdrawal_id, w.id);
    assert_eq!(st.rule_id, "medium-two-approvals");
    assert_eq!(st.chain, "anvil");
    assert_eq!(st.replaces, signing_digest(&first_unsigned));
    let approved: [u8; 32] = sha2::Sha256::digest(&pending.statement).into();
    assert_eq!(st.statement_hash, approved);
    let (_, first_tx) = decode_unsigned_transfer(&first.unsigned_tx).unwrap();
    assert_eq!(st.nonce, first_tx.nonce);
    assert_eq!(st.gas_limit, first_tx.gas_limit);
    assert!(st.max_fee_per_gas * 100 >= first_tx.max_fee_per_gas * 125);
    assert!(
        U256::from(st.max_fee_per_gas) * U256::from(st.gas_limit)
            <= U256::from(2_100_000_000_000_000u128)
    );
    let layout = fc.tc.cluster.layout().clone();
    let signed_once = journal_signatures(&layout, &w.id);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = get(&fc, &w.id).await;
    assert_eq!(
        still.tx_hash, first.tx_hash,
        "not replaced without approvals"
    );
    assert_eq!(
        still.fee_bump_statement, pending.fee_bump_statement,
        "proposed once"
    );
    assert!(
        still
            .signer_notes
            .iter()
            .any(|n| n.contains("awaits approvals") && n.contains("needs 2 more from treasury")),
        "{:?}",
        still.signer_notes
    );
    assert_eq!(journal_signatures(&layout, &w.id), signed_once);
    // Meanwhile the transaction in flight is still watched: dropped by the
    // node, it is sent again, byte for byte.
    let in_flight: B256 = first.tx_hash.parse().unwrap();
    rpc.request("anvil_dropTransaction", json!([in_flight]))
        .await
        .unwrap();
    assert!(!rpc.transaction_exists(in_flight).await.unwrap(), "dropped");
    let started = Instant::now();
    while !rpc.transaction_exists(in_flight).await.unwrap() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not re-sent while the bump waits"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2. A coordinator that skips the quorum: every signer that signed the
    //    first version refuses the (exact) replacement, and records nothing.
    let replacement = encode_unsigned(
        &with_fees(
            &first_unsigned,
            ReplacementFees {
                max_fee_per_gas: st.max_fee_per_gas,
                max_priority_fee_per_gas: st.max_priority_fee_per_gas,
            },
        )
        .unwrap(),
    );
    assert_eq!(
        signing_digest(&decode_unsigned(&replacement).unwrap()),
        st.replacement,
        "the rebuilt replacement is the one proposed"
    );
    let p = layout.policy.as_ref().unwrap();
    let (document, signatures) = (
        std::fs::read(&p.document).unwrap(),
        std::fs::read(&p.signatures).unwrap(),
    );
    let withdrawal_json = policy_withdrawal_json(&first, first.amount.parse().unwrap());
    let alice_bump = st
        .sign(Verdict::Approve, "alice", &approver_key("alice"))
        .unwrap();
    // bob's approval of the withdrawal itself, replayed as a bump approval.
    let bob_withdrawal = Approval::sign(
        &ApprovalStatement::decode(&pending.statement).unwrap(),
        Verdict::Approve,
        "bob",
        &approver_key("bob"),
    )
    .unwrap();
    let cases: Vec<(&str, Vec<Approval>, &str)> = vec![
        ("no approvals", vec![], "needs approvals for a fee bump"),
        ("one of two", vec![alice_bump.clone()], "too few approvals"),
        (
            "a withdrawal approval as the second",
            vec![alice_bump.clone(), bob_withdrawal.clone()],
            "does not verify",
        ),
    ];
    let signers = rogue_clients(&layout).await;
    for (i, (what, approvals, why)) in cases.into_iter().enumerate() {
        let auth = WithdrawalAuthorization {
            withdrawal_json: withdrawal_json.clone(),
            unsigned_tx: replacement.clone(),
            policy_document: document.clone(),
            policy_signatures: signatures.clone(),
            rule_id: first.rule_id.clone(),
            fee_bump_approvals_json: serde_json::to_vec(&approvals).unwrap(),
            fee_bump_expiry: st.expiry.0,
            ..Default::default()
        };
        let presig = format!("ps-rogue-reapprove-{i}");
        let named = refusals_saying(&signers, auth, "w-eth", &presig, why).await;
        assert!(
            named >= 2,
            "{what}: the signers of the first version say {why:?}"
        );
    }
    assert_eq!(
        journal_signatures(&layout, &w.id),
        signed_once,
        "nothing recorded"
    );

    // 3. Bad verdicts are refused by the coordinator, naming why.
    let e = submit_bump(
        &fc,
        &pending,
        &bob_withdrawal,
        pending.fee_bump_statement.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("does not verify"), "{e}");
    let mut stale = pending.fee_bump_statement.clone();
    let last = stale.len() - 1;
    stale[last] ^= 1;
    let e = submit_bump(&fc, &pending, &alice_bump, stale)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("fee_bump_statement"), "{e}");

    // 4. One reject denies this replacement: the transaction in flight
    //    stays, and a new replacement (higher fees, new statement) follows.
    bump_verdict(&fc, &pending, "alice", Verdict::Approve)
        .await
        .unwrap();
    let e = bump_verdict(&fc, &pending, "alice", Verdict::Approve)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    bump_verdict(&fc, &pending, "carol", Verdict::Reject)
        .await
        .unwrap();
    let (second, st2) = wait_for_bump(&fc, &w.id, &pending.fee_bump_statement).await;
    assert!(
        second
            .signer_notes
            .iter()
            .any(|n| n.contains("rejected by carol")),
        "{:?}",
        second.signer_notes
    );
    assert_eq!(
        second.tx_hash, first.tx_hash,
        "the rejected replacement was never sent"
    );
    assert!(
        st2.max_fee_per_gas > st.max_fee_per_gas,
        "raised above the abandoned one"
    );
    assert_eq!(st2.replaces, st.replaces);
    assert!(
        second.fee_bump_approvals.is_empty(),
        "verdicts on the old statement do not carry over"
    );
    // alice's approval of the abandoned replacement does not count for this one.
    let e = submit_bump(&fc, &second, &alice_bump, second.fee_bump_statement.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");

    // 5. The quorum approves (bob with the CLI, after reviewing it there):
    //    the replacement is signed and sent.
    let after = bump_verdict(&fc, &second, "alice", Verdict::Approve)
        .await
        .unwrap();
    assert_eq!(after.fee_bump_approvals.len(), 1);
    let shown = cli(&layout.dir, &["show", &w.id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["fee_bump"]["statement"]["nonce"], json!(st2.nonce), "{v}");
    assert_eq!(
        v["fee_bump"]["most_fee_wei"],
        json!((st2.max_fee_per_gas * u128::from(st2.gas_limit)).to_string())
    );
    assert_eq!(v["fee_bump"]["verdicts"][0]["approver"], "alice");
    let text = cli(&layout.dir, &["show", &w.id]);
    assert!(text.contains("fee bump awaiting approvals"), "{text}");
    let key = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/keys/bob.pem");
    let out = cli(
        &layout.dir,
        &[
            "approve",
            &w.id,
            "--fee-bump",
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains(&format!("fee bump of {} approved by bob", w.id)),
        "{out}"
    );
    let bumped = wait_until(&fc, &w.id, Duration::from_secs(60), "replaced", |x| {
        x.tx_hash != first.tx_hash && !x.tx_hash.is_empty()
    })
    .await;
    let bumped = wait_in_pool(&fc, &rpc, &bumped.id).await;
    let bumped_unsigned = decode_unsigned(&bumped.unsigned_tx).unwrap();
    assert_eq!(
        signing_digest(&bumped_unsigned),
        st2.replacement,
        "exactly what was approved"
    );
    assert!(
        bumped.fee_bump_statement.is_empty(),
        "nothing pending any more"
    );
    mine(&rpc, 1).await;
    let done = wait_for(&fc, &w.id, "confirmed", Duration::from_secs(60)).await;
    assert_eq!(done.tx_hash, bumped.tx_hash);
    assert_eq!(
        rpc.transaction_count(wallet, BlockTag::Latest)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        rpc.balance(addr(PAYEE_1)).await.unwrap(),
        payee_before + U256::from(3 * ETH / 2)
    );
    // Nothing is pending any more: the CLI says so and signs nothing.
    let out = std::process::Command::new(bin_dir().join("custos"))
        .args([
            "approve",
            &w.id,
            "--fee-bump",
            "--key",
            key.to_str().unwrap(),
        ])
        .arg("--cluster")
        .arg(&layout.dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no fee bump awaiting approvals"), "{err}");

    // 6. Every verdict on a fee bump is in the audit log, under its own kind.
    // (Entries are served, and exported, up to the latest checkpoint: wait
    // until it covers the confirmation, the withdrawal's last entry.)
    let mut auditor = fc.auditor.clone();
    let started = Instant::now();
    let entries = loop {
        let entries = log_entries(&mut auditor).await;
        if entries.iter().any(|e| {
            matches!(&e.body, custos_audit::EntryBody::Confirmed { withdrawal_id, .. } if *withdrawal_id == w.id)
        }) {
            break entries;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoint covers the confirmation of {}",
            w.id
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let bump_entries: Vec<(String, Vec<u8>)> = entries
        .into_iter()
        .filter_map(|e| match e.body {
            custos_audit::EntryBody::FeeBumpApproval {
                withdrawal_id,
                approver_id,
                statement,
                ..
            } => {
                assert_eq!(withdrawal_id, w.id);
                Some((approver_id, statement))
            }
            _ => None,
        })
        .collect();
    let names: Vec<&str> = bump_entries.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        ["alice", "carol", "alice", "bob"],
        "in order, with the statement each signed"
    );
    assert_eq!(bump_entries[3].1, second.fee_bump_statement);

    // 7. The auditor's offline replay authorises both signatures (the first,
    //    and the approved replacement with its fee-bump quorum).
    // Export only once every witness co-signed a checkpoint covering the
    // whole log: the last entries may still be in a witness round.
    custos_tests::audit::settled(&fc).await;
    let trust = cli(&layout.dir, &["audit", "keys"]);
    let bundle = fc.tc.dir.path().join("bundle.json");
    cli(
        &layout.dir,
        &["audit", "export", "--out", bundle.to_str().unwrap()],
    );
    let policy_file = fc.tc.dir.path().join("eth-policy.toml");
    let admins = layout.policy.as_ref().unwrap().admins.clone();
    let mut args = vec!["audit", "verify", bundle.to_str().unwrap()];
    args.extend(trust.split_whitespace());
    args.extend([
        "--policy",
        policy_file.to_str().unwrap(),
        "--admins",
        admins.to_str().unwrap(),
    ]);
    let out = std::process::Command::new(bin_dir().join("custos"))
        .args(&args)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("signatures   2 authorised of 2 checked"),
        "{stdout}"
    );
    fc.tc.cluster.stop().await.unwrap();
}

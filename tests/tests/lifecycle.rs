//! Daemon lifecycle: SIGTERM drains instead of crashing.
//!
//! The coordinator is sent SIGTERM while 20 CreateWithdrawal calls and a few
//! approvals (each starting a signing round) are in flight. It must exit 0
//! within its drain bound; every request it answered OK must be stored; and
//! after a restart every withdrawal must reach the state it was headed for
//! (nothing left half-done), with the audit log still verifying. A signer
//! sent SIGTERM exits 0 at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use custos_tests::audit::{export, keys, settled, verify};
use custos_tests::*;

/// The coordinator's `drain_timeout_secs` (the default).
const DRAIN: Duration = Duration::from_secs(10);
/// Closing after the drain (event dispatcher, audit log, database: 1 s
/// each at most) and the runtime's grace for blocking threads (1 s), plus
/// slack for a loaded 2-core machine.
const EXIT_BOUND: Duration = Duration::from_secs(DRAIN.as_secs() + 4 + 3);
/// Concurrent CreateWithdrawal calls.
const CREATES: usize = 20;
const LIMIT: Duration = Duration::from_secs(180);

/// A small allowed payout (the `small-allow` rule: signs without approvals).
fn small(i: usize) -> custos_proto::custody::CreateWithdrawalRequest {
    withdrawal_req(&format!("load-{i}"), "w-vel", WHITELISTED, ETH / 100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_drains_and_everything_resumes() {
    let mut fc = start_flow(&flow_policy(), false, &["w-hot", "w-vel"]).await;

    // Withdrawals that need two approvals; alice's is in before the load,
    // bob's completes the quorum during it (each then starts signing).
    let mut approved = Vec::new();
    for i in 0..3 {
        let w = fc
            .backend
            .clone()
            .create_withdrawal(withdrawal_req(
                &format!("two-{i}"),
                "w-hot",
                WHITELISTED,
                5 * ETH,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(w.state, "awaiting_approvals", "{}", w.reason);
        approve(&fc.approver, &w, "alice").await;
        approved.push(w);
    }
    // One that waits for approvals across the restart.
    let waiting = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("waits", "w-hot", WHITELISTED, 4 * ETH))
        .await
        .unwrap()
        .into_inner();

    // The load: 20 creates spread over ~1 s, and the approvals.
    let answered = Arc::new(AtomicUsize::new(0));
    let mut creates = Vec::new();
    for i in 0..CREATES {
        let backend = fc.backend.clone();
        let answered = answered.clone();
        creates.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50 * i as u64)).await;
            let r = backend.clone().create_withdrawal(small(i)).await;
            if r.is_ok() {
                answered.fetch_add(1, Ordering::SeqCst);
            }
            (i, r.map(|r| r.into_inner()))
        }));
    }
    let mut approvals = Vec::new();
    for w in &approved {
        let approver = fc.approver.clone();
        let w = w.clone();
        approvals.push(tokio::spawn(async move {
            submit_verdict(&approver, &w, "bob", custos_policy::Verdict::Approve, "")
                .await
                .map(|_| ())
        }));
    }

    // SIGTERM mid-load: once a few creates were answered, while the rest
    // are still arriving and the first ones are signing.
    let started = Instant::now();
    while answered.load(Ordering::SeqCst) < 4 {
        assert!(started.elapsed() < LIMIT, "no create answered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Calls in flight at the signal are drained and answered OK, so this,
    // not the number of OK answers, says the signal came mid-load.
    let answered_before = answered.load(Ordering::SeqCst);
    assert!(
        answered_before < CREATES,
        "every create answered before SIGTERM"
    );
    let sent = Instant::now();
    let status = fc
        .tc
        .cluster
        .terminate_within("coordinator", EXIT_BOUND)
        .await
        .unwrap();
    let took = sent.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!("the coordinator did not exit within {EXIT_BOUND:?} of SIGTERM: SIGKILLed")
    });
    assert!(
        status.success(),
        "the coordinator exited {status} after SIGTERM"
    );
    println!("coordinator exited 0 {took:?} after SIGTERM");

    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for c in creates {
        match c.await.unwrap() {
            (i, Ok(w)) => ok.push((i, w)),
            (i, Err(e)) => refused.push((i, e)),
        }
    }
    let approvals_ok = futures::future::join_all(approvals)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(()))))
        .count();
    println!(
        "{} creates answered OK, {} refused or cut off ({:?}); {approvals_ok} of 3 approvals answered",
        ok.len(),
        refused.len(),
        refused
            .iter()
            .map(|(_, e)| format!("{:?}", e.code()))
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(ok.len() >= answered_before);
    let log = std::fs::read_to_string(fc.tc.cluster.layout().log_file("coordinator")).unwrap();
    for line in log.lines().filter(|l| {
        l.contains("drain")
            || l.contains("cut off")
            || l.contains("closed")
            || l.contains("stopped")
    }) {
        println!("coordinator: {line}");
    }
    assert!(
        log.contains("coordinator stopped"),
        "no orderly stop in the log"
    );

    fc.tc.cluster.restart_coordinator().await.unwrap();
    fc.tc.wait_aux_ready(Duration::from_secs(60)).await;

    // Every OK answer is stored, as answered.
    for (i, w) in &ok {
        let stored = withdrawal(&fc.backend, &w.id).await;
        assert_eq!(stored.idempotency_key, format!("load-{i}"));
    }
    // A refused request is safe to retry: the same key gives the stored
    // withdrawal if the coordinator had committed it, a new one otherwise.
    let mut all_small = ok.iter().map(|(_, w)| w.id.clone()).collect::<Vec<_>>();
    for (i, _) in &refused {
        let w = fc
            .backend
            .clone()
            .create_withdrawal(small(*i))
            .await
            .unwrap()
            .into_inner();
        all_small.push(w.id);
    }
    // An approval whose call was refused is given again. (One stored
    // without its quorum acted on would be refused here as a repeat and
    // leave the withdrawal stuck: the drain must not leave that.)
    for w in &approved {
        let now = withdrawal(&fc.backend, &w.id).await;
        if now.state == "awaiting_approvals"
            && let Err(e) = submit_verdict(
                &fc.approver,
                &now,
                "bob",
                custos_policy::Verdict::Approve,
                "",
            )
            .await
        {
            panic!(
                "{} half-done: {} approvals stored, still awaiting approvals, bob's again: {e}",
                w.id,
                now.approvals.len()
            );
        }
    }

    // Nothing half-done: everything reaches the state it was headed for.
    for id in all_small.iter().chain(approved.iter().map(|w| &w.id)) {
        wait_state(&fc.backend, id, &["signed"], LIMIT).await;
    }
    assert_eq!(
        withdrawal(&fc.backend, &waiting.id).await.state,
        "awaiting_approvals"
    );
    let listed = all_withdrawals(&fc.backend).await;
    assert_eq!(
        listed.len(),
        CREATES + approved.len() + 1,
        "{:?}",
        listed.iter().map(|w| (&w.id, &w.state)).collect::<Vec<_>>()
    );

    // The audit log, across the stop, replays against the policy.
    let keys = keys(&fc).await;
    settled(&fc).await;
    let bundle = fc.tc.dir.path().join("bundle.json");
    std::fs::write(
        &bundle,
        serde_json::to_vec(&export(&fc, 0, 0).await).unwrap(),
    )
    .unwrap();
    let layout = fc.tc.cluster.layout().clone();
    let admins = layout.policy.as_ref().unwrap().admins.clone();
    let policy = flow_policy();
    let o = verify(
        &bundle,
        &keys,
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--admins",
            admins.to_str().unwrap(),
        ],
    );
    assert!(o.ok, "the audit log does not verify after the stop\n{o}");
    let signed = CREATES + approved.len();
    assert!(
        o.stdout.contains(&format!(
            "signatures   {signed} authorised of {signed} checked"
        )),
        "{o}"
    );

    // A signer stops at once on SIGTERM, and exits 0.
    let node = layout.signers[0].node_id.clone();
    let sent = Instant::now();
    let status = fc
        .tc
        .cluster
        .terminate_within(&node, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{node} did not exit within 5 s of SIGTERM"));
    assert!(status.success(), "{node} exited {status} after SIGTERM");
    println!("{node} exited 0 {:?} after SIGTERM", sent.elapsed());
    let log = std::fs::read_to_string(layout.log_file(&node)).unwrap();
    assert!(
        log.contains("signer node stopped"),
        "no orderly stop in the log"
    );

    fc.tc.cluster.stop().await.unwrap();
}

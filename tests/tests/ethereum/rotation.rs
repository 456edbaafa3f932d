//! Key rotation by sweep (issue 19) on the shared anvil cluster: wallet
//! `w-rot` holds ETH and MINI on its own address and ETH on a derived one;
//! `custos key rotate` makes `w-rot-2` on the same signers and sweeps every
//! balance to it through the ordinary flow (the test policy's
//! `rotation-sweep` rule asks one treasury approval); once they confirm and
//! the admins sign and activate a policy listing the old key under
//! `retired_keys`, the key is retired, every signer (having checked that
//! admin bundle and its own witnessed log) destroys its share and refuses the key,
//! and `custos audit verify` replays the sweeps and shows the retirement
//! (docs/SECURITY.md case 74).

use custos_devkit::ClusterLayout;
use custos_proto::custody::DeriveAddressRequest;
use custos_proto::signer::{
    PresignRequest, RetireKeyRequest, SignWithdrawalRequest, WithdrawalAuthorization,
};
use tonic::Code;

use custos_tests::admin_signatures;

use super::*;

/// `custos ... --cluster <dir>` (the admin's CLI on the cluster).
fn cli(layout: &ClusterLayout, args: &[&str]) -> custos_tests::audit::Outcome {
    let dir = layout.dir.to_str().unwrap();
    let mut all = args.to_vec();
    all.extend(["--cluster", dir]);
    custos_tests::audit::custos(&all)
}

pub(super) async fn a_key_rotated_by_sweep_is_emptied_and_retired(
    fc: &mut FlowCluster,
    rpc: &EvmRpc,
    token: Address,
    old: Address,
) {
    let layout = fc.tc.cluster.layout().clone();
    let child = fc
        .backend
        .clone()
        .derive_address(DeriveAddressRequest {
            wallet: "w-rot".into(),
            index: 0,
            label: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let child_addr = addr(&child.address);
    let mini = U256::from(50u64) * U256::from(ETH);
    fund(rpc, old, 2 * ETH).await;
    fund(rpc, child_addr, ETH / 2).await;
    mini_transfer(rpc, old, mini).await;
    let share = |s: &custos_devkit::SignerLayout| s.data_dir.join("keys/w-rot.sealed");
    assert!(layout.signers.iter().all(|s| share(s).exists()));

    // A coordinator that asks a signer to destroy its share without the
    // admins' authorization gets nothing: each signer checks the bundle
    // against its own admin set and its own witnessed log. Refused: no
    // bundle; the genuine policy in force (v1), which does not list the
    // key; v1 under-signed (one admin of two); an admin-signed v2 listing
    // the key that the log never activated.
    let policy = layout.policy.clone().unwrap();
    let v1 = std::fs::read(&policy.document).unwrap();
    let v1_sigs = std::fs::read(&policy.signatures).unwrap();
    let v2 = String::from_utf8(v1.clone())
        .unwrap()
        .replacen("version = 1", "version = 2", 1)
        .replacen(
            "\n[settings]",
            "retired_keys = [\"w-rot\"]\n\n[settings]",
            1,
        )
        .into_bytes();
    assert_ne!(v2, v1);
    let v2_sigs = admin_signatures(&v2, &["admin1", "admin2"]);
    let rogue: [(&[u8], Vec<u8>, &str); 4] = [
        (b"", Vec::new(), "carries no policy bundle"),
        (&v1, v1_sigs.clone(), "does not list it under retired_keys"),
        (
            &v1,
            admin_signatures(&v1, &["admin1"]),
            "the policy bundle is refused",
        ),
        (&v2, v2_sigs.clone(), "is not the newest"),
    ];
    for (node, c) in rogue_clients(&layout).await {
        for (document, signatures, why) in &rogue {
            let e = c
                .clone()
                .retire_key(RetireKeyRequest {
                    key_id: "w-rot".into(),
                    coordinator_epoch: 0,
                    policy_document: document.to_vec(),
                    policy_signatures: signatures.clone(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{node}: {e}");
            assert!(
                e.message()
                    .contains("retiring key w-rot refused, nothing destroyed")
                    && e.message().contains(why),
                "{node}: {why}: {e}"
            );
        }
    }
    assert!(layout.signers.iter().all(|s| share(s).exists()));

    // Retiring a key that holds funds is refused, naming the balance.
    let o = cli(&layout, &["key", "retire", "w-rot"]);
    assert!(!o.ok, "{o}");
    assert!(
        o.stderr.contains("MINI base units on") && o.stderr.contains("custos key rotate w-rot"),
        "{o}"
    );

    // Round 1: the token (its fee from the address's ETH), and the derived
    // address's ETH; round 2: the root's ETH, once its token is gone.
    let mut sweeps: Vec<(String, String, String, i64)> = Vec::new();
    let mut new = Address::ZERO;
    let mut eth_in = U256::ZERO;
    for (round, want) in [
        &[("MINI", -1), ("ETH", 0)][..],
        &[("MINI", -1), ("ETH", 0), ("ETH", -1)][..],
    ]
    .into_iter()
    .enumerate()
    {
        let o = cli(
            &layout,
            &[
                "key",
                "rotate",
                "w-rot",
                "--new-key-id",
                "w-rot-2",
                "--json",
            ],
        );
        assert!(o.ok, "{o}");
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["state"], json!("sweeping"), "{v}");
        assert_eq!(v["new_key"]["participants"], v["old_key"]["participants"]);
        assert_eq!(v["new_key"]["threshold"], v["old_key"]["threshold"]);
        new = addr(v["new_key"]["address"].as_str().unwrap());
        let all: Vec<(String, String, String, i64)> = v["sweeps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["withdrawal_id"].as_str().unwrap().to_owned(),
                    s["asset"].as_str().unwrap().to_owned(),
                    s["amount"].as_str().unwrap().to_owned(),
                    s["derivation_index"].as_i64().unwrap(),
                )
            })
            .collect();
        let plan: Vec<(&str, i64)> = all.iter().map(|(_, a, _, i)| (a.as_str(), *i)).collect();
        assert_eq!(plan, want, "round {round}: {v}");
        let fresh = all[sweeps.len()..].to_vec();
        // The rotation rule: one treasury approval per sweep.
        for (id, ..) in &fresh {
            let w = wait_for(fc, id, "awaiting_approvals", Duration::from_secs(30)).await;
            assert_eq!(w.destination.to_lowercase(), format!("{new:#x}"));
            approve(&fc.approver, &w, "alice").await;
        }
        for (id, asset, amount, _) in &fresh {
            let (_, _, receipt) = confirmed_tx(fc, rpc, id).await;
            assert!(receipt.success, "{id}");
            if asset == "ETH" {
                eth_in += U256::from_str_radix(amount, 10).unwrap();
            }
        }
        sweeps = all;
    }
    assert_eq!(sweeps[0].2, mini.to_string());
    assert_eq!(rpc.erc20_balance(token, new).await.unwrap(), mini);
    assert_eq!(rpc.erc20_balance(token, old).await.unwrap(), U256::ZERO);
    assert_eq!(rpc.balance(new).await.unwrap(), eth_in);
    // What is left is the unspent part of the fee reserve (dust).
    let cap = U256::from(2_100_000_000_000_000u128);
    assert!(rpc.balance(old).await.unwrap() <= cap);
    assert!(rpc.balance(child_addr).await.unwrap() <= cap);

    // Emptied, the key still does not retire until the admins say so: the
    // coordinator refuses, naming what the admins must sign, and nothing is
    // marked, logged or destroyed.
    for args in [
        &["key", "rotate", "w-rot", "--wait", "120", "--json"][..],
        &["key", "retire", "w-rot"][..],
    ] {
        let o = cli(&layout, args);
        assert!(!o.ok, "{o}");
        assert!(
            o.stderr.contains(
                "the admins must list w-rot under retired_keys in a signed policy bundle"
            ),
            "{o}"
        );
    }
    assert!(layout.signers.iter().all(|s| share(s).exists()));
    let o = cli(&layout, &["key", "show", "w-rot"]);
    assert!(o.ok && !o.stdout.contains("retired "), "{o}");

    // The admins sign v2 (v1 plus `retired_keys = ["w-rot"]`, a tightening
    // in force at once) and the coordinator restarts on it, which logs its
    // activation.
    std::fs::write(&policy.document, &v2).unwrap();
    std::fs::write(&policy.signatures, &v2_sigs).unwrap();
    fc.tc.cluster.kill_coordinator().unwrap();
    fc.tc.cluster.restart_coordinator().await.unwrap();

    // Following it retires the key: every signer destroys its share.
    let o = cli(
        &layout,
        &["key", "rotate", "w-rot", "--wait", "120", "--json"],
    );
    assert!(o.ok, "{o}");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["state"], json!("retired"), "{v}");
    let mut destroyed: Vec<String> = v["old_key"]["shares_destroyed_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    destroyed.sort();
    let mut holders: Vec<String> = layout.signers.iter().map(|s| s.node_id.clone()).collect();
    holders.sort();
    assert_eq!(destroyed, holders, "{v}");
    for s in &layout.signers {
        assert!(!share(s).exists(), "{}: share file left", s.node_id);
        assert!(s.data_dir.join("keys/w-rot.retired").exists());
        let journal = std::fs::read_to_string(s.data_dir.join("withdrawals.log")).unwrap();
        assert!(
            journal.contains("\"event\":\"key_retired\"") && journal.contains("w-rot"),
            "{}",
            s.node_id
        );
    }
    let o = cli(&layout, &["key", "show", "w-rot"]);
    assert!(
        o.ok && o.stdout.contains("retired ") && o.stdout.contains("w-rot-2"),
        "{o}"
    );
    let o = cli(&layout, &["key", "list"]);
    let line = o.stdout.lines().find(|l| l.starts_with("w-rot ")).unwrap();
    assert!(line.ends_with("RETIRED"), "{o}");

    // No signature with it: the coordinator refuses a withdrawal, and every
    // signer, asked directly with the coordinator's certificate, refuses
    // naming the key as retired.
    let mut req = withdrawal_req("after-retire", "w-rot", PAYEE_1, 1);
    req.asset = "ETH".into();
    let e = fc.backend.clone().create_withdrawal(req).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("key w-rot is retired"), "{e}");
    let swept = get(fc, &sweeps[2].0).await;
    let authorization = WithdrawalAuthorization {
        withdrawal_json: policy_withdrawal_json(&swept, 1),
        ..Default::default()
    };
    for (node, c) in rogue_clients(&layout).await {
        let e = c
            .clone()
            .presign(PresignRequest {
                key_id: "w-rot".into(),
                presignature_id: "after-retire".into(),
                signers: holders[..2].to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{node}: {e}");
        assert!(e.message().contains("key w-rot is retired"), "{node}: {e}");
        let e = c
            .clone()
            .sign_withdrawal(SignWithdrawalRequest {
                authorization: Some(authorization.clone()),
                key_id: "w-rot".into(),
                presignature_id: "after-retire".into(),
            })
            .await
            .unwrap_err();
        assert!(e.message().contains("key w-rot is retired"), "{node}: {e}");
    }

    // The auditor replays every sweep (under v1) and sees the retirement
    // (after v2's activation).
    let v1_file = layout.dir.parent().unwrap().join("eth-policy.toml");
    let v2_file = layout.dir.parent().unwrap().join("eth-policy-v2.toml");
    std::fs::write(&v2_file, &v2).unwrap();
    custos_tests::audit::verify_policies_until(&layout.dir, &[&v1_file, &v2_file], |o| {
        custos_tests::audit::all_signatures_authorised(o)
            && o.stdout.contains("key w-rot retired by")
            && o.stdout.contains("shares destroyed by signer-")
    })
    .await;
}

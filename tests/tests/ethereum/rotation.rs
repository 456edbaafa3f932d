//! Key rotation by sweep (issue 19) on the shared anvil cluster: wallet
//! `w-rot` holds ETH and MINI on its own address and ETH on a derived one;
//! `custos key rotate` makes `w-rot-2` on the same signers and sweeps every
//! balance to it through the ordinary flow (the test policy's
//! `rotation-sweep` rule asks one treasury approval); once they confirm the
//! old key is retired, every signer destroys its share and refuses the key,
//! and `custos audit verify` replays the sweeps and shows the retirement
//! (docs/SECURITY.md case 74).

use custos_devkit::ClusterLayout;
use custos_proto::custody::DeriveAddressRequest;
use custos_proto::signer::{
    PresignRequest, RetireKeyRequest, SignWithdrawalRequest, WithdrawalAuthorization,
};
use tonic::Code;

use super::*;

/// `custos ... --cluster <dir>` (the admin's CLI on the cluster).
fn cli(layout: &ClusterLayout, args: &[&str]) -> custos_tests::audit::Outcome {
    let dir = layout.dir.to_str().unwrap();
    let mut all = args.to_vec();
    all.extend(["--cluster", dir]);
    custos_tests::audit::custos(&all)
}

pub(super) async fn a_key_rotated_by_sweep_is_emptied_and_retired(
    fc: &FlowCluster,
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
    // retirement in the log gets nothing: the signer checks its own view.
    for (node, c) in rogue_clients(&layout).await {
        let e = c
            .clone()
            .retire_key(RetireKeyRequest {
                key_id: "w-rot".into(),
                coordinator_epoch: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{node}: {e}");
        assert!(e.message().contains("does not retire it"), "{node}: {e}");
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

    // The auditor replays every sweep and sees the retirement.
    let policy = layout.dir.parent().unwrap().join("eth-policy.toml");
    custos_tests::audit::verify_policy_until(&layout.dir, &policy, |o| {
        custos_tests::audit::all_signatures_authorised(o)
            && o.stdout.contains("key w-rot retired by")
            && o.stdout.contains("shares destroyed by signer-")
    })
    .await;
}

//! The transparency log end to end on real processes and the coordinator's
//! real SQLite database (docs/SECURITY.md cases 19-21):
//!
//! - withdrawals of every outcome, exported through ExportAuditBundle as the
//!   auditor and verified by the real `custos audit verify` binary with the
//!   keys from GetClusterStatus and the full policy replay;
//! - the database tampered behind the coordinator's back (an entry edited, the
//!   last entry deleted, the tree truncated): the verifier names the entry,
//!   and the witnesses (the signers) refuse the tampered log's next
//!   checkpoint, so a new withdrawal is not signed (fail closed);
//! - an older checkpoint replayed to a witness through its Cosign RPC;
//! - the audit log unwritable: withdrawals stop, nothing is signed, `/healthz`
//!   says why, and everything works again once the log is writable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use custos_devkit::ClusterLayout;
use custos_policy::Verdict as PV;
use custos_proto::custody::{GetWithdrawalRequest, Withdrawal};
use custos_proto::signer::signer_control_client::SignerControlClient;
use custos_proto::signer::{CosignRequest, StatusRequest};
use custos_service::db::Db;
use custos_tests::audit::{
    Keys, Outcome, checkpoint, cosignatures, export, keys, latest_checkpoint, settled, verify,
};
use custos_tests::*;
use k256::sha2::{Digest, Sha256};
use sqlx::Row;
use tonic::transport::Channel;

const LIMIT: Duration = Duration::from_secs(90);

/// Wallet of the small allowed withdrawals: the large ones on `w-hot` count
/// against `small-allow`'s daily limit per wallet.
const SMALL: &str = "w-vel";

/// One cluster at a time: the machine is small.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// Asserts the verifier failed and named `entry` as the first bad entry.
fn assert_names(o: &Outcome, entry: u64, what: &str) {
    println!("{what}: {}", o.stderr.trim_end());
    assert!(!o.ok, "{what}: the verifier accepted it\n{o}");
    assert!(
        o.stderr
            .contains(&format!("FAIL: first bad entry {entry}:")),
        "{what}: entry {entry} not named\n{o}"
    );
}

/// The entry the verifier named first, if any.
fn first_bad(o: &Outcome) -> Option<u64> {
    let rest = o.stderr.split("FAIL: first bad entry ").nth(1)?;
    rest.split(':').next()?.parse().ok()
}

fn db_path(layout: &ClusterLayout) -> PathBuf {
    layout.coordinator.data_dir.join("coordinator.db")
}

async fn open_db(layout: &ClusterLayout) -> Db {
    Db::connect(&format!("sqlite://{}", db_path(layout).display()), 1)
        .await
        .unwrap()
}

async fn entry_rows(db: &Db) -> Vec<(u64, Vec<u8>)> {
    sqlx::query("SELECT idx, bytes FROM audit_entries ORDER BY idx")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>(0) as u64, r.get::<Vec<u8>, _>(1)))
        .collect()
}

/// Entry kind (the `u16` after the format byte).
fn kind(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[1], bytes[2]])
}

fn contains(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Index and bytes of the `withdrawal_requested` entry (kind 4) of `id`.
async fn requested_entry(db: &Db, id: &str) -> (u64, Vec<u8>) {
    entry_rows(db)
        .await
        .into_iter()
        .find(|(_, b)| kind(b) == 4 && contains(b, id.as_bytes()).is_some())
        .unwrap_or_else(|| panic!("no withdrawal_requested entry for {id}"))
}

/// The same entry asking for another amount (`5…` wei becomes `9…` wei).
fn forged_amount(bytes: &[u8], amount: u128) -> Vec<u8> {
    let digits = amount.to_string();
    let at = contains(bytes, digits.as_bytes()).unwrap();
    let mut out = bytes.to_vec();
    out[at] = b'9';
    assert_ne!(out, bytes);
    out
}

async fn set_entry(db: &Db, index: u64, bytes: &[u8]) {
    sqlx::query("UPDATE audit_entries SET bytes = $1 WHERE idx = $2")
        .bind(bytes.to_vec())
        .bind(index as i64)
        .execute(&db.pool)
        .await
        .unwrap();
}

async fn node(db: &Db, level: u32, idx: u64) -> Option<Vec<u8>> {
    sqlx::query("SELECT hash FROM audit_nodes WHERE level = $1 AND idx = $2")
        .bind(i64::from(level))
        .bind(idx as i64)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .map(|r| r.get::<Vec<u8>, _>(0))
}

/// What a careful forger does after editing entry `index`: recompute its
/// leaf hash and every stored subtree hash above it (RFC 9162 hashing), so
/// the database is self-consistent again.
async fn rehash_path(db: &Db, index: u64, bytes: &[u8]) {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(bytes);
    let mut hash: Vec<u8> = h.finalize().to_vec();
    let mut level = 0u32;
    loop {
        let idx = index >> level;
        if node(db, level, idx).await.is_none() {
            break;
        }
        sqlx::query("UPDATE audit_nodes SET hash = $1 WHERE level = $2 AND idx = $3")
            .bind(hash.clone())
            .bind(i64::from(level))
            .bind(idx as i64)
            .execute(&db.pool)
            .await
            .unwrap();
        let parent = idx >> 1;
        let (Some(l), Some(r)) = (
            node(db, level, parent * 2).await,
            node(db, level, parent * 2 + 1).await,
        ) else {
            break;
        };
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(&l);
        h.update(&r);
        hash = h.finalize().to_vec();
        level += 1;
    }
}

async fn exec(db: &Db, sql: String) {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&db.pool)
        .await
        .unwrap();
}

/// A consistent copy of the (stopped) coordinator's database.
async fn backup(layout: &ClusterLayout, to: &Path) {
    let db = open_db(layout).await;
    exec(&db, format!("VACUUM INTO '{}'", to.display())).await;
    db.pool.close().await;
}

/// Puts the copy back (coordinator stopped).
fn restore(layout: &ClusterLayout, from: &Path) {
    let path = db_path(layout);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    std::fs::copy(from, &path).unwrap();
}

async fn restart(fc: &mut FlowCluster) {
    fc.tc.cluster.restart_coordinator().await.unwrap();
    fc.tc.wait_aux_ready(Duration::from_secs(60)).await;
}

async fn get(fc: &FlowCluster, id: &str) -> Withdrawal {
    fc.backend
        .clone()
        .get_withdrawal(GetWithdrawalRequest { id: id.to_owned() })
        .await
        .unwrap()
        .into_inner()
}

/// On a tampered log: a new allowed withdrawal is decided but never signed,
/// because no witness co-signs the checkpoint that would carry its decision;
/// and the log's newest checkpoint gains no cosignature.
async fn witnesses_refuse(fc: &FlowCluster, key: &str, before: u64, what: &str) {
    let w = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req(key, SMALL, WHITELISTED, ETH / 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.rule_id, "small-allow", "{what}: {}", w.decision);
    let started = Instant::now();
    let refused = loop {
        let now = get(fc, &w.id).await;
        assert!(
            now.signature_r.is_empty() && now.state != "signed",
            "{what}: a withdrawal was signed on a tampered log"
        );
        if let Some(n) = now
            .signer_notes
            .iter()
            .find(|n| n.contains("did not co-sign") || n.contains("will not co-sign"))
        {
            assert_eq!(now.state, "signing", "{what}: {now:?}");
            break n.clone();
        }
        assert!(
            started.elapsed() < LIMIT,
            "{what}: no witness refusal noted; withdrawal {} notes {:?}",
            now.state,
            now.signer_notes
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    println!("{what}: withdrawal {} stays in signing: {refused}", w.id);
    // The signing round asks the presignature's signers (a quorum of them).
    let named = ["signer-1", "signer-2", "signer-3"]
        .iter()
        .filter(|s| refused.contains(*s))
        .count();
    assert!(
        named >= 2,
        "{what}: the refusing witnesses are not named: {refused:?}"
    );
    // Still not signed a while later, and no new checkpoint was co-signed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = get(fc, &w.id).await;
    assert_eq!(later.state, "signing", "{what}: {later:?}");
    assert!(later.signature_r.is_empty());
    let (size, note) = checkpoint(fc).await;
    assert!(
        size > before,
        "{what}: no new checkpoint (size {size}, before {before})"
    );
    assert_eq!(
        cosignatures(&note),
        0,
        "{what}: a witness co-signed the tampered log's checkpoint {size}:\n{note}"
    );
}

/// SignerControl clients with the coordinator's mTLS identity.
async fn signer_clients(layout: &ClusterLayout) -> Vec<SignerControlClient<Channel>> {
    coordinator_signer_clients(layout)
        .await
        .into_iter()
        .map(|(_, c)| c)
        .collect()
}

/// Removes the entries from `index` on from an exported bundle (what an
/// operator who deleted them would ship).
fn without_entries_from(bundle: &serde_json::Value, index: u64) -> serde_json::Value {
    let mut b = bundle.clone();
    let start = b["start"].as_u64().unwrap();
    let keep = usize::try_from(index - start).unwrap();
    for field in ["entries", "leaf_hashes"] {
        b[field].as_array_mut().unwrap().truncate(keep);
    }
    b
}

fn with_entry(bundle: &serde_json::Value, index: u64, bytes: &[u8]) -> serde_json::Value {
    let mut b = bundle.clone();
    let start = b["start"].as_u64().unwrap();
    b["entries"][usize::try_from(index - start).unwrap()] = hex::encode(bytes).into();
    b
}

fn json(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_verify_and_tamper() {
    let _serial = SERIAL.lock().await;
    let mut fc = start_flow(&flow_policy(), false, &["w-hot", SMALL]).await;
    let layout = fc.tc.cluster.layout().clone();
    let dir = fc.tc.dir.path().to_path_buf();
    let backend = fc.backend.clone();
    let policy = flow_policy();
    let policy = policy.to_str().unwrap();
    let admins = layout.policy.as_ref().unwrap().admins.clone();
    let admins = admins.to_str().unwrap().to_owned();
    let full = ["--policy", policy, "--admins", admins.as_str()];

    // Withdrawals of every outcome.
    let allowed = backend
        .clone()
        .create_withdrawal(withdrawal_req("allow", SMALL, WHITELISTED, ETH / 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allowed.rule_id, "small-allow", "{}", allowed.decision);
    wait_state(&backend, &allowed.id, &["signed"], LIMIT).await;

    let two = backend
        .clone()
        .create_withdrawal(withdrawal_req("two", "w-hot", WHITELISTED, 5 * ETH))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(two.rule_id, "medium-two-approvals");
    approve(&fc.approver, &two, "alice").await;
    approve(&fc.approver, &two, "bob").await;
    wait_state(&backend, &two.id, &["signed"], LIMIT).await;

    let blocked = backend
        .clone()
        .create_withdrawal(withdrawal_req("block", "w-hot", NOT_WHITELISTED, 2 * ETH))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(blocked.state, "blocked", "{}", blocked.reason);

    let rejected = backend
        .clone()
        .create_withdrawal(withdrawal_req("reject", "w-hot", WHITELISTED, 6 * ETH))
        .await
        .unwrap()
        .into_inner();
    approve(&fc.approver, &rejected, "alice").await;
    let r = submit_verdict(
        &fc.approver,
        &rejected,
        "carol",
        PV::Reject,
        "unknown payee",
    )
    .await
    .unwrap();
    assert_eq!(r.state, "rejected");

    let cancelled = backend
        .clone()
        .create_withdrawal(withdrawal_req("cancel", "w-hot", WHITELISTED, 20 * ETH))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.rule_id, "large-approvals-delay");
    approve(&fc.approver, &cancelled, "alice").await;
    approve(&fc.approver, &cancelled, "bob").await;
    wait_state(&backend, &cancelled.id, &["time_locked"], LIMIT).await;
    let c = submit_verdict(&fc.approver, &cancelled, "dave", PV::Cancel, "suspicious")
        .await
        .unwrap();
    assert_eq!(c.state, "cancelled");

    // Export as the auditor and verify with the real binary.
    let keys = keys(&fc).await;
    let (n0, note0) = settled(&fc).await;
    let bundle0 = export(&fc, 0, 0).await;
    assert_eq!(bundle0["entries"].as_array().unwrap().len() as u64, n0);
    let b0 = write(&dir, "bundle0.json", json(&bundle0));
    let cp0 = write(&dir, "checkpoint0.txt", &note0);

    let o = verify(&b0, &keys, &full);
    assert!(o.ok, "full replay of an honest log failed\n{o}");
    assert!(
        o.stdout
            .contains("signatures   2 authorised of 2 checked (policy replay"),
        "{o}"
    );
    assert!(o.stdout.contains("admin signatures checked"), "{o}");
    assert!(o.stdout.contains("policy_decision=5"), "{o}");
    assert!(o.stdout.contains("approval="), "{o}");
    assert!(o.stdout.trim_end().ends_with("OK"), "{o}");
    // The structural replay alone, and with the auditor's previous checkpoint.
    let o = verify(&b0, &keys, &["--previous", cp0.to_str().unwrap()]);
    assert!(o.ok, "{o}");
    assert!(
        o.stdout.contains("signatures   2 authorised of 2 checked"),
        "{o}"
    );
    // JSON report.
    let mut args = full.to_vec();
    args.push("--json");
    let o = verify(&b0, &keys, &args);
    assert!(o.ok, "{o}");
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["replay"], "policy+admins");
    assert_eq!(report["report"]["signatures_authorised"], 2);

    // The CLI's own `keys` and `export` (the dev cluster's auditor client) give
    // the same trust roots and a bundle that verifies against the checkpoint.
    let custos = |args: &[&str]| {
        let out = std::process::Command::new(bin_dir().join("custos"))
            .args(args)
            .output()
            .unwrap();
        let o = Outcome {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(o.ok, "custos {args:?}\n{o}");
        o
    };
    let cluster_dir = layout.dir.to_str().unwrap();
    let trust = custos(&["audit", "keys", "--cluster", cluster_dir]).stdout;
    assert!(
        trust.contains(&format!("--log-key {}", keys.log)),
        "{trust}"
    );
    for w in &keys.witnesses {
        assert!(trust.contains(&format!("--witness-key {w}")), "{trust}");
    }
    assert!(trust.contains("--witness-quorum 2"), "{trust}");
    let cli_bundle = dir.join("cli-bundle.json");
    let cli_cp = dir.join("cli-checkpoint.txt");
    custos(&[
        "audit",
        "export",
        "--cluster",
        cluster_dir,
        "--out",
        cli_bundle.to_str().unwrap(),
        "--checkpoint",
        cli_cp.to_str().unwrap(),
    ]);
    let mut args = vec!["audit", "verify", cli_bundle.to_str().unwrap()];
    args.extend(trust.split_whitespace());
    args.extend(["--previous", cp0.to_str().unwrap()]);
    args.extend(full);
    let o = custos(&args);
    assert!(
        o.stdout.contains("signatures   2 authorised of 2 checked"),
        "{o}"
    );
    assert_eq!(std::fs::read_to_string(&cli_cp).unwrap(), note0);

    // The replay needs the policy in force: another document is refused, naming
    // the first signature entry.
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/demo-policy.toml");
    let o = verify(&b0, &keys, &["--policy", demo.to_str().unwrap()]);
    assert!(!o.ok, "{o}");
    assert!(o.stderr.contains("not among the supplied documents"), "{o}");
    assert!(first_bad(&o).is_some(), "{o}");
    // Without enough witness keys the quorum cannot be met.
    let lone = Keys {
        log: keys.log.clone(),
        witnesses: vec![keys.witnesses[0].clone()],
    };
    let o = verify(&b0, &lone, &[]);
    assert!(!o.ok, "quorum 2 with one witness key\n{o}");

    // An older checkpoint replayed to a witness (its real Cosign RPC): refused.
    let first_note = bundle0["checkpoints"][0].as_str().unwrap().to_owned();
    for mut s in signer_clients(&layout).await {
        let have = s.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(have.witnessed_size, n0);
        let e = s
            .cosign(CosignRequest {
                checkpoint: first_note.clone(),
                consistency_proof: vec![],
                from_size: have.witnessed_size,
                entries: vec![],
                coordinator_epoch: 0,
            })
            .await
            .unwrap_err();
        assert!(e.message().contains("will not co-sign"), "{e}");
        let after = s.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(after.witnessed_size, n0, "the witness moved back");
    }

    // (a) One entry edited: the two-approval withdrawal's amount.
    fc.tc.cluster.kill_coordinator().unwrap();
    let db = open_db(&layout).await;
    let (edited, original) = requested_entry(&db, &two.id).await;
    let forged = forged_amount(&original, 5 * ETH);
    set_entry(&db, edited, &forged).await;
    db.pool.close().await;
    restart(&mut fc).await;
    // A fresh export names it exactly (the tree still holds its leaf hash).
    let fresh = export(&fc, 0, 0).await;
    let o = verify(&write(&dir, "a1.json", json(&fresh)), &keys, &full);
    assert_names(&o, edited, "edited entry, fresh export");
    assert!(
        o.stderr
            .contains("differs from the one the log committed to"),
        "{o}"
    );
    // The careful forger also rewrites the tree so the database agrees with itself.
    fc.tc.cluster.kill_coordinator().unwrap();
    let db = open_db(&layout).await;
    set_entry(&db, edited, &original).await;
    db.pool.close().await;
    let clean = dir.join("clean-a.db");
    backup(&layout, &clean).await;
    let db = open_db(&layout).await;
    set_entry(&db, edited, &forged).await;
    rehash_path(&db, edited, &forged).await;
    db.pool.close().await;
    restart(&mut fc).await;
    // The earlier export with the forged entry substituted names it exactly.
    let o = verify(
        &write(
            &dir,
            "a2.json",
            json(&with_entry(&bundle0, edited, &forged)),
        ),
        &keys,
        &full,
    );
    assert_names(&o, edited, "edited entry in the earlier export");
    // A fresh export of the rewritten log no longer reproduces the signed roots.
    let fresh = export(&fc, 0, n0).await;
    let o = verify(&write(&dir, "a3.json", json(&fresh)), &keys, &full);
    assert!(!o.ok, "rewritten tree accepted\n{o}");
    assert!(
        first_bad(&o).is_some_and(|e| e <= edited),
        "rewritten tree: named entry after {edited}\n{o}"
    );
    witnesses_refuse(&fc, "after-edit", n0, "edited entry").await;
    fc.tc.cluster.kill_coordinator().unwrap();
    restore(&layout, &clean);
    restart(&mut fc).await;

    // (b) The last entry deleted, with its tree nodes.
    let (n, note) = settled(&fc).await;
    assert_eq!(n, n0, "the restored log moved");
    let before = export(&fc, 0, 0).await;
    let cp = write(&dir, "checkpoint-b.txt", &note);
    fc.tc.cluster.kill_coordinator().unwrap();
    let clean = dir.join("clean-b.db");
    backup(&layout, &clean).await;
    let db = open_db(&layout).await;
    let last = n - 1;
    exec(&db, format!("DELETE FROM audit_entries WHERE idx = {last}")).await;
    exec(
        &db,
        format!("DELETE FROM audit_nodes WHERE idx = ({last} >> level)"),
    )
    .await;
    db.pool.close().await;
    let o = verify(
        &write(&dir, "b1.json", json(&without_entries_from(&before, last))),
        &keys,
        &full,
    );
    assert_names(&o, last, "last entry deleted, earlier export");
    restart(&mut fc).await;
    // What the shortened log exports now extends nothing the auditor saw.
    let fresh = export(&fc, 0, last).await;
    let o = verify(
        &write(&dir, "b2.json", json(&fresh)),
        &keys,
        &["--previous", cp.to_str().unwrap()],
    );
    assert_names(&o, last, "last entry deleted, fresh export");
    assert!(o.stderr.contains("truncated"), "{o}");
    witnesses_refuse(&fc, "after-delete", last, "last entry deleted").await;
    fc.tc.cluster.kill_coordinator().unwrap();
    restore(&layout, &clean);
    restart(&mut fc).await;

    // (c) The tree truncated from the two-approval withdrawal on.
    let (n, note) = settled(&fc).await;
    assert_eq!(n, n0, "the restored log moved");
    let before = export(&fc, 0, 0).await;
    let cp = write(&dir, "checkpoint-c.txt", &note);
    fc.tc.cluster.kill_coordinator().unwrap();
    let clean = dir.join("clean-c.db");
    backup(&layout, &clean).await;
    let db = open_db(&layout).await;
    let cut = requested_entry(&db, &two.id).await.0;
    exec(&db, format!("DELETE FROM audit_entries WHERE idx >= {cut}")).await;
    exec(
        &db,
        format!("DELETE FROM audit_nodes WHERE ((idx + 1) << level) > {cut}"),
    )
    .await;
    exec(
        &db,
        format!("DELETE FROM audit_checkpoints WHERE size > {cut}"),
    )
    .await;
    db.pool.close().await;
    let o = verify(
        &write(&dir, "c1.json", json(&without_entries_from(&before, cut))),
        &keys,
        &full,
    );
    assert_names(&o, cut, "tree truncated, earlier export");
    restart(&mut fc).await;
    let fresh = export(&fc, 0, cut).await;
    let o = verify(
        &write(&dir, "c2.json", json(&fresh)),
        &keys,
        &["--previous", cp.to_str().unwrap()],
    );
    assert_names(&o, cut, "tree truncated, fresh export");
    witnesses_refuse(&fc, "after-truncate", 0, "tree truncated").await;
    fc.tc.cluster.kill_coordinator().unwrap();
    restore(&layout, &clean);
    restart(&mut fc).await;

    // The untouched log works again, and still extends what the auditor saw.
    let w = backend
        .clone()
        .create_withdrawal(withdrawal_req(
            "after-restore",
            SMALL,
            WHITELISTED,
            ETH / 10,
        ))
        .await
        .unwrap()
        .into_inner();
    wait_state(&backend, &w.id, &["signed"], LIMIT).await;
    let (n, _) = settled(&fc).await;
    assert!(n > n0);
    let last = export(&fc, 0, 0).await;
    let o = verify(
        &write(&dir, "final.json", json(&last)),
        &keys,
        &[
            "--previous",
            cp0.to_str().unwrap(),
            "--policy",
            policy,
            "--admins",
            admins.as_str(),
        ],
    );
    assert!(o.ok, "{o}");
    assert!(
        o.stdout.contains("signatures   3 authorised of 3 checked"),
        "{o}"
    );
    crash_during_checkpoint_rounds(&mut fc, &keys, &dir).await;
    fc.tc.cluster.stop().await.unwrap();
}

const SIGNERS: [&str; 3] = ["signer-1", "signer-2", "signer-3"];

/// Waits until the coordinator has stored a checkpoint of the whole log,
/// grown past `after`, that no witness co-signed (they are all down).
async fn unwitnessed_checkpoint(fc: &FlowCluster, after: u64) -> u64 {
    let started = Instant::now();
    loop {
        let (size, note, whole) = latest_checkpoint(fc).await;
        if size > after && whole {
            assert_eq!(cosignatures(&note), 0, "the witnesses are down:\n{note}");
            return size;
        }
        assert!(
            started.elapsed() < LIMIT,
            "no checkpoint after {after} (latest {size})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The coordinator killed with -9 inside a checkpoint round (docs/SECURITY.md
/// case 56): the checkpoint is signed and stored before the witnesses answer.
///
/// 1. The witnesses unreachable: two checkpoints are stored uncosigned; while
///    the newer is the latest, an export fails naming it as the unwitnessed
///    tail (the witnessed prefix verified). The coordinator is killed and
///    restarted with the witnesses back: it gets the latest co-signed, and a
///    full export verifies with a warning naming the older one, which the
///    witnessed one supersedes.
/// 2. The witnesses answered but their lines were lost (the kill came between
///    their answers and the write; recreated by stripping the stored lines):
///    the witnesses already stand at that size, and the restarted coordinator
///    still asks them again and stores their cosignatures.
async fn crash_during_checkpoint_rounds(fc: &mut FlowCluster, keys: &Keys, dir: &Path) {
    let layout = fc.tc.cluster.layout().clone();
    let (before, _) = settled(fc).await;
    for s in SIGNERS {
        fc.tc.cluster.kill_signer(s).unwrap();
    }
    let mut stored = Vec::new();
    for key in ["crash-1", "crash-2"] {
        let w = fc
            .backend
            .clone()
            .create_withdrawal(withdrawal_req(key, "w-hot", NOT_WHITELISTED, 2 * ETH))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(w.state, "blocked", "{}", w.reason);
        let after = stored.last().copied().unwrap_or(before);
        stored.push(unwitnessed_checkpoint(fc, after).await);
    }
    let (older, latest) = (stored[0], stored[1]);
    // The unwitnessed tail fails, naming the checkpoint; the prefix verified.
    let o = verify(
        &write(dir, "tail.json", json(&export(fc, 0, latest).await)),
        keys,
        &[],
    );
    assert!(!o.ok, "an unwitnessed tail accepted\n{o}");
    assert_eq!(first_bad(&o), Some(before), "{o}");
    assert!(
        o.stderr
            .contains("only unwitnessed checkpoints cover them: size ")
            && o.stderr
                .contains(&format!("size {older} (0 of 2 cosignatures), "))
            && o.stderr.contains(&format!(
                "size {latest} (0 of 2 cosignatures) (an unwitnessed tail"
            )),
        "{o}"
    );
    assert!(o.stdout.contains(&format!("latest size {before} ")), "{o}");

    fc.tc.cluster.kill_coordinator().unwrap();
    for s in SIGNERS {
        fc.tc.cluster.restart_signer(s).await.unwrap();
    }
    restart(fc).await;
    let (size, _) = settled(fc).await;
    assert_eq!(size, latest, "the stored checkpoint was not finished");
    let o = verify(
        &write(dir, "superseded.json", json(&export(fc, 0, 0).await)),
        keys,
        &[],
    );
    assert!(o.ok, "{o}");
    assert!(
        o.stdout.contains(&format!(
            "warning      checkpoint of size {older} has 0 of 2 witness cosignatures; superseded by the witnessed checkpoint of size {latest}"
        )),
        "{o}"
    );

    // 2. Cosignatures lost after the witnesses answered.
    fc.tc.cluster.kill_coordinator().unwrap();
    let db = open_db(&layout).await;
    let note: String = sqlx::query_scalar("SELECT note FROM audit_checkpoints WHERE size = $1")
        .bind(i64::try_from(latest).unwrap())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let log_line = note
        .lines()
        .position(|l| l.starts_with("\u{2014} "))
        .unwrap();
    let bare: String = note
        .lines()
        .take(log_line + 1)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(cosignatures(&bare), 0);
    sqlx::query("UPDATE audit_checkpoints SET note = $1 WHERE size = $2")
        .bind(&bare)
        .bind(i64::try_from(latest).unwrap())
        .execute(&db.pool)
        .await
        .unwrap();
    db.pool.close().await;
    for mut s in signer_clients(&layout).await {
        let st = s.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(st.witnessed_size, latest, "the witnesses co-signed it");
    }
    restart(fc).await;
    let (size, note) = settled(fc).await;
    assert_eq!(size, latest, "the log moved");
    assert_eq!(cosignatures(&note), 3, "{note}");
    let o = verify(
        &write(dir, "recollected.json", json(&export(fc, 0, 0).await)),
        keys,
        &[],
    );
    assert!(o.ok, "{o}");
    assert!(!o.stdout.contains(&format!("size {latest} has")), "{o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unwritable_log_stops_withdrawals() {
    let _serial = SERIAL.lock().await;
    let fc = start_flow(&flow_policy(), false, &["w-hot"]).await;
    let layout = fc.tc.cluster.layout().clone();
    let backend = fc.backend.clone();
    let http = layout.coordinator.metrics_listen;
    let count = || async { all_withdrawals(&fc.backend).await.len() };

    // One withdrawal half approved before the log breaks.
    let pending = backend
        .clone()
        .create_withdrawal(withdrawal_req("pending", "w-hot", WHITELISTED, 5 * ETH))
        .await
        .unwrap()
        .into_inner();
    approve(&fc.approver, &pending, "alice").await;
    let (status, body) = custos_devkit::http_get(http, "/healthz").await.unwrap();
    assert_eq!(status, 200, "{body}");

    // The disk is "full": every append to the log fails (another connection,
    // while the coordinator runs).
    let db = open_db(&layout).await;
    exec(
        &db,
        "CREATE TRIGGER audit_full BEFORE INSERT ON audit_entries \
         BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            .to_owned(),
    )
    .await;
    let before = count().await;
    let e = backend
        .clone()
        .create_withdrawal(withdrawal_req("while-full", "w-hot", WHITELISTED, ETH / 10))
        .await
        .unwrap_err();
    assert!(e.message().contains("audit log"), "{e}");
    assert_eq!(
        count().await,
        before,
        "a withdrawal was stored without its log entry"
    );
    // The second approval cannot be recorded either: nothing moves, nothing is signed.
    let e = submit_verdict(&fc.approver, &pending, "bob", PV::Approve, "")
        .await
        .unwrap_err();
    assert!(e.message().contains("audit log"), "{e}");
    let (status, body) = custos_devkit::http_get(http, "/healthz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("audit log"), "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = get(&fc, &pending.id).await;
    assert_eq!(p.state, "awaiting_approvals");
    assert!(p.signature_r.is_empty());

    // Writable again: withdrawals work, the alert clears.
    exec(&db, "DROP TRIGGER audit_full".to_owned()).await;
    db.pool.close().await;
    let w = backend
        .clone()
        .create_withdrawal(withdrawal_req("after-full", "w-hot", WHITELISTED, ETH / 10))
        .await
        .unwrap()
        .into_inner();
    wait_state(&backend, &w.id, &["signed"], LIMIT).await;
    approve(&fc.approver, &pending, "bob").await;
    wait_state(&backend, &pending.id, &["signed"], LIMIT).await;
    let (status, body) = custos_devkit::http_get(http, "/healthz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    fc.tc.cluster.stop().await.unwrap();
}

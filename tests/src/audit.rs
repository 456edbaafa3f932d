//! The audit log as an auditor sees it: the trust roots from
//! GetClusterStatus, a settled checkpoint, an export, and the real
//! `custos audit verify` binary.

use std::path::Path;
use std::time::{Duration, Instant};

use custos_proto::custody::{
    ExportAuditBundleRequest, GetCheckpointRequest, GetClusterStatusRequest, GetLogEntryRequest,
};

use crate::{FlowCluster, bin_dir};

/// How long [`settled`] waits for the log to settle.
const LIMIT: Duration = Duration::from_secs(90);

/// The trust roots an auditor pins, as GetClusterStatus reports them.
pub struct Keys {
    pub log: String,
    pub witnesses: Vec<String>,
}

pub async fn keys(fc: &FlowCluster) -> Keys {
    let st = fc
        .auditor
        .clone()
        .get_cluster_status(GetClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!st.log_key.is_empty(), "no log key in the cluster status");
    let witnesses: Vec<String> = st.signers.iter().map(|s| s.witness_key.clone()).collect();
    assert_eq!(witnesses.len(), 3);
    assert!(witnesses.iter().all(|w| !w.is_empty()), "{witnesses:?}");
    Keys {
        log: st.log_key,
        witnesses,
    }
}

/// Witness cosignature lines of a signed note (every signature line after
/// the log's own).
pub fn cosignatures(note: &str) -> usize {
    note.lines()
        .filter(|l| l.starts_with("\u{2014} "))
        .count()
        .saturating_sub(1)
}

pub async fn checkpoint(fc: &FlowCluster) -> (u64, String) {
    let cp = fc
        .auditor
        .clone()
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    (cp.size, cp.note)
}

/// The latest checkpoint's size and note, and whether it covers the whole
/// log (no entry at its size).
pub async fn latest_checkpoint(fc: &FlowCluster) -> (u64, String, bool) {
    let (size, note) = checkpoint(fc).await;
    let beyond = fc
        .auditor
        .clone()
        .get_log_entry(GetLogEntryRequest { index: size })
        .await;
    (size, note, beyond.is_err())
}

/// Waits until the latest checkpoint covers the whole log and every witness
/// co-signed it; returns its size and note.
pub async fn settled(fc: &FlowCluster) -> (u64, String) {
    let started = Instant::now();
    loop {
        let (size, note, whole) = latest_checkpoint(fc).await;
        if size > 0 && whole && cosignatures(&note) == 3 {
            return (size, note);
        }
        assert!(
            started.elapsed() < LIMIT,
            "the log did not settle: checkpoint {size} with {} cosignatures, entry {size} {}",
            cosignatures(&note),
            if whole { "absent" } else { "exists" }
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub async fn export(fc: &FlowCluster, from: u64, to: u64) -> serde_json::Value {
    let b = fc
        .auditor
        .clone()
        .export_audit_bundle(ExportAuditBundleRequest {
            from,
            to,
            previous_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    serde_json::from_slice(&b.json).unwrap()
}

pub struct Outcome {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Runs the real `custos audit verify` on `bundle` with the cluster's keys.
pub fn verify(bundle: &Path, keys: &Keys, extra: &[&str]) -> Outcome {
    let mut cmd = std::process::Command::new(bin_dir().join("custos"));
    cmd.args(["audit", "verify"])
        .arg(bundle)
        .arg("--log-key")
        .arg(&keys.log);
    for w in &keys.witnesses {
        cmd.arg("--witness-key").arg(w);
    }
    // A signing round has the presignature's 2 signers co-sign the checkpoint
    // carrying its decision; the third catches up on a later checkpoint. So
    // an honest log's checkpoints carry at least 2 of the 3 cosignatures.
    cmd.args(["--witness-quorum", "2"]);
    cmd.args(extra);
    let out = cmd.output().unwrap();
    Outcome {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the real `custos` CLI with `args`.
pub fn custos(args: &[&str]) -> Outcome {
    let out = std::process::Command::new(bin_dir().join("custos"))
        .args(args)
        .output()
        .unwrap();
    Outcome {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `custos audit keys` of the cluster in `cluster_dir`: the trust
/// arguments an auditor pins.
pub fn trust_args(cluster_dir: &Path) -> String {
    let keys = custos(&["audit", "keys", "--cluster", cluster_dir.to_str().unwrap()]);
    assert!(keys.ok, "{keys}");
    keys.stdout
}

/// Exports the whole log of the cluster in `cluster_dir` with `custos
/// audit export` and runs `custos audit verify` on it with `trust` (from
/// [`trust_args`]) and `extra`; a failed export is returned as the outcome.
pub fn export_and_verify(cluster_dir: &Path, trust: &str, extra: &[&str]) -> Outcome {
    let bundle = cluster_dir.join("audit-bundle.json");
    let export = custos(&[
        "audit",
        "export",
        "--cluster",
        cluster_dir.to_str().unwrap(),
        "--out",
        bundle.to_str().unwrap(),
    ]);
    if !export.ok {
        // No checkpoint yet: the caller's loop tries again.
        return export;
    }
    let mut args = vec!["audit", "verify", bundle.to_str().unwrap()];
    args.extend(trust.split_whitespace());
    args.extend(extra);
    custos(&args)
}

/// Exports the log of the cluster in `cluster_dir` and runs `custos audit
/// verify --policy policy` until it passes with `done` true of its report
/// (the last entries reach a checkpoint a moment later); panics after a
/// minute with the report.
pub async fn verify_policy_until(
    cluster_dir: &Path,
    policy: &Path,
    done: impl Fn(&Outcome) -> bool,
) {
    verify_policies_until(cluster_dir, &[policy], done).await;
}

/// [`verify_policy_until`] with every policy document the log activated.
pub async fn verify_policies_until(
    cluster_dir: &Path,
    policies: &[&Path],
    done: impl Fn(&Outcome) -> bool,
) {
    let trust = trust_args(cluster_dir);
    let mut args = Vec::new();
    for p in policies {
        args.extend(["--policy", p.to_str().unwrap()]);
    }
    let started = Instant::now();
    loop {
        let o = export_and_verify(cluster_dir, &trust, &args);
        if o.ok && done(&o) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{o}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether a `custos audit verify --policy` report authorised every
/// signature it checked (its `signatures N authorised of N checked` line).
pub fn all_signatures_authorised(o: &Outcome) -> bool {
    o.stdout.lines().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words.first() == Some(&"signatures")
            && words.get(2) == Some(&"authorised")
            && words.get(1) == words.get(4)
    })
}

/// The refusal lines of a `custos audit verify` report.
pub fn refusal_lines(o: &Outcome) -> Vec<&str> {
    o.stdout
        .lines()
        .filter(|l| l.starts_with("  entry ") && l.contains(" refused "))
        .collect()
}

/// Exports the log of the cluster in `cluster_dir` as an auditor does
/// (`custos audit keys`, `custos audit export`) and runs `custos audit
/// verify` with `extra` until, for each `(signer, text)` of `want`, it
/// reports a refusal by that signer whose line contains `text` (the
/// coordinator logs what signers report within a few checkpoint rounds),
/// none of them flagged as not signed by its signer, and the whole log
/// verifies; panics after [`LIMIT`] naming what is missing.
pub async fn refusals_reported(
    cluster_dir: &Path,
    extra: &[&str],
    want: &[(&str, &str)],
) -> Outcome {
    let keys = trust_args(cluster_dir);
    let started = Instant::now();
    loop {
        let o = export_and_verify(cluster_dir, &keys, extra);
        let lines = refusal_lines(&o);
        let missing: Vec<&(&str, &str)> = want
            .iter()
            .filter(|(signer, text)| {
                !lines
                    .iter()
                    .any(|l| l.contains(&format!(" {signer} refused ")) && l.contains(text))
            })
            .collect();
        assert!(!o.stderr.contains("[refusal_signature]"), "{o}");
        if o.ok && missing.is_empty() {
            return o;
        }
        assert!(
            started.elapsed() < LIMIT,
            "refusals not reported ({missing:?} missing): {o}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

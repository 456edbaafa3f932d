//! A signer's witness state bound to its rollback counter (docs/SECURITY.md
//! case 44): a `witness.json` restored from a snapshot or edited is set
//! aside, the signer rebuilds its view from the log and signs nothing until
//! it has; a log that differs from the one it co-signed (a fork shown to a
//! restored signer) is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use custos_audit::note::{SIG_TYPE_ED25519, VerifierKey};
use custos_audit::testing::{ORIGIN, T0, TestSigner};
use custos_audit::{EntryBody, Log, MemoryStore};
use custos_hsm::{
    KdfParams, Passphrase, RollbackCounter, SealedFileCounter, SealedLogSigner, Sealer,
    SoftwareSealer,
};
use custos_signer_node::cosigner::witness::LogWitness;

const NODE: &str = "signer-1";

fn sealer(dir: &Path) -> Arc<dyn Sealer> {
    Arc::new(
        SoftwareSealer::open_with_params(
            dir,
            &Passphrase::from("p"),
            true,
            KdfParams::insecure_fast_for_tests(),
        )
        .unwrap(),
    )
}

/// The witness of `data`, with its counter kept in `counter_dir` (standing
/// for an HSM: a restore of `data` does not touch it).
fn open(data: &Path, counter_dir: &Path, log_key: &str) -> LogWitness {
    let s = sealer(data);
    let key = SealedLogSigner::open(s.as_ref(), &data.join("witness-key.sealed"), true).unwrap();
    let counter = SealedFileCounter::new(&counter_dir.join("counter.sealed"), s, NODE);
    LogWitness::open(data, NODE, key, ORIGIN, log_key, Box::new(counter)).unwrap()
}

fn cancel(id: &str) -> EntryBody {
    EntryBody::Cancelled {
        withdrawal_id: id.into(),
        cancelled_by: "ops".into(),
        reason: String::new(),
    }
}

/// Appends `bodies`, checkpoints, and has `w` co-sign from what it has.
fn grow_and_cosign(
    log: &mut Log<MemoryStore>,
    key: &TestSigner,
    w: &LogWitness,
    bodies: Vec<EntryBody>,
) -> Result<String, custos_signer_node::error::NodeError> {
    for b in bodies {
        log.append(T0, b).unwrap();
    }
    let note = log.checkpoint(key, T0).unwrap();
    let from = w.size();
    let proof = if from == 0 {
        vec![]
    } else {
        log.consistency_proof(from, log.size()).unwrap()
    };
    let entries: Vec<Vec<u8>> = (from..log.size()).map(|i| log.entry(i).unwrap()).collect();
    w.cosign(&note, &proof, from, T0 / 1000, &entries)
}

#[test]
fn a_restored_or_edited_witness_state_is_rebuilt_from_the_log_and_a_fork_refused() {
    let data = tempfile::tempdir().unwrap();
    let hsm = tempfile::tempdir().unwrap();
    let log_signer = TestSigner::from_seed(3);
    let log_key = VerifierKey::from_signer(ORIGIN, SIG_TYPE_ED25519, &log_signer)
        .unwrap()
        .to_string();
    let mut log = Log::open(MemoryStore::new(), ORIGIN).unwrap();

    let w = open(data.path(), hsm.path(), &log_key);
    grow_and_cosign(&mut log, &log_signer, &w, vec![cancel("wd-0")]).unwrap();
    drop(w);
    let snapshot = std::fs::read(data.path().join("witness.json")).unwrap();

    // The signer witnesses a cancel, then its state is restored from the
    // snapshot taken before.
    let w = open(data.path(), hsm.path(), &log_key);
    grow_and_cosign(&mut log, &log_signer, &w, vec![cancel("wd-1")]).unwrap();
    assert!(w.with_view(|v| v.withdrawal("wd-1").is_some()).unwrap());
    drop(w);
    std::fs::write(data.path().join("witness.json"), &snapshot).unwrap();

    let w = open(data.path(), hsm.path(), &log_key);
    let e = w.with_view(|_| ()).unwrap_err();
    assert!(e.to_string().contains("rebuilding"), "{e}");
    assert!(data.path().join("witness.json.set-aside").exists());

    // A fork: a log with other entries, shown from the start, is refused
    // where it passes the checkpoint the counter names.
    let mut fork = Log::open(MemoryStore::new(), ORIGIN).unwrap();
    for b in [cancel("wd-0"), cancel("wd-x")] {
        fork.append(T0, b).unwrap();
    }
    let e = grow_and_cosign(&mut fork, &log_signer, &w, vec![cancel("wd-y")]).unwrap_err();
    assert!(e.to_string().contains("forked log"), "{e}");
    assert!(w.with_view(|_| ()).is_err());

    // A checkpoint below the one it co-signed before is refused outright.
    let mut short = Log::open(MemoryStore::new(), ORIGIN).unwrap();
    let e = grow_and_cosign(&mut short, &log_signer, &w, vec![cancel("wd-0")]).unwrap_err();
    assert!(
        e.to_string().contains("co-signed checkpoint 2 before"),
        "{e}"
    );

    // The genuine log, from the start: the view is back, cancel included.
    grow_and_cosign(&mut log, &log_signer, &w, vec![cancel("wd-2")]).unwrap();
    assert!(w.with_view(|v| v.withdrawal("wd-1").is_some()).unwrap());
    assert_eq!(w.size(), 3);
    drop(w);

    // An edited state (same size, other content) is not trusted either.
    let path = data.path().join("witness.json");
    let edited = String::from_utf8(std::fs::read(&path).unwrap())
        .unwrap()
        .replace("wd-1", "wd-9");
    std::fs::write(&path, edited).unwrap();
    let w = open(data.path(), hsm.path(), &log_key);
    assert!(w.with_view(|_| ()).is_err());
    grow_and_cosign(&mut log, &log_signer, &w, vec![cancel("wd-3")]).unwrap();
    assert!(w.with_view(|v| v.withdrawal("wd-1").is_some()).unwrap());

    // The counter never moves back.
    let counter = SealedFileCounter::new(
        &hsm.path().join("counter.sealed"),
        sealer(data.path()),
        NODE,
    );
    let now = counter.read().unwrap();
    assert_eq!(now.position, 4);
    let mut older = now;
    older.position = 3;
    assert!(counter.advance(&older).is_err());
}

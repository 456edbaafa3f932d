//! Shared test fixtures: a software Ed25519 `LogSigner`, a realistic log.
#![allow(dead_code)]

use custos_audit::entry::{AdminSignature, DecisionOutcome, EntryBody, Verdict};
use custos_audit::note::{SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_ED25519};
use custos_audit::{AuditError, LogSigner, SignatureAlgorithm};
use custos_audit::{Log, MemoryStore, VerifierKey, Witness};
use ed25519_dalek::{Signer, SigningKey};

pub const ORIGIN: &str = "custos.test/log";
pub const T0: u64 = 1_764_072_000_000;

/// Software Ed25519 log signer for tests (the hsm crate's backend replaces it).
pub struct SoftSigner(SigningKey);

impl SoftSigner {
    pub fn from_seed(seed: u8) -> Self {
        Self(SigningKey::from_bytes(&[seed; 32]))
    }
}

impl LogSigner for SoftSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::Ed25519
    }
    fn public_key(&self) -> Vec<u8> {
        self.0.verifying_key().to_bytes().to_vec()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuditError> {
        Ok(self.0.sign(message).to_bytes().to_vec())
    }
}

pub fn log_key() -> VerifierKey {
    VerifierKey::from_signer(ORIGIN, SIG_TYPE_ED25519, &SoftSigner::from_seed(1)).expect("log key")
}

pub fn witness(i: u8) -> Witness<SoftSigner> {
    Witness::new(
        &format!("witness-{i}.custos.test"),
        SoftSigner::from_seed(10 + i),
        ORIGIN,
        log_key(),
        None,
    )
    .expect("witness")
}

pub fn witness_key(i: u8) -> VerifierKey {
    VerifierKey::from_signer(
        &format!("witness-{i}.custos.test"),
        SIG_TYPE_COSIGNATURE_V1,
        &SoftSigner::from_seed(10 + i),
    )
    .expect("witness key")
}

pub fn h(tag: &str) -> [u8; 32] {
    custos_audit::leaf_hash(tag.as_bytes())
}

pub const POLICY: &str = "policy-v1";

/// The entries of one fully authorised withdrawal.
pub fn withdrawal(n: u64, approvals: u16) -> Vec<EntryBody> {
    let id = format!("wd-{n}");
    let digest = h(&format!("tx-{n}"));
    let exec = format!("exec-{n}").into_bytes();
    let mut v = vec![
        EntryBody::WithdrawalRequested {
            withdrawal_id: id.clone(),
            key_id: "key-1".into(),
            chain: "eip155:1".into(),
            asset: "ETH".into(),
            destination: "0x00000000000000000000000000000000000000aa".into(),
            amount: format!("{}", 1_000_000_000_000_000_000u128 + u128::from(n)),
            tx_digest: Some(digest),
            requested_by: "backend".into(),
        },
        EntryBody::RiskScored {
            withdrawal_id: id.clone(),
            provider: "risk".into(),
            score: 7,
            details_hash: h("risk"),
        },
        EntryBody::PolicyDecision {
            withdrawal_id: id.clone(),
            policy_hash: h(POLICY),
            rule_id: "large-eth".into(),
            outcome: if approvals == 0 {
                DecisionOutcome::Allow
            } else {
                DecisionOutcome::RequireApprovals { quorum: approvals }
            },
            explanation_hash: h("why"),
        },
    ];
    for a in 0..approvals {
        v.push(EntryBody::Approval {
            withdrawal_id: id.clone(),
            approver_id: format!("approver-{a}"),
            verdict: Verdict::Approve,
            statement: format!("statement {n}").into_bytes(),
            signature: vec![a as u8; 64],
        });
    }
    v.push(EntryBody::SigningSession {
        withdrawal_id: id.clone(),
        key_id: "key-1".into(),
        execution_id: exec.clone(),
        participants: vec!["signer-1".into(), "signer-2".into()],
        presignature_id: Some(format!("presig-{n}")),
        message_digest: digest,
    });
    v.push(EntryBody::SignatureProduced {
        withdrawal_id: id.clone(),
        key_id: "key-1".into(),
        execution_id: exec,
        message_digest: digest,
        signature: vec![0x30; 64],
    });
    v.push(EntryBody::TransactionBroadcast {
        withdrawal_id: id.clone(),
        chain: "eip155:1".into(),
        txid: format!("0x{n:064x}"),
    });
    v
}

pub fn genesis() -> Vec<EntryBody> {
    vec![
        EntryBody::MembershipChanged {
            node_id: "signer-1".into(),
            action: custos_audit::entry::MembershipAction::Joined,
            public_key: vec![1; 32],
            admin_signatures: vec![AdminSignature {
                admin_id: "admin-1".into(),
                signature: vec![9; 64],
            }],
        },
        EntryBody::KeyCreated {
            key_id: "key-1".into(),
            scheme: "ecdsa-secp256k1".into(),
            participants: vec!["signer-1".into(), "signer-2".into(), "signer-3".into()],
            threshold: 2,
            public_key: vec![2; 33],
        },
        EntryBody::PolicyActivated {
            policy_hash: h(POLICY),
            policy_version: 1,
            admin_signatures: vec![AdminSignature {
                admin_id: "admin-1".into(),
                signature: vec![9; 64],
            }],
        },
    ]
}

/// Builds a log of `withdrawals` withdrawals, checkpointed (and co-signed by
/// two witnesses) after each withdrawal.
pub fn build_log(withdrawals: u64) -> Log<MemoryStore> {
    let signer = SoftSigner::from_seed(1);
    let mut log = Log::open(MemoryStore::new(), ORIGIN).expect("open");
    let mut ws = [witness(1), witness(2)];
    let mut t = T0;
    let mut append_all = |log: &mut Log<MemoryStore>, bodies: Vec<EntryBody>| {
        for b in bodies {
            t += 1000;
            log.append(t, b).expect("append");
        }
        t
    };
    let mut now = append_all(&mut log, genesis());
    checkpoint(&mut log, &signer, &mut ws, now);
    for n in 0..withdrawals {
        now = append_all(&mut log, withdrawal(n, (n % 3) as u16));
        checkpoint(&mut log, &signer, &mut ws, now);
    }
    log
}

pub fn checkpoint(
    log: &mut Log<MemoryStore>,
    signer: &SoftSigner,
    ws: &mut [Witness<SoftSigner>],
    now_ms: u64,
) -> String {
    let note = log.checkpoint(signer, now_ms).expect("checkpoint");
    let mut lines = Vec::new();
    for w in ws.iter_mut() {
        let from = w.last().map_or(0, |c| c.size);
        let proof = log.consistency_proof(from, log.size()).expect("proof");
        lines.push(w.cosign(&note, &proof, now_ms / 1000).expect("cosign"));
    }
    log.add_cosignatures(log.size(), &lines)
        .expect("cosignatures")
}

pub fn trust() -> custos_audit::TrustRoots {
    custos_audit::TrustRoots {
        log_key: log_key(),
        witness_keys: vec![witness_key(1), witness_key(2)],
        witness_quorum: 2,
    }
}

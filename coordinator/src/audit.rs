//! The coordinator's side of the transparency log: appends before effects
//! (fail closed), signed checkpoints, and witness cosignatures collected from
//! the signers, which refuse to sign a withdrawal whose policy decision is not
//! in a checkpoint they co-signed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use custos_audit::note::VerifierKey;
use custos_audit::refusal::Refusal;
use custos_audit::shared::SharedLog;
use custos_audit::{AuditError, EntryBody, Hash, LogSigner};
use custos_proto::signer::{CosignRequest, StatusRequest};

use crate::clock::now_ms;
use crate::error::{CoordError, WitnessFailure};
use crate::signers::Signers;
use crate::stages::{self, Stage};

/// The log, its key, and what each witness has co-signed.
pub struct AuditTrail {
    log: SharedLog,
    signer: Arc<dyn LogSigner>,
    verifier: VerifierKey,
    signers: Arc<Signers>,
    /// Last checkpoint size each witness co-signed (learned from Status after a restart).
    witnessed: Mutex<HashMap<String, u64>>,
    /// One checkpoint round at a time, so witnesses see sizes in order.
    round: tokio::sync::Mutex<()>,
    healthy: AtomicBool,
    /// Entries appended by this process.
    pub appends: AtomicU64,
    /// Failed appends (each one stopped an action).
    pub append_failures: AtomicU64,
    /// Signatures of signers' refusals this process appended that the
    /// signers still report (they stop once they witnessed the entry).
    refusals_appended: Mutex<std::collections::HashSet<Vec<u8>>>,
    /// Signers' refusals appended by this process.
    pub refusals_logged: AtomicU64,
}

/// Whether a signed checkpoint note carries a signature line by `node`.
/// A witness that co-signed a checkpoint but whose line never reached the
/// store (the coordinator died between the witness's answer and the write)
/// is asked again: it re-signs a checkpoint of the size it witnessed.
fn cosigned_by(note: &str, node: &str) -> bool {
    custos_audit::SignedNote::parse(note).is_ok_and(|n| n.signatures.iter().any(|s| s.name == node))
}

/// Tree size of a signed checkpoint note.
pub fn note_size(note: &str) -> Option<u64> {
    let n = custos_audit::SignedNote::parse(note).ok()?;
    custos_audit::Checkpoint::parse_text(&n.text)
        .ok()
        .map(|c| c.size)
}

/// When the checkpointer runs a round: at most `longest` after the last
/// one, and as soon as `entries` entries were appended since.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPace {
    /// The longest interval between rounds.
    pub longest: Duration,
    /// Growth that brings the next round forward.
    pub entries: u64,
}

impl CheckpointPace {
    /// Whether a round is due `elapsed` after the last one, with `grown`
    /// entries appended since.
    pub fn due(&self, elapsed: Duration, grown: u64) -> bool {
        elapsed >= self.longest || grown >= self.entries
    }
}

/// How far back [`AuditTrail::logged`] looks for a retried session's entry.
const RETRY_SCAN: u64 = 10_000;

fn log_err(e: AuditError) -> CoordError {
    CoordError::storage("audit log unavailable, nothing done", e)
}

impl AuditTrail {
    /// Wraps an opened log and its signing key.
    pub fn new(
        log: SharedLog,
        signer: Arc<dyn LogSigner>,
        signers: Arc<Signers>,
    ) -> Result<Self, CoordError> {
        let verifier = VerifierKey::from_signer(
            log.origin(),
            custos_audit::note::SIG_TYPE_ED25519,
            signer.as_ref(),
        )
        .map_err(|e| CoordError::Internal(format!("log key: {e}")))?;
        Ok(Self {
            log,
            signer,
            verifier,
            signers,
            witnessed: Mutex::new(HashMap::new()),
            round: tokio::sync::Mutex::new(()),
            healthy: AtomicBool::new(true),
            appends: AtomicU64::new(0),
            append_failures: AtomicU64::new(0),
            refusals_appended: Mutex::new(std::collections::HashSet::new()),
            refusals_logged: AtomicU64::new(0),
        })
    }

    /// The verifier key line auditors and signers pin.
    pub fn verifier_key(&self) -> String {
        self.verifier.to_string()
    }

    /// The underlying log (API reads).
    pub fn log(&self) -> &SharedLog {
        &self.log
    }

    /// False after an append failed, until one succeeds (health endpoint).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Appends an entry durably; the caller must not act if this fails.
    pub async fn append(&self, body: EntryBody) -> Result<u64, CoordError> {
        self.append_batch(vec![body]).await
    }

    /// Appends entries durably in one transaction and one tree update (all
    /// or none); returns the first one's index. The caller must not act on
    /// any of them if this fails.
    pub async fn append_batch(&self, bodies: Vec<EntryBody>) -> Result<u64, CoordError> {
        let ts = u64::try_from(now_ms()).unwrap_or(0);
        let n = bodies.len() as u64;
        let items = bodies.into_iter().map(|b| (ts, b)).collect();
        let started = std::time::Instant::now();
        let appended = self.log.append_batch(items).await;
        stages::since(Stage::LogAppend, started);
        match appended {
            Ok(i) => {
                self.healthy.store(true, Ordering::Relaxed);
                self.appends.fetch_add(n, Ordering::Relaxed);
                Ok(i)
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                self.append_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, entries = n, "audit append failed: action refused");
                Err(log_err(e))
            }
        }
    }

    /// The index of an entry with exactly this `body` among the last
    /// [`RETRY_SCAN`] entries at or after `from`, if any. A signing session
    /// retried after a failure (a witness round that did not complete, a
    /// signer unreachable, a coordinator restart) reuses its logged entry:
    /// signers accept a presignature only under the one session entry that
    /// first named it, so a second entry for the same session would get it
    /// refused as a replay. An entry beyond the window is not found: the
    /// retry then logs a new one and the signers refuse it (fail closed).
    pub async fn logged(&self, from: u64, body: &EntryBody) -> Result<Option<u64>, CoordError> {
        let size = self.log.size().await;
        let from = from.max(size.saturating_sub(RETRY_SCAN));
        if from >= size {
            return Ok(None);
        }
        let raw = self.log.entries(from, size).await.map_err(log_err)?;
        for (i, bytes) in (from..).zip(raw.iter()) {
            let entry = custos_audit::Entry::decode(bytes).map_err(log_err)?;
            if &entry.body == body {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// At shutdown, once nothing appends any more: waits for an append or
    /// checkpoint round still holding the log (each is one database
    /// transaction, so there is nothing else to flush) and logs where the
    /// log stands, for the operator to compare with the next start.
    pub async fn close(&self) {
        let _round = self.round.lock().await;
        let size = self.log.size().await;
        let checkpoint = match self.log.latest_checkpoint().await {
            Ok(note) => note.as_deref().and_then(note_size),
            Err(e) => {
                tracing::warn!(error = %e, "audit log: latest checkpoint unreadable at shutdown");
                None
            }
        };
        tracing::info!(
            size,
            checkpoint,
            appends = self.appends.load(Ordering::Relaxed),
            "audit log closed"
        );
    }

    async fn witnessed_size(&self, node: &str) -> Option<u64> {
        if let Some(s) = self
            .witnessed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
        {
            return Some(*s);
        }
        let s = self.signers.get(node)?;
        let st = s.client().status(StatusRequest {}).await.ok()?.into_inner();
        self.witnessed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_owned(), st.witnessed_size);
        Some(st.witnessed_size)
    }

    /// Entry `index` (encoded) and its inclusion proof in the tree of `size`.
    pub async fn entry_with_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<(Vec<u8>, Vec<Vec<u8>>), CoordError> {
        let entry = self.log.entry(index).await.map_err(log_err)?;
        let proof = self
            .log
            .inclusion_proof(index, size)
            .await
            .map_err(log_err)?
            .iter()
            .map(|h| h.to_vec())
            .collect();
        Ok((entry, proof))
    }

    /// Makes sure entry `index` is covered by a checkpoint every node in
    /// `nodes` co-signed; returns the size of that checkpoint. Every other
    /// signer is asked too (so checkpoints carry as many cosignatures as
    /// possible), but only `nodes` that do not co-sign fail the call, named.
    pub async fn witness_through(&self, index: u64, nodes: &[String]) -> Result<u64, CoordError> {
        let _round = self.round.lock().await;
        let mut size = self.log.size().await;
        if size <= index {
            return Err(CoordError::Internal(format!(
                "entry {index} is not in the log (size {size})"
            )));
        }
        // Reuse the newest checkpoint if every node already co-signed it,
        // and the stored note carries their lines: after a crash in the
        // middle of a round (the checkpoint stored, the witnesses unreachable
        // or their answers lost) the next round finishes it.
        let latest_note = self.log.latest_checkpoint().await.map_err(log_err)?;
        let latest = latest_note.as_deref().and_then(note_size);
        let mut need_new = true;
        if let Some(l) = latest
            && l > index
        {
            let stored = latest_note.as_deref().unwrap_or_default();
            let mut all = true;
            for n in nodes {
                if self.witnessed_size(n).await != Some(l) || !cosigned_by(stored, n) {
                    all = false;
                }
            }
            if all {
                return Ok(l);
            }
            size = l;
            need_new = false;
        }
        // A coordinator that no longer leads signs no checkpoint.
        self.signers.epoch()?;
        let note = if need_new {
            let ts = u64::try_from(now_ms()).unwrap_or(0);
            let started = std::time::Instant::now();
            let note = self
                .log
                .checkpoint(self.signer.clone(), ts)
                .await
                .map_err(log_err)?;
            stages::since(Stage::Checkpoint, started);
            note
        } else {
            self.log
                .latest_checkpoint()
                .await
                .map_err(log_err)?
                .ok_or_else(|| CoordError::Internal("checkpoint vanished".into()))?
        };
        if need_new {
            size = self.log.size().await.min(size.max(index + 1));
            if let Some(s) = note_size(&note) {
                size = s;
            }
        }
        let everyone: Vec<String> = self
            .signers
            .all
            .iter()
            .map(|s| s.endpoint.node_id.clone())
            .collect();
        let rounds = everyone.iter().map(|n| {
            let required = nodes.contains(n);
            let note = &note;
            async move {
                let limit = Duration::from_secs(if required { 10 } else { 3 });
                (n, required, self.cosign(n, note, size, limit).await)
            }
        });
        let mut lines = Vec::new();
        let mut failed: Vec<WitnessFailure> = Vec::new();
        let started = std::time::Instant::now();
        let answers = futures::future::join_all(rounds).await;
        stages::since(Stage::WitnessRound, started);
        for (n, required, r) in answers {
            match r {
                Ok(mut l) => lines.append(&mut l),
                Err(e) if required => failed.push(WitnessFailure {
                    witness: n.clone(),
                    error: Box::new(e),
                }),
                Err(e) => tracing::debug!(node = %n, error = %e, "witness did not co-sign"),
            }
        }
        if !lines.is_empty() {
            self.log
                .add_cosignatures(size, lines)
                .await
                .map_err(log_err)?;
        }
        if !failed.is_empty() {
            return Err(CoordError::WitnessRound {
                size,
                failures: failed,
            });
        }
        Ok(size)
    }

    async fn cosign(
        &self,
        node: &str,
        note: &str,
        size: u64,
        limit: Duration,
    ) -> Result<Vec<String>, CoordError> {
        let from = self.witnessed_size(node).await.unwrap_or(0);
        if from == size && cosigned_by(note, node) {
            return Ok(Vec::new());
        }
        let proof: Vec<Hash> = if from == 0 || from > size {
            Vec::new()
        } else {
            self.log
                .consistency_proof(from, size)
                .await
                .map_err(log_err)?
        };
        let s = self
            .signers
            .get(node)
            .ok_or_else(|| CoordError::Internal(format!("{node} not configured")))?;
        // The witness derives its view of the log from the entries
        // themselves (and checks they hash to the checkpoint's root).
        let entries = self.log.entries(from, size).await.map_err(log_err)?;
        let req = CosignRequest {
            checkpoint: note.to_owned(),
            consistency_proof: proof.iter().map(|h| h.to_vec()).collect(),
            from_size: from,
            entries,
            coordinator_epoch: self.signers.epoch()?,
        };
        let res = tokio::time::timeout(limit, s.client().cosign(req)).await;
        match res {
            Ok(Ok(r)) => {
                self.witnessed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(node.to_owned(), size);
                Ok(r.into_inner().cosignatures)
            }
            Ok(Err(st)) => {
                if s.fenced(&st).is_some() {
                    return Err(CoordError::Unavailable {
                        signer: Some(node.to_owned()),
                        reason: format!("refused: {}", st.message()),
                    });
                }
                // Forget what we assumed; ask again next time.
                self.witnessed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(node);
                Err(CoordError::Refused {
                    signer: node.to_owned(),
                    reason: st.message().to_owned(),
                })
            }
            Err(_) => Err(CoordError::silent(node, "did not co-sign in time")),
        }
    }

    /// Appends the refusals signers report as not yet in the log (each
    /// checked against its signer's witness key, once). Signers hold their
    /// signing while one waits too long, so this is what keeps them signing.
    async fn log_refusals(&self) {
        let mut reported = std::collections::HashSet::new();
        let mut fresh = Vec::new();
        // Only a signer that answered says what it no longer holds.
        let mut all_answered = true;
        for s in &self.signers.all {
            let h = s.health();
            if !h.reachable {
                all_answered = false;
                continue;
            }
            if h.unlogged_refusals.is_empty() {
                continue;
            }
            let key = VerifierKey::parse(&h.witness_key).ok();
            for r in h.unlogged_refusals {
                let refusal = Refusal {
                    withdrawal_id: r.withdrawal_id,
                    signer: r.signer,
                    request: r.request,
                    reason: r.reason,
                    refused_at_ms: r.refused_at_ms,
                };
                let genuine = refusal.signer == s.endpoint.node_id
                    && key.as_ref().is_some_and(|k| {
                        refusal
                            .verify(&r.signature, std::slice::from_ref(k))
                            .is_ok()
                    });
                if !genuine {
                    tracing::warn!(
                        node = %s.endpoint.node_id,
                        withdrawal = %refusal.withdrawal_id,
                        "a refusal that does not verify under the signer's witness key: not logged"
                    );
                    continue;
                }
                reported.insert(r.signature.clone());
                let known = self
                    .refusals_appended
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&r.signature);
                if !known {
                    fresh.push((r.signature.clone(), refusal));
                }
            }
        }
        let sigs: Vec<Vec<u8>> = fresh.iter().map(|(s, _)| s.clone()).collect();
        if !fresh.is_empty() {
            for (_, r) in &fresh {
                tracing::warn!(
                    node = %r.signer,
                    withdrawal = %r.withdrawal_id,
                    request = %r.request,
                    reason = %r.reason,
                    "a signer refused: logging its refusal"
                );
            }
            let n = fresh.len() as u64;
            let bodies = fresh
                .into_iter()
                .map(|(sig, r)| r.into_entry(sig))
                .collect();
            if self.append_batch(bodies).await.is_err() {
                return;
            }
            self.refusals_logged.fetch_add(n, Ordering::Relaxed);
        }
        let mut appended = self
            .refusals_appended
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        appended.extend(sigs);
        // Forget what every signer stopped reporting (it witnessed the
        // entry); while one is unreachable, forget nothing, or its
        // refusals would be appended again when it answers.
        if all_answered {
            appended.retain(|s| reported.contains(s));
        }
    }

    /// Whether a reachable signer's last probe shows it behind the log (one
    /// that was down, or restarted from a snapshot or an empty directory).
    /// The size cached for a signer that reports less is dropped, so the
    /// next round asks it and ships every entry it lacks: a restored signer
    /// catches up without waiting for the log to grow.
    fn forget_stale_witnesses(&self, size: u64) -> bool {
        let mut cache = self.witnessed.lock().unwrap_or_else(|p| p.into_inner());
        let mut lagging = false;
        for s in &self.signers.all {
            let h = s.health();
            if !h.reachable {
                continue;
            }
            let node = &s.endpoint.node_id;
            if cache.get(node).is_some_and(|c| *c > h.witnessed_size) {
                cache.remove(node);
            }
            lagging |= h.witnessed_size < size;
        }
        lagging
    }

    /// Checkpoints and collects cosignatures from every signer whenever the
    /// log grew or a signer is behind it (best effort; signing forces its own round when needed),
    /// until `stop` is cancelled (a round in progress finishes first). The
    /// pace adapts: a round at most `pace.longest` after the last one, and
    /// sooner once `pace.entries` entries were appended since.
    pub async fn run_checkpointer(
        self: Arc<Self>,
        pace: CheckpointPace,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let nodes: Vec<String> = self
            .signers
            .all
            .iter()
            .map(|s| s.endpoint.node_id.clone())
            .collect();
        let mut last = 0u64;
        // Looks at the log's growth this often in between.
        let glance = (pace.longest / 10).max(Duration::from_millis(20));
        let mut since = tokio::time::Instant::now();
        while !stop.is_cancelled() {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(glance) => {}
            }
            let grown = self.log.size().await.saturating_sub(last);
            if !pace.due(since.elapsed(), grown) {
                continue;
            }
            since = tokio::time::Instant::now();
            self.log_refusals().await;
            let size = self.log.size().await;
            let lagging = self.forget_stale_witnesses(size);
            if size == 0 || (size == last && !lagging) {
                continue;
            }
            match self.witness_through(size - 1, &nodes).await {
                Ok(s) => last = s,
                Err(e) => tracing::debug!(error = %e, "checkpoint round incomplete"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_come_sooner_under_load_and_at_most_the_longest_interval_apart() {
        let pace = CheckpointPace {
            longest: Duration::from_millis(1000),
            entries: 256,
        };
        assert!(!pace.due(Duration::from_millis(100), 10));
        assert!(pace.due(Duration::from_millis(100), 256));
        assert!(pace.due(Duration::from_millis(1000), 0));
        assert!(!pace.due(Duration::from_millis(999), 255));
    }
}

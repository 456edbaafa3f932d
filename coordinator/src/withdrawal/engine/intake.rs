//! Group commit of new withdrawals. Requests that arrive while a batch is
//! being decided wait for the next one; each batch scores, evaluates and
//! routes every request in memory (in arrival order, an `allow` counting
//! toward the velocity of the requests after it), appends all their log
//! entries in one append (one transaction, one Merkle update), then commits
//! all rows with their transitions, events and hooks in one database
//! transaction. A batch costs two commits however many requests it holds,
//! where one request at a time cost eight.
//!
//! Log before state, as everywhere: the entries are durable before any row
//! exists, and a caller hears back only after both.

use std::collections::HashMap;
use std::sync::Arc;

use custos_audit::EntryBody;
use custos_policy::{Amount, HistoryEntry, Timestamp};
use tokio::sync::oneshot;

use super::{Engine, Evaluated, plan_route, same_request};
use crate::clock::now_secs;
use crate::error::CoordError;
use crate::stages::{self, Stage};
use crate::withdrawal::machine::{self, Event};
use crate::withdrawal::state::State;
use crate::withdrawal::store::{Inserted, Step, Val, WithdrawalRow};

/// Most requests decided in one batch.
const MAX_BATCH: usize = 512;

/// A validated request waiting for its batch.
pub(super) struct Job {
    row: WithdrawalRow,
    reply: oneshot::Sender<Result<WithdrawalRow, CoordError>>,
}

/// A request's share of a batch: its row, transitions and log entries.
struct Planned {
    row: WithdrawalRow,
    steps: Vec<Step>,
    entries: Vec<EntryBody>,
    /// Which of `entries` is the policy decision (its index is stored).
    decision_entry: Option<usize>,
}

impl Engine {
    /// Records a validated new withdrawal and decides it; returns it in its
    /// first waiting state (or the earlier withdrawal with the same
    /// idempotency key).
    pub(super) async fn admit(
        self: Arc<Self>,
        row: WithdrawalRow,
    ) -> Result<WithdrawalRow, CoordError> {
        let (reply, answer) = oneshot::channel();
        self.intake
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Job { row, reply });
        // Whoever gets the lock decides everything queued so far. The batch
        // runs in its own task holding the lock, so a caller that goes away
        // (a cancelled RPC) cannot stop it half-way.
        let guard = self.eval_lock.clone().lock_owned().await;
        let jobs = {
            let mut queue = self.intake.lock().unwrap_or_else(|p| p.into_inner());
            let n = queue.len().min(MAX_BATCH);
            queue.drain(..n).collect::<Vec<_>>()
        };
        if jobs.is_empty() {
            drop(guard);
        } else {
            let engine = self.clone();
            self.spawn(async move {
                engine.decide_batch(jobs).await;
                drop(guard);
            });
        }
        answer
            .await
            .map_err(|_| CoordError::Internal("the intake batch stopped before answering".into()))?
    }

    async fn decide_batch(&self, jobs: Vec<Job>) {
        // A key used twice in one batch: the first request wins, the others
        // are answered as repeats of it.
        let mut first: HashMap<(String, String), usize> = HashMap::new();
        let mut unique = Vec::new();
        let mut repeats = Vec::new();
        for job in jobs {
            let key = (job.row.client_id.clone(), job.row.idempotency_key.clone());
            match first.get(&key) {
                Some(&i) => repeats.push((i, job)),
                None => {
                    first.insert(key, unique.len());
                    unique.push(job);
                }
            }
        }
        let rows: Vec<WithdrawalRow> = unique.iter().map(|j| j.row.clone()).collect();
        let n = rows.len();
        let started = std::time::Instant::now();
        let result = self.commit_batch(rows).await;
        stages::since(Stage::Intake, started);
        stages::intake_batch(n);
        let _ = self.changes.send(());
        let answers: Vec<Result<WithdrawalRow, CoordError>> = match result {
            Ok(inserted) => inserted
                .into_iter()
                .zip(unique.iter())
                .map(|(ins, job)| match ins {
                    Inserted::New(r) => Ok(r),
                    Inserted::Existing(prev) => same_request(prev, &job.row),
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, requests = n, "intake batch failed: nothing recorded");
                (0..n).map(|_| Err(e.clone())).collect()
            }
        };
        for (i, job) in repeats {
            let answer = match &answers[i] {
                Ok(r) => same_request(r.clone(), &job.row),
                Err(e) => Err(e.clone()),
            };
            let _ = job.reply.send(answer);
        }
        for (job, answer) in unique.into_iter().zip(answers) {
            let _ = job.reply.send(answer);
        }
    }

    /// Decides `rows` in order, logs everything in one append and stores
    /// everything in one transaction.
    async fn commit_batch(&self, rows: Vec<WithdrawalRow>) -> Result<Vec<Inserted>, CoordError> {
        let now = Timestamp(now_secs());
        let active = self.policy.in_force(now);
        let mut histories: HashMap<String, Vec<HistoryEntry>> = HashMap::new();
        let mut planned = Vec::with_capacity(rows.len());
        // A key stored by an earlier batch: answered from the store, nothing
        // logged (batches run one at a time, so none can store it meanwhile).
        let mut answers: Vec<Option<Inserted>> = Vec::with_capacity(rows.len());
        let keys: Vec<(String, String)> = rows
            .iter()
            .map(|r| (r.client_id.clone(), r.idempotency_key.clone()))
            .collect();
        let mut stored = self.store.by_idempotency_keys(&keys).await?;
        for mut row in rows {
            if let Some(prev) = stored.remove(&(row.client_id.clone(), row.idempotency_key.clone()))
            {
                answers.push(Some(Inserted::Existing(prev)));
                continue;
            }
            answers.push(None);
            if !histories.contains_key(&row.wallet) {
                let h = self.velocity_history(&row.wallet).await?;
                histories.insert(row.wallet.clone(), h);
            }
            let history = histories.entry(row.wallet.clone()).or_default();
            let mut entries = vec![EntryBody::WithdrawalRequested {
                withdrawal_id: row.id.clone(),
                key_id: row.wallet.clone(),
                chain: row.chain.clone(),
                asset: row.asset.clone(),
                destination: row.destination.clone(),
                amount: row.amount.clone(),
                tx_digest: None,
                requested_by: row.initiator.clone(),
            }];
            let scored = self.assess(&row)?;
            entries.push(scored.entry);
            let mut steps = vec![step(
                State::Requested,
                Event::Scored,
                scored.updates,
                scored.summary,
            )?];
            row.risk_score = Some(i64::from(scored.score));
            let mut decision_entry = None;
            match self.evaluate_row(&row, &active, history, now)? {
                Evaluated::Failed(detail) => {
                    let s = step(
                        State::RiskScored,
                        Event::EvaluationFailed,
                        vec![("reason", Val::Text(Some(detail.clone())))],
                        detail.clone(),
                    )?;
                    entries.push(status(&row, s.to, &detail));
                    steps.push(s);
                }
                Evaluated::Decided(d) => {
                    decision_entry = Some(entries.len());
                    entries.push(d.entry);
                    steps.push(step(
                        State::RiskScored,
                        Event::Decided,
                        d.updates,
                        d.summary,
                    )?);
                    let (route, updates, detail) = plan_route(&d.decision);
                    let s = step(
                        State::PolicyEvaluated,
                        Event::Routed(route),
                        updates,
                        detail.clone(),
                    )?;
                    entries.push(status(&row, s.to, &detail));
                    if s.to == State::Approved {
                        // Counts toward the velocity of the requests after it.
                        history.push(HistoryEntry {
                            id: row.id.clone(),
                            wallet: row.wallet.clone(),
                            chain: row.chain.clone(),
                            asset: row.asset.clone(),
                            destination: row.destination.clone(),
                            initiator: row.initiator.clone(),
                            amount: Amount(row.amount.parse().unwrap_or(0)),
                            fee_cap: Amount(row.fee_cap.parse().unwrap_or(0)),
                            at: now,
                        });
                    }
                    steps.push(s);
                }
            }
            planned.push(Planned {
                row,
                steps,
                entries,
                decision_entry,
            });
        }
        if planned.is_empty() {
            return Ok(answers.into_iter().flatten().collect());
        }
        let entries: Vec<EntryBody> = planned.iter().flat_map(|p| p.entries.clone()).collect();
        let mut index = self.audit.append_batch(entries).await?;
        let mut items = Vec::with_capacity(planned.len());
        for mut p in planned {
            if let Some(i) = p.decision_entry
                && let Some(decided) = p.steps.get_mut(1)
            {
                decided.updates.push((
                    "decision_index",
                    Val::Int(i64::try_from(index + i as u64).ok()),
                ));
            }
            index += p.entries.len() as u64;
            items.push((p.row, p.steps));
        }
        let started = std::time::Instant::now();
        let mut inserted = self
            .store
            .insert_decided(items)
            .await?
            .into_iter()
            .map(Inserted::New);
        stages::since(Stage::IntakeStore, started);
        Ok(answers
            .into_iter()
            .filter_map(|a| a.or_else(|| inserted.next()))
            .collect())
    }
}

/// The transition `event` makes from `from`, as the lifecycle has it.
fn step(
    from: State,
    event: Event,
    updates: crate::withdrawal::store::Updates,
    detail: String,
) -> Result<Step, CoordError> {
    let t = machine::next(from, event).map_err(|e| CoordError::Internal(e.to_string()))?;
    Ok(Step {
        to: t.to,
        updates,
        detail,
    })
}

fn status(row: &WithdrawalRow, to: State, detail: &str) -> EntryBody {
    EntryBody::StatusChanged {
        withdrawal_id: row.id.clone(),
        status: to.audit_status(),
        reason: detail.to_owned(),
    }
}

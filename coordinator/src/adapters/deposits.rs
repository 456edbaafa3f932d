//! Deposits into the ledger: the watcher that scans the chains
//! ([`Adapters::credit_deposits_forever`]), credits what it finds and
//! reverses what a reorganisation took back.
//!
//! # Design: log, then credit; reverse the same way
//!
//! A deposit is appended to the audit log (kind 25, `deposit_credited`)
//! before anything credits it, and a reversal (kind 26,
//! `deposit_reversed`) before anything takes it back: a credit the log
//! cannot hold is not made (fail closed), so the log lists every credit an
//! auditor finds in the ledger. The record of the credit
//! ([`crate::chain::credits`]) is written before the append, with where the
//! log stood, so a retry after a crash finds the appended entry
//! ([`AuditTrail::logged`]) and does not log the deposit twice. Then one
//! database transaction writes the ledger posting, the outbox event
//! (`deposit.credited` / `deposit.reversed`) and the record's new state.
//! A credit whose entry is in the log but whose posting never happened
//! (the process stopped in between) is posted by the next reorganisation
//! check even when no scan finds the deposit again, so every logged credit
//! reaches the ledger, and is reversed there if its block is gone.
//!
//! With the ledger off (`[ledger] enabled = false`) deposits are still
//! logged, recorded and announced as events, only not posted: the audit
//! log is the custody record, whatever books a deployment keeps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Adapters, events};
use crate::audit::AuditTrail;
use crate::chain::Chains;
use crate::chain::credits::{self, Credit, CreditState};
use crate::chain::deposits::Deposit;
use crate::error::CoordError;

impl Adapters {
    /// Every `every`, forever: reverses the credits whose block a
    /// reorganisation took out of each chain (and moves the chain's scan
    /// back to the fork), then credits the confirmed deposits the chains'
    /// scans find (each once: a deposit already credited is a replay).
    pub async fn credit_deposits_forever(
        self: Arc<Self>,
        chains: Arc<Chains>,
        tokens: Vec<crate::chain::evm_deposits::Token>,
        audit: Arc<AuditTrail>,
        every: std::time::Duration,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for chain in chains.deposit_chains() {
                if let Err(e) = self.reverse_reorged(&chains, &audit, &chain).await {
                    tracing::warn!(chain = %chain, error = %e, "cannot check credited deposits for a reorganisation; retrying at the next scan");
                }
            }
            if chains.has_utxo() {
                match chains.utxo_deposits().await {
                    Ok(scans) => {
                        for scan in scans {
                            if self.credit_all(&audit, &scan.deposits).await
                                && let Err(e) = chains.advance_utxo_cursor(&scan).await
                            {
                                tracing::warn!(chain = %scan.chain, error = %e, "deposit scan position not saved; the blocks are scanned again");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot scan for deposits"),
                }
            }
            if chains.has_evm() {
                let scans = match chains.evm_deposits(&tokens).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot scan for deposits");
                        continue;
                    }
                };
                for scan in scans {
                    // The cursor moves only past blocks whose every deposit
                    // is in the ledger (a failed one is found again).
                    if self.credit_all(&audit, &scan.deposits).await
                        && let Err(e) = chains
                            .advance_evm_cursor(&scan.chain, scan.next_block)
                            .await
                    {
                        tracing::warn!(chain = %scan.chain, error = %e, "deposit scan position not saved; the blocks are scanned again");
                    }
                }
            }
        }
    }

    /// Credits each deposit once; whether every one is credited now.
    async fn credit_all(&self, audit: &AuditTrail, deposits: &[Deposit]) -> bool {
        let mut all = true;
        for d in deposits {
            match self.credit_deposit(audit, d).await {
                Ok(true) => {
                    self.gauges
                        .deposits_credited
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        chain = %d.chain, wallet = %d.wallet, asset = %d.asset,
                        amount = %d.amount, reference = %d.reference,
                        block = d.block_number, confirmations = d.confirmations,
                        "deposit credited"
                    );
                }
                Ok(false) => {}
                Err(e) => {
                    all = false;
                    tracing::error!(reference = %d.reference, error = %e,
                        "deposit not credited; retrying at the next scan");
                }
            }
        }
        all
    }

    /// Logs and credits the deposit `d` to its wallet (see the module
    /// docs), once per credit generation of its reference; `Ok(true)` when
    /// this call credited it, `Ok(false)` when it already was (or is being
    /// reversed: the next scan after the reversal credits it again).
    pub async fn credit_deposit(
        &self,
        audit: &AuditTrail,
        d: &Deposit,
    ) -> Result<bool, CoordError> {
        let pool = &self.http.pool;
        let newest = credits::newest(pool, &d.reference).await?;
        let generation = match &newest {
            Some(c) if matches!(c.state, CreditState::Credited | CreditState::Reversing) => {
                return Ok(false);
            }
            Some(c) if c.state == CreditState::Pending => {
                // A credit logged by an attempt that stopped before the
                // ledger: finish that one, as logged (were its block gone
                // since, the next reorganisation check reverses it).
                if audit
                    .logged(c.log_from, &c.credited_entry())
                    .await?
                    .is_some()
                {
                    return self.post_credit(c.clone()).await.map(|_| true);
                }
                c.generation
            }
            Some(c) => c.generation + 1,
            None => 0,
        };
        let credit = Credit {
            reference: d.reference.clone(),
            generation,
            chain: d.chain.clone(),
            wallet: d.wallet.clone(),
            address: d.address.clone(),
            asset: d.asset.clone(),
            amount: d.amount,
            block_number: d.block_number,
            block_hash: d.block_hash.clone(),
            state: CreditState::Pending,
            posted: false,
            log_from: audit.log().size().await,
            reason: String::new(),
        };
        let mut conn = pool.acquire().await.map_err(storage)?;
        credits::save(&mut conn, &credit).await?;
        drop(conn);
        audit.append(credit.credited_entry()).await?;
        self.post_credit(credit).await.map(|_| true)
    }

    /// The ledger posting (with the ledger on), the `deposit.credited`
    /// event and the record's `credited` state, in one transaction; the
    /// credit as recorded.
    async fn post_credit(&self, mut credit: Credit) -> Result<Credit, CoordError> {
        let reference = credit.ledger_reference();
        let mut tx = self.http.pool.begin().await.map_err(storage)?;
        let mut announce = true;
        if self.ledger.is_some() {
            let posted = custos_ledger::deposit(
                &mut tx,
                &credit.wallet,
                &credit.asset,
                credit.amount,
                &reference,
            )
            .await
            .map_err(|e| CoordError::storage(format!("ledger deposit {reference}"), e))?;
            // A deposit the ledger held before credits were recorded was
            // announced then.
            announce = !posted.replayed;
            credit.posted = true;
        }
        if announce {
            self.outbox
                .enqueue_event(&mut tx, &events::deposit_event(&credit))
                .await?;
        }
        credit.state = CreditState::Credited;
        credits::save(&mut tx, &credit).await?;
        tx.commit().await.map_err(storage)?;
        Ok(credit)
    }

    /// Reverses the credits of `chain` whose block is no longer in it, and
    /// finishes reversals an earlier pass began; then moves the chain's
    /// deposit scan back to the fork so the new branch is read.
    async fn reverse_reorged(
        &self,
        chains: &Chains,
        audit: &AuditTrail,
        chain: &str,
    ) -> Result<(), CoordError> {
        let head = chains.deposit_head(chain).await?;
        let floor = head.saturating_sub(credits::REORG_WINDOW);
        let recent = credits::recent(&self.http.pool, chain, floor).await?;
        if recent.is_empty() {
            return Ok(());
        }
        let mut credited = Vec::new();
        for c in recent {
            match c.state {
                CreditState::Credited => credited.push(c),
                CreditState::Reversing => self.reverse(audit, c, None).await?,
                // Logged by an attempt that stopped before the ledger, and
                // not found by the scans since (its block may be gone):
                // a logged credit is posted, then checked like the others.
                CreditState::Pending => {
                    if audit
                        .logged(c.log_from, &c.credited_entry())
                        .await?
                        .is_some()
                    {
                        credited.push(self.post_credit(c).await?);
                    }
                }
                CreditState::Reversed => {}
            }
        }
        let heights: BTreeSet<u64> = credited.iter().map(|c| c.block_number).collect();
        let mut canonical = BTreeMap::new();
        for h in heights {
            if let Some(hash) = chains.canonical_hash(chain, h).await? {
                canonical.insert(h, hash);
            }
        }
        let at: Vec<(u64, &str)> = credited
            .iter()
            .map(|c| (c.block_number, c.block_hash.as_str()))
            .collect();
        let plan = credits::plan(&at, &canonical, floor);
        for (i, reason) in plan.reverse {
            if let Some(c) = credited.get(i) {
                self.reverse(audit, c.clone(), Some(reason)).await?;
            }
        }
        if let Some(from) = plan.rescan_from {
            chains.rewind_deposit_scan(chain, from).await?;
            tracing::warn!(chain = %chain, from, "reorganisation: deposits scanned again from this block");
        }
        Ok(())
    }

    /// Logs (kind 26) and reverses one credit: the ledger reversal (when
    /// the ledger holds the credit), the `deposit.reversed` event and the
    /// record's `reversed` state in one transaction. `reason` starts the
    /// reversal; `None` finishes one an earlier pass began.
    async fn reverse(
        &self,
        audit: &AuditTrail,
        mut credit: Credit,
        reason: Option<String>,
    ) -> Result<(), CoordError> {
        let logged = match reason {
            Some(r) => {
                credit.reason = r;
                false
            }
            None => audit
                .logged(credit.log_from, &credit.reversed_entry())
                .await?
                .is_some(),
        };
        if !logged {
            credit.state = CreditState::Reversing;
            credit.log_from = audit.log().size().await;
            let mut conn = self.http.pool.acquire().await.map_err(storage)?;
            credits::save(&mut conn, &credit).await?;
            drop(conn);
            audit.append(credit.reversed_entry()).await?;
        }
        let reference = credit.ledger_reference();
        let mut tx = self.http.pool.begin().await.map_err(storage)?;
        if credit.posted {
            custos_ledger::reverse_deposit(&mut tx, &reference)
                .await
                .map_err(|e| CoordError::storage(format!("ledger reversal {reference}"), e))?;
        }
        self.outbox
            .enqueue_event(&mut tx, &events::deposit_reversed_event(&credit))
            .await?;
        credit.state = CreditState::Reversed;
        credits::save(&mut tx, &credit).await?;
        tx.commit().await.map_err(storage)?;
        self.gauges
            .deposits_reversed
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            chain = %credit.chain, wallet = %credit.wallet, asset = %credit.asset,
            amount = %credit.amount, reference = %reference, block = credit.block_number,
            reason = %credit.reason, "deposit reversed"
        );
        Ok(())
    }
}

fn storage(e: sqlx::Error) -> CoordError {
    CoordError::storage("deposit credits", e)
}

//! Key rotation by sweep, and key retirement.
//!
//! # Design
//!
//! Rotating a key moves its funds, it does not change its shares: a new key
//! is generated on the same signer group (same scheme, threshold and chain),
//! and every balance of every address of the old key (its own address and
//! each recorded derived address) is paid to the new key's address by an
//! ordinary withdrawal. Each sweep therefore goes through risk, policy,
//! approvals and time lock, and every signer checks it like any other; a
//! rotation has no power a withdrawal to that address would not have. Which
//! rule a sweep falls under is the policy's business (README, "Rotating a
//! key").
//!
//! The plan ([`plan_sweeps`], pure) sweeps an address's tokens first, each
//! whole (their fees paid from its native coin), and its native coin only
//! in a later round, once no token is left there: then less its own fee
//! cap, so what the fee leaves unspent is less than one transfer's fee cap.
//! That dust no transfer can move (it would cost more than it carries);
//! retirement accepts a native balance up to one transfer's fee cap and
//! nothing of any token ([`check_retirable`]).
//!
//! Sweeps are requested only while no withdrawal of the old key is open, so
//! a balance is never swept twice and no open withdrawal is starved; a
//! later call requests sweeps for what is still there (a blocked or
//! rejected sweep, a deposit that arrived meanwhile). Once nothing is left
//! and nothing is open, and the admins listed the key under `retired_keys`
//! in the signed policy in force ([`Engine::retirement_bundle`]), the key
//! is retired: marked `retired` (nothing signs with it from then on) and
//! logged (`key_retired`) before any signer is asked to destroy its share,
//! which each does only on that admin bundle (checked against its own admin
//! set and the log's newest activation) and on seeing that entry in the log
//! it witnessed ([`crate::cluster::Cluster::destroy_retired_shares`]).
//! Every step is persisted before it is acted on: the new key's id before
//! its key generation, each sweep withdrawal as it is created.

use std::sync::Arc;

use custos_audit::EntryBody;

use crate::audit::AuditTrail;
use crate::auth::Identity;
use crate::cluster::{Cluster, Destruction};
use crate::db::{KeyLifecycle, KeyRow, SweepRow};
use crate::error::CoordError;
use crate::withdrawal::bundle::BundleBytes;
use crate::withdrawal::{CreateRequest, Engine, State};

/// One balance of one address of the key being rotated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    /// The address.
    pub address: String,
    /// Its derivation index (`None`: the key's own address).
    pub index: Option<u32>,
    /// Asset symbol.
    pub asset: String,
    /// The chain's native coin (pays every fee), or a token.
    pub native: bool,
    /// Balance now, base units.
    pub balance: u128,
    /// The fee cap of a transfer of this asset, native base units.
    pub fee_cap: u128,
}

/// A sweep to request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedSweep {
    /// The address swept.
    pub address: String,
    /// Its derivation index (`None`: the key's own address).
    pub index: Option<u32>,
    /// Asset.
    pub asset: String,
    /// Amount, base units.
    pub amount: u128,
    /// Fee cap, native base units.
    pub fee_cap: u128,
}

/// A balance the plan leaves, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Left {
    /// The address.
    pub address: String,
    /// Asset.
    pub asset: String,
    /// Balance, base units.
    pub balance: u128,
    /// Why it is not swept.
    pub reason: String,
}

/// Plans the sweeps of `holdings`, address by address in the order given:
/// every token with a balance (whole) while the address's native balance
/// still covers their fee caps; where no token is held, the native coin
/// less its own fee cap. What cannot be swept is in `Left`; the native
/// coin of an address that still holds tokens waits for a later round.
pub fn plan_sweeps(holdings: &[Holding]) -> (Vec<PlannedSweep>, Vec<Left>) {
    let mut plan = Vec::new();
    let mut left = Vec::new();
    let mut addresses: Vec<(&str, Option<u32>)> = Vec::new();
    for h in holdings {
        if !addresses.iter().any(|(a, _)| *a == h.address) {
            addresses.push((&h.address, h.index));
        }
    }
    for (address, index) in addresses {
        let here: Vec<&Holding> = holdings.iter().filter(|h| h.address == address).collect();
        let native = here.iter().find(|h| h.native);
        let gas = native.map_or(0, |n| n.balance);
        let mut reserve: u128 = 0;
        let tokens: Vec<&&Holding> = here.iter().filter(|h| !h.native && h.balance > 0).collect();
        for t in &tokens {
            match reserve.checked_add(t.fee_cap) {
                Some(r) if r <= gas => {
                    reserve = r;
                    plan.push(PlannedSweep {
                        address: address.to_owned(),
                        index,
                        asset: t.asset.clone(),
                        amount: t.balance,
                        fee_cap: t.fee_cap,
                    });
                }
                _ => left.push(Left {
                    address: address.to_owned(),
                    asset: t.asset.clone(),
                    balance: t.balance,
                    reason: format!(
                        "its sweep needs up to {} base units of the native coin for fees, and {address} has {} left after the other sweeps' reserve",
                        t.fee_cap,
                        gas.saturating_sub(reserve)
                    ),
                }),
            }
        }
        if let Some(n) = native.filter(|n| n.balance > 0 && tokens.is_empty()) {
            let reserve = n.fee_cap;
            if n.balance > reserve {
                plan.push(PlannedSweep {
                    address: address.to_owned(),
                    index,
                    asset: n.asset.clone(),
                    amount: n.balance - reserve,
                    fee_cap: n.fee_cap,
                });
            } else {
                left.push(Left {
                    address: address.to_owned(),
                    asset: n.asset.clone(),
                    balance: n.balance,
                    reason: format!(
                        "dust: no more than the fee reserve of {reserve} base units (a transfer would cost more than it carries)"
                    ),
                });
            }
        }
    }
    (plan, left)
}

/// Refuses a retirement while any address still holds a token, or more of
/// the native coin than one transfer's fee cap (what a sweep leaves as
/// dust), naming the address, the asset and the balance.
pub fn check_retirable(key_id: &str, holdings: &[Holding]) -> Result<(), CoordError> {
    let held: Vec<String> = holdings
        .iter()
        .filter(|h| {
            if h.native {
                h.balance > h.fee_cap
            } else {
                h.balance > 0
            }
        })
        .map(|h| format!("{} {} base units on {}", h.balance, h.asset, h.address))
        .collect();
    if held.is_empty() {
        Ok(())
    } else {
        Err(CoordError::precondition(
            "key",
            key_id,
            format!(
                "still holds {}: sweep it first (`custos key rotate {key_id}`), a retired key never signs again",
                held.join(", ")
            ),
        ))
    }
}

/// Where a rotation stands.
#[derive(Clone, Debug)]
pub struct RotationReport {
    /// The key rotated out (as it is now).
    pub old_key: KeyRow,
    /// Its rotation and retirement record.
    pub lifecycle: KeyLifecycle,
    /// The key its balances go to.
    pub new_key: Option<KeyRow>,
    /// `sweeping` (sweeps open), `pending` (balances to sweep, none open:
    /// the next call requests them), `swept` (nothing left: the next call
    /// retires the key) or `retired`.
    pub state: String,
    /// Every sweep requested, with its withdrawal's state.
    pub sweeps: Vec<(SweepRow, String)>,
    /// What the chain holds on the old key's addresses now.
    pub holdings: Vec<Holding>,
    /// What the holders of a retired key answered this call (retirement).
    pub destruction: Option<Destruction>,
}

/// Key rotation and retirement over the cluster and the withdrawal engine.
pub struct Rotations {
    cluster: Arc<Cluster>,
    engine: Option<Arc<Engine>>,
    audit: Arc<AuditTrail>,
}

impl Rotations {
    /// Wires the parts; without an engine (no policy configured) only keys
    /// without a chain can be retired, and nothing rotates.
    pub fn new(cluster: Arc<Cluster>, engine: Option<Arc<Engine>>, audit: Arc<AuditTrail>) -> Self {
        Self {
            cluster,
            engine,
            audit,
        }
    }

    async fn key(&self, key_id: &str) -> Result<KeyRow, CoordError> {
        crate::cluster::validate_id("key_id", key_id)?;
        self.cluster
            .db
            .key(key_id)
            .await?
            .ok_or_else(|| CoordError::not_found("key", key_id))
    }

    fn engine(&self, key: &KeyRow, what: &str) -> Result<&Arc<Engine>, CoordError> {
        self.engine.as_ref().ok_or_else(|| {
            CoordError::precondition(
                "key",
                &key.key_id,
                format!(
                    "is a wallet on {}: {what} needs its balances, and this coordinator has no withdrawal flow (no policy configured)",
                    key.chain
                ),
            )
        })
    }

    /// Every balance of every address of `key` (its own and each recorded
    /// derived one), for every asset configured on its chain, read now.
    pub async fn holdings(&self, key: &KeyRow) -> Result<Vec<Holding>, CoordError> {
        if key.chain.is_empty() {
            return Ok(Vec::new());
        }
        let engine = self.engine(key, "reading")?;
        if engine.chains().evm(&key.chain).is_none() {
            return Err(CoordError::precondition(
                "key",
                &key.key_id,
                format!(
                    "is a wallet on {}: rotation and retirement read balances on EVM chains only so far",
                    key.chain
                ),
            ));
        }
        let mut addresses: Vec<(String, Option<u32>)> = Vec::new();
        if let Some(a) = &key.address {
            addresses.push((a.clone(), None));
        }
        for d in crate::derived::list(&self.cluster.db, &key.key_id).await? {
            addresses.push((d.address, Some(d.index)));
        }
        let mut out = Vec::new();
        for (address, index) in addresses {
            for symbol in engine.assets_on(&key.chain) {
                let Some(asset) = engine.asset(&key.chain, &symbol) else {
                    continue;
                };
                let balance = engine
                    .chains()
                    .evm_balance(&key.chain, &address, asset.contract.as_deref())
                    .await?;
                out.push(Holding {
                    address: address.clone(),
                    index,
                    asset: symbol,
                    native: asset.contract.is_none(),
                    balance,
                    fee_cap: asset.default_fee_cap.parse().unwrap_or(0),
                });
            }
        }
        Ok(out)
    }

    /// The open (not finished) withdrawals of `wallet`: id and state.
    async fn open_withdrawals(
        &self,
        engine: &Engine,
        wallet: &str,
    ) -> Result<Vec<(String, String)>, CoordError> {
        let open: Vec<State> = State::ALL
            .into_iter()
            .filter(|s| !s.is_terminal() || *s == State::Signed)
            .collect();
        let rows = engine
            .store
            .list(Some(wallet), &open, None, 0, 1000)
            .await?;
        Ok(rows
            .into_iter()
            .filter(|w| w.state != State::Signed.as_str() || w.unsigned_tx.is_some())
            .map(|w| (w.id, w.state))
            .collect())
    }

    /// Retires `key_id` (see the module doc): refused while it still holds
    /// funds or has open withdrawals; repeated, it asks the holders that
    /// have not confirmed their share's destruction yet.
    pub async fn retire(
        &self,
        key_id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<RotationReport, CoordError> {
        let key = self.key(key_id).await?;
        let lifecycle = self.cluster.db.lifecycle(key_id).await?;
        let bundle = if key.state == "retired" {
            self.retirement_bundle(key_id)?
        } else {
            if key.state != "ready" {
                return Err(CoordError::precondition(
                    "key",
                    key_id,
                    format!("is {}, not ready", key.state),
                ));
            }
            if !key.chain.is_empty() {
                let engine = self.engine(&key, "retirement")?;
                let open = self.open_withdrawals(engine, key_id).await?;
                if !open.is_empty() {
                    let list: Vec<String> =
                        open.iter().map(|(id, s)| format!("{id} ({s})")).collect();
                    return Err(CoordError::precondition(
                        "key",
                        key_id,
                        format!(
                            "has open withdrawals: {}; they finish (or are cancelled) before it retires",
                            list.join(", ")
                        ),
                    ));
                }
                check_retirable(key_id, &self.holdings(&key).await?)?;
            }
            // The admins' authorization, which every signer checks itself
            // before it destroys its share: nothing is marked or logged
            // without it.
            let bundle = self.retirement_bundle(key_id)?;
            let successor = lifecycle.rotating_to.clone().unwrap_or_default();
            let reason = match (reason.trim(), successor.is_empty()) {
                ("", true) => "retired by an admin".to_owned(),
                ("", false) => format!("rotated to {successor}"),
                (r, _) => r.to_owned(),
            };
            // Persisted first: from here on nothing signs with the key.
            self.cluster
                .db
                .mark_retired(key_id, &successor, &reason)
                .await?;
            bundle
        };
        let mut lifecycle = self.cluster.db.lifecycle(key_id).await?;
        let index = match lifecycle.retirement_index {
            Some(i) => i,
            None => {
                let i = self
                    .audit
                    .append(EntryBody::KeyRetired {
                        key_id: key_id.to_owned(),
                        public_key: key.public_key.clone().unwrap_or_default(),
                        successor: lifecycle.successor.clone(),
                        actor: actor.to_owned(),
                        reason: lifecycle.reason.clone(),
                    })
                    .await?;
                self.cluster.db.set_retirement_index(key_id, i).await?;
                tracing::warn!(key_id, by = %actor, log_index = i, "key retired");
                i
            }
        };
        let destruction = self
            .cluster
            .destroy_retired_shares(&key, index, &lifecycle.shares_destroyed, &bundle)
            .await?;
        if !destruction.destroyed.is_empty() {
            self.cluster
                .db
                .add_shares_destroyed(key_id, &destruction.destroyed)
                .await?;
            self.audit
                .append(EntryBody::KeySharesDestroyed {
                    key_id: key_id.to_owned(),
                    signers: destruction.destroyed.clone(),
                    retirement_index: index,
                })
                .await?;
            lifecycle = self.cluster.db.lifecycle(key_id).await?;
        }
        let mut report = self.report(key_id, false).await?;
        report.lifecycle = lifecycle;
        report.destruction = Some(destruction);
        Ok(report)
    }

    /// The admins' signed policy bundle that lists `key_id` under
    /// `retired_keys` and is in force: refused, naming what the admins must
    /// sign, when there is none.
    fn retirement_bundle(&self, key_id: &str) -> Result<BundleBytes, CoordError> {
        self.engine
            .as_ref()
            .ok_or_else(|| {
                CoordError::precondition(
                    "key",
                    key_id,
                    "cannot retire: this coordinator has no policy configured, and signers destroy a share only when the admins list the key under retired_keys in a signed policy bundle",
                )
            })?
            .retirement_bundle(key_id)
    }

    /// Where the rotation of `key_id` stands; with `holdings`, what its
    /// addresses hold now (read from the chain).
    pub async fn report(&self, key_id: &str, holdings: bool) -> Result<RotationReport, CoordError> {
        let old_key = self.key(key_id).await?;
        let lifecycle = self.cluster.db.lifecycle(key_id).await?;
        let new_key = match &lifecycle.rotating_to {
            Some(n) => self.cluster.db.key(n).await?,
            None => None,
        };
        let mut sweeps = Vec::new();
        for s in self.cluster.db.sweeps(key_id).await? {
            let state = match &self.engine {
                Some(e) => e
                    .store
                    .get(&s.withdrawal_id)
                    .await?
                    .map_or_else(|| "unknown".to_owned(), |w| w.state),
                None => "unknown".to_owned(),
            };
            sweeps.push((s, state));
        }
        let holdings_read = holdings && old_key.state != "retired";
        let holdings = if holdings_read {
            self.holdings(&old_key).await?
        } else {
            Vec::new()
        };
        let open = sweeps.iter().any(|(_, s)| {
            State::parse(s).is_none_or(|st| !st.is_terminal() || st == State::Signed)
        });
        let state = if old_key.state == "retired" {
            "retired"
        } else if open {
            "sweeping"
        } else if !plan_sweeps(&holdings).0.is_empty() || !holdings_read {
            "pending"
        } else {
            "swept"
        };
        Ok(RotationReport {
            old_key,
            lifecycle,
            new_key,
            state: state.to_owned(),
            sweeps,
            holdings,
            destruction: None,
        })
    }

    /// Rotates `key_id` by sweep (see the module doc): the first call
    /// creates the new key and requests the sweeps; a later one requests
    /// sweeps for what is left, or retires the key once nothing is.
    /// `status_only` changes nothing.
    pub async fn rotate(
        &self,
        client: &Identity,
        key_id: &str,
        new_key_id: &str,
        status_only: bool,
    ) -> Result<RotationReport, CoordError> {
        let key = self.key(key_id).await?;
        if status_only || key.state == "retired" {
            return self.report(key_id, true).await;
        }
        if key.state != "ready" {
            return Err(CoordError::precondition(
                "key",
                key_id,
                format!("is {}, not ready", key.state),
            ));
        }
        let engine = self.engine(&key, "rotation")?.clone();
        if key.chain.is_empty() {
            return Err(CoordError::invalid(
                "key_id",
                format!(
                    "key {key_id} holds no funds on a chain: retire it (`custos key retire`) instead of rotating it"
                ),
            ));
        }
        // Probes the chain (EVM only, so far) before anything is created.
        self.holdings(&key).await?;
        let new_key = self.successor(&key, new_key_id, &client.id).await?;
        let new_address = new_key.address.clone().unwrap_or_default();
        let open = self.open_withdrawals(&engine, key_id).await?;
        if open.is_empty() {
            let holdings = self.holdings(&key).await?;
            let (plan, _) = plan_sweeps(&holdings);
            if plan.is_empty() {
                let reason = format!("rotated to {}", new_key.key_id);
                return self.retire(key_id, &client.id, &reason).await;
            }
            let round = self.cluster.db.sweeps(key_id).await?.len();
            for (i, p) in plan.iter().enumerate() {
                let source = p.index.map_or(-1, i64::from);
                let w = engine
                    .create(
                        client,
                        CreateRequest {
                            idempotency_key: format!(
                                "rotate:{key_id}:{}:{source}:{}",
                                round + i,
                                p.asset
                            ),
                            wallet: key_id.to_owned(),
                            asset: p.asset.clone(),
                            destination: new_address.clone(),
                            amount: p.amount.to_string(),
                            fee_cap: p.fee_cap.to_string(),
                            memo: format!("rotation of key {key_id} to {}", new_key.key_id),
                            request_signature: String::new(),
                            source_path: p.index.map(|i| format!("m/0/{i}")).unwrap_or_default(),
                        },
                    )
                    .await?;
                tracing::info!(key_id, withdrawal_id = %w.id, asset = %p.asset,
                    amount = p.amount, from = %p.address, "rotation sweep requested");
                self.cluster
                    .db
                    .insert_sweep(
                        key_id,
                        &SweepRow {
                            withdrawal_id: w.id,
                            source_address: p.address.clone(),
                            derivation_index: source,
                            asset: p.asset.clone(),
                            amount: p.amount.to_string(),
                        },
                    )
                    .await?;
            }
        }
        self.report(key_id, true).await
    }

    /// The key `key` rotates to: the recorded one, else a new key on the
    /// same signer group, same scheme, threshold and chain (its id recorded
    /// before its key generation starts), with the rotation logged.
    async fn successor(
        &self,
        key: &KeyRow,
        new_key_id: &str,
        actor: &str,
    ) -> Result<KeyRow, CoordError> {
        let db = &self.cluster.db;
        let lifecycle = db.lifecycle(&key.key_id).await?;
        // A successor whose key generation failed is replaced by a new one.
        let recorded = match &lifecycle.rotating_to {
            Some(id) => match db.key(id).await? {
                Some(k) if k.state == "failed" => {
                    tracing::warn!(key_id = %key.key_id, failed = %id,
                        "rotation: the new key's generation failed; another is made");
                    None
                }
                _ => Some(id.clone()),
            },
            None => None,
        };
        let new_id = match &recorded {
            Some(id) => {
                if !new_key_id.is_empty() && new_key_id != id {
                    return Err(CoordError::invalid(
                        "new_key_id",
                        format!("key {} is already being rotated to {id}", key.key_id),
                    ));
                }
                id.clone()
            }
            None => {
                let id = if new_key_id.is_empty() {
                    format!("{}-r{}", key.key_id, crate::clock::now_secs())
                } else {
                    new_key_id.to_owned()
                };
                crate::cluster::validate_id("new_key_id", &id)?;
                if db.key(&id).await?.is_some() {
                    return Err(CoordError::already_exists(
                        "key",
                        id,
                        "already exists: a rotation creates its own new key",
                    ));
                }
                db.set_rotation(&key.key_id, &id, None).await?;
                id
            }
        };
        let new_key = match db.key(&new_id).await? {
            Some(k) if k.state == "ready" => k,
            Some(k) if k.state == "creating" => {
                return Err(CoordError::precondition(
                    "key",
                    new_id,
                    "is still being generated; ask again when it is ready",
                ));
            }
            _ => {
                tracing::info!(key_id = %key.key_id, new_key_id = %new_id, "rotation: creating the new key");
                self.cluster
                    .create_key(&new_id, key.threshold, &key.chain, key.scheme)
                    .await?
            }
        };
        let mut same = new_key.participants.clone();
        let mut old = key.participants.clone();
        same.sort();
        old.sort();
        if same != old {
            return Err(CoordError::precondition(
                "key",
                &new_key.key_id,
                format!(
                    "was generated on signers {} while {} is held by {}: the signer group changed; rotate by hand",
                    new_key.participants.join(", "),
                    key.key_id,
                    key.participants.join(", ")
                ),
            ));
        }
        if lifecycle.rotation_log_index.is_none() {
            let index = self
                .audit
                .append(EntryBody::KeyRotationStarted {
                    key_id: key.key_id.clone(),
                    new_key_id: new_key.key_id.clone(),
                    new_address: new_key.address.clone().unwrap_or_default(),
                    actor: actor.to_owned(),
                })
                .await?;
            db.set_rotation(&key.key_id, &new_key.key_id, Some(index))
                .await?;
        }
        Ok(new_key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ROOT: &str = "0xroot";
    const CHILD: &str = "0xchild";

    fn h(address: &str, index: Option<u32>, asset: &str, balance: u128, fee_cap: u128) -> Holding {
        Holding {
            address: address.into(),
            index,
            asset: asset.into(),
            native: asset == "ETH",
            balance,
            fee_cap,
        }
    }

    fn planned(holdings: &[Holding]) -> Vec<(&str, Option<u32>, &str, u128, u128)> {
        let (plan, left) = plan_sweeps(holdings);
        assert!(left.is_empty(), "{left:?}");
        plan.into_iter()
            .map(|p| {
                let address = if p.address == ROOT { ROOT } else { CHILD };
                let asset = if p.asset == "ETH" { "ETH" } else { "MINI" };
                (address, p.index, asset, p.amount, p.fee_cap)
            })
            .collect()
    }

    #[test]
    fn tokens_are_swept_whole_first_and_the_native_coin_after_them_less_its_fee_cap() {
        let holdings = [
            h(ROOT, None, "ETH", 1_000_000, 21_000),
            h(ROOT, None, "MINI", 500, 65_000),
            h(ROOT, None, "USDC", 0, 65_000),
            h(CHILD, Some(3), "ETH", 50_000, 21_000),
            h(CHILD, Some(3), "MINI", 0, 65_000),
        ];
        // Round 1: the root's token (its ETH pays the fee and waits), the
        // child's ETH (it holds no token).
        assert_eq!(
            planned(&holdings),
            [
                (ROOT, None, "MINI", 500, 65_000),
                (CHILD, Some(3), "ETH", 50_000 - 21_000, 21_000),
            ]
        );
        // Round 2, once the token sweep confirmed (it cost 40 000): the
        // root's ETH less one fee cap; the child keeps only dust.
        let after = [
            h(ROOT, None, "ETH", 960_000, 21_000),
            h(ROOT, None, "MINI", 0, 65_000),
            h(CHILD, Some(3), "ETH", 0, 21_000),
        ];
        assert_eq!(
            planned(&after),
            [(ROOT, None, "ETH", 960_000 - 21_000, 21_000)]
        );
        // Round 3: what the fee left unspent is dust, and retirement takes it.
        let dust = [
            h(ROOT, None, "ETH", 2_000, 21_000),
            h(ROOT, None, "MINI", 0, 65_000),
        ];
        let (plan, left) = plan_sweeps(&dust);
        assert!(plan.is_empty());
        assert!(left[0].reason.starts_with("dust"), "{left:?}");
        check_retirable("old", &dust).unwrap();
    }

    #[test]
    fn dust_and_tokens_without_gas_are_left_with_a_reason() {
        let holdings = [
            // Not enough ETH for the token sweep's fee: the token stays
            // (and the ETH waits for it).
            h(ROOT, None, "ETH", 10_000, 21_000),
            h(ROOT, None, "MINI", 7, 65_000),
            // Exactly the reserve: nothing would arrive.
            h(CHILD, Some(1), "ETH", 21_000, 21_000),
        ];
        let (plan, left) = plan_sweeps(&holdings);
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(left.len(), 2);
        assert_eq!((left[0].asset.as_str(), left[0].balance), ("MINI", 7));
        assert!(left[0].reason.contains("fees"), "{}", left[0].reason);
        assert_eq!((left[1].address.as_str(), left[1].balance), (CHILD, 21_000));
        assert!(left[1].reason.starts_with("dust"), "{}", left[1].reason);
        // Nothing at all: nothing to do.
        assert_eq!(plan_sweeps(&[]), (Vec::new(), Vec::new()));
    }

    #[test]
    fn retirement_is_refused_naming_every_balance_left_but_dust() {
        let dust = [
            h(ROOT, None, "ETH", 20_999, 21_000),
            h(ROOT, None, "MINI", 0, 65_000),
        ];
        check_retirable("old", &dust).unwrap();
        let held = [
            h(ROOT, None, "ETH", 21_001, 21_000),
            h(CHILD, Some(2), "MINI", 5, 65_000),
        ];
        let e = check_retirable("old", &held).unwrap_err();
        assert!(matches!(e, CoordError::FailedPrecondition { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("21001 ETH base units on 0xroot"), "{text}");
        assert!(text.contains("5 MINI base units on 0xchild"), "{text}");
        assert!(text.contains("custos key rotate old"), "{text}");
    }
}

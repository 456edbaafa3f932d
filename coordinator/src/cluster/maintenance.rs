//! Share maintenance of FROST keys: refresh without a dealer, and repair of
//! one signer's lost share by others.
//!
//! # Design
//!
//! Both run over the signers' libp2p sessions like the key generation; the
//! coordinator only starts them, checks that every signer reports the same
//! public package, and records the outcome. A refresh takes every holder
//! (it keeps the key's `t`-of-`n` and every signer's index), so all must
//! be reachable; a repair takes the first `t` reachable other holders as
//! helpers and the signer being repaired, which must be running with its
//! share lost. The pool is emptied before a refresh starts and again when
//! the change is recorded (in the same transaction as the new public
//! package): nonce commitments never outlive the shares they were made
//! under. The caller logs the change (`key_shares_changed`).

use std::sync::Arc;

use custos_proto::signer::{RefreshSharesRequest, RepairShareRequest};
use rand::RngCore;

use super::{Cluster, all_or_first_error};
use crate::db::{Db, KeyRow, ShareChangeRow};
use crate::error::CoordError;
use crate::signers::Signer;

/// What a refresh or repair did.
#[derive(Clone, Debug)]
pub struct ShareChangeOutcome {
    /// The key afterwards.
    pub key: KeyRow,
    /// The change as recorded.
    pub change: ShareChangeRow,
    /// The public package in force afterwards.
    pub public_package: Vec<u8>,
}

/// The key's mark in [`Cluster`]'s maintenance set while it is held.
struct Busy<'a> {
    cluster: &'a Cluster,
    key_id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.cluster
            .maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key_id);
    }
}

impl Cluster {
    /// Whether `key_id`'s shares are being refreshed or repaired.
    pub fn in_maintenance(&self, key_id: &str) -> bool {
        self.maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key_id)
    }

    fn begin_maintenance(&self, key_id: &str) -> Result<Busy<'_>, CoordError> {
        if !self
            .maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_id.to_owned())
        {
            return Err(CoordError::precondition(
                "key",
                key_id,
                "is being refreshed or repaired already",
            ));
        }
        Ok(Busy {
            cluster: self,
            key_id: key_id.to_owned(),
        })
    }

    /// A ready key whose scheme refreshes and repairs shares.
    async fn maintainable_key(&self, key_id: &str) -> Result<(KeyRow, Vec<u8>), CoordError> {
        let key = self
            .db
            .key(key_id)
            .await?
            .ok_or_else(|| CoordError::not_found("key", key_id))?;
        if let Err(e) = custos_mpc::scheme(key.scheme).check_refreshable() {
            return Err(CoordError::invalid(
                "key_id",
                format!(
                    "{e}: key {key_id} is a {} key; share refresh and repair are for FROST keys (schnorr-secp256k1-taproot, ed25519)",
                    key.scheme
                ),
            ));
        }
        let package = match (&key.state[..], &key.public_package) {
            ("ready", Some(p)) => p.clone(),
            _ => {
                return Err(CoordError::precondition(
                    "key",
                    key_id,
                    format!("is {}, not ready", key.state),
                ));
            }
        };
        Ok((key, package))
    }

    /// The share generation in force for `key_id`.
    async fn generation(&self, key_id: &str) -> Result<u64, CoordError> {
        Ok(self
            .db
            .last_share_change(key_id)
            .await?
            .map_or(0, |c| c.generation))
    }

    /// Share refresh without a dealer among every holder of `key_id`
    /// (FROST): the same public key, new shares; the new public package
    /// is recorded and the key's pool emptied.
    pub async fn refresh_key(&self, key_id: &str) -> Result<ShareChangeOutcome, CoordError> {
        let (key, _) = self.maintainable_key(key_id).await?;
        let _busy = self.begin_maintenance(key_id)?;
        let members = self
            .require_live(&key.participants, key.participants.len())
            .await?;
        let generation = self.generation(key_id).await? + 1;
        let epoch = self.signers.epoch()?;
        self.db.discard_presigs(key_id).await?;
        let mut nonce = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut nonce);
        let req = RefreshSharesRequest {
            key_id: key.key_id.clone(),
            participants: key.participants.clone(),
            nonce,
            generation,
            coordinator_epoch: epoch,
        };
        let results = all_or_first_error(members, self.settings.session_timeout, |s| {
            let req = req.clone();
            async move { s.client().refresh_shares(req).await.map(|r| r.into_inner()) }
        })
        .await?;
        let first = results.first().cloned().unwrap_or_default();
        if results.iter().any(|r| *r != first)
            || Some(&first.public_key) != key.public_key.as_ref()
            || first.generation != generation
        {
            return Err(CoordError::Aborted {
                culprit: None,
                reporter: None,
                suspects: key.participants.clone(),
                reason: format!(
                    "signers disagree on the refreshed public package of key {key_id}, or it has another public key; the change is not recorded"
                ),
            });
        }
        let change = ShareChangeRow {
            generation,
            change: "refresh".into(),
            repaired: String::new(),
            signers: key.participants.clone(),
            at: Db::now_rfc3339(),
        };
        self.record(key, first.public_package, change).await
    }

    /// Repair of `signer`'s lost share of `key_id` (FROST) by the first
    /// `t` reachable other holders; `signer` must be running with its share
    /// lost (a signer holding a readable share refuses).
    pub async fn repair_key_share(
        &self,
        key_id: &str,
        signer: &str,
    ) -> Result<ShareChangeOutcome, CoordError> {
        let (key, package) = self.maintainable_key(key_id).await?;
        if !key.participants.iter().any(|p| p == signer) {
            return Err(CoordError::invalid(
                "signer",
                format!(
                    "{signer:?} holds no share of key {key_id} (holders: {})",
                    key.participants.join(", ")
                ),
            ));
        }
        let _busy = self.begin_maintenance(key_id)?;
        let lost: Vec<Arc<Signer>> = self.require_live(&[signer.to_owned()], 1).await?;
        let others: Vec<String> = key
            .participants
            .iter()
            .filter(|p| *p != signer)
            .cloned()
            .collect();
        let t = usize::from(key.threshold);
        let mut helpers = self.require_live(&others, t).await?;
        // Keygen order, the first t: deterministic and enough.
        helpers.sort_by_key(|s| {
            key.participants
                .iter()
                .position(|p| *p == s.endpoint.node_id)
        });
        helpers.truncate(t);
        let helper_ids: Vec<String> = helpers.iter().map(|s| s.endpoint.node_id.clone()).collect();
        let generation = self.generation(key_id).await?;
        let epoch = self.signers.epoch()?;
        self.db.discard_presigs(key_id).await?;
        let mut nonce = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut nonce);
        let req = RepairShareRequest {
            key_id: key.key_id.clone(),
            helpers: helper_ids.clone(),
            lost: signer.to_owned(),
            nonce,
            scheme: key.scheme.name().to_owned(),
            group_id: key.group_id.clone(),
            threshold: u32::from(key.threshold),
            participants: key.participants.clone(),
            public_package: package.clone(),
            generation,
            coordinator_epoch: epoch,
        };
        let mut session = helpers;
        session.extend(lost);
        let results = all_or_first_error(session, self.settings.session_timeout, |s| {
            let req = req.clone();
            async move {
                s.client()
                    .repair_share(req)
                    .await
                    .map(|r| r.into_inner().public_package)
            }
        })
        .await?;
        if results.iter().any(|p| *p != package) {
            return Err(CoordError::Aborted {
                culprit: None,
                reporter: None,
                suspects: key.participants.clone(),
                reason: format!(
                    "a signer of the repair of key {key_id} holds another public package than the key's record; the change is not recorded"
                ),
            });
        }
        let mut signers = helper_ids;
        signers.push(signer.to_owned());
        let change = ShareChangeRow {
            generation,
            change: "repair".into(),
            repaired: signer.to_owned(),
            signers,
            at: Db::now_rfc3339(),
        };
        self.record(key, package, change).await
    }

    async fn record(
        &self,
        key: KeyRow,
        public_package: Vec<u8>,
        change: ShareChangeRow,
    ) -> Result<ShareChangeOutcome, CoordError> {
        self.db
            .record_share_change(&key.key_id, &public_package, &change)
            .await?;
        tracing::warn!(key_id = %key.key_id, change = %change.change, generation = change.generation,
            repaired = %change.repaired, "key shares changed");
        let key = self
            .db
            .key(&key.key_id)
            .await?
            .ok_or_else(|| CoordError::Internal("key vanished".into()))?;
        Ok(ShareChangeOutcome {
            key,
            change,
            public_package,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_share_change_is_recorded_with_the_new_package_and_empties_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open(dir.path()).await.unwrap();
        let holders: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        db.insert_key("k", "", 2, &holders, "", custos_mpc::SchemeId::Ed25519)
            .await
            .unwrap();
        db.finish_key("k", Some((&[7; 32], b"package-0")), None, None)
            .await
            .unwrap();
        assert_eq!(db.last_share_change("k").await.unwrap(), None);
        for (id, state) in [("p1", "ready"), ("p2", "generating"), ("p3", "consumed")] {
            db.insert_presig(id, "k", &holders[..2]).await.unwrap();
            db.set_presig(id, state, Some(&[1])).await.unwrap();
        }
        assert_eq!(db.ready_presigs("k").await.unwrap().len(), 1);
        let refresh = ShareChangeRow {
            generation: 1,
            change: "refresh".into(),
            repaired: String::new(),
            signers: holders.clone(),
            at: Db::now_rfc3339(),
        };
        db.record_share_change("k", b"package-1", &refresh)
            .await
            .unwrap();
        let key = db.key("k").await.unwrap().unwrap();
        assert_eq!(key.public_package.as_deref(), Some(&b"package-1"[..]));
        assert_eq!(key.public_key.as_deref(), Some(&[7u8; 32][..]));
        assert!(db.ready_presigs("k").await.unwrap().is_empty());
        assert_eq!(db.last_share_change("k").await.unwrap(), Some(refresh));
        let repair = ShareChangeRow {
            generation: 1,
            change: "repair".into(),
            repaired: "c".into(),
            signers: vec!["a".into(), "b".into(), "c".into()],
            at: Db::now_rfc3339(),
        };
        db.record_share_change("k", b"package-1", &repair)
            .await
            .unwrap();
        assert_eq!(db.last_share_change("k").await.unwrap(), Some(repair));
    }
}

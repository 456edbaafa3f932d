//! The signers' half of a key's retirement: each holder destroys its share.
//!
//! # Design
//!
//! The coordinator only asks. A signer destroys its share of a key when the
//! admins authorized it (the policy bundle sent along, signed by an admin
//! quorum, the newest the log activated, lists the key under
//! `retired_keys`) and the audit log *it* witnessed carries the key's
//! `key_retired` entry, so the entry is put under a checkpoint the holders
//! co-sign first; a holder that
//! has not seen it refuses and is asked again by the next `key retire`.
//! Every holder is asked on its own (one down signer does not stop the
//! others), and the answers are returned for the caller to record and log.

use custos_proto::signer::RetireKeyRequest;

use super::Cluster;
use crate::db::KeyRow;
use crate::error::CoordError;
use crate::withdrawal::bundle::BundleBytes;

/// What the holders of a retired key answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destruction {
    /// Signers that destroyed their share (or had already).
    pub destroyed: Vec<String>,
    /// Signers that did not, with why (unreachable, not yet witnessed).
    pub failed: Vec<(String, String)>,
}

impl Cluster {
    /// Asks every holder of `key` (retired at log entry `retirement_index`)
    /// to destroy its share and pool, once the entry is under a checkpoint
    /// they co-signed, showing them the admins' `bundle` that lists the key
    /// under `retired_keys`. Holders in `skip` (already confirmed) are not
    /// asked.
    pub async fn destroy_retired_shares(
        &self,
        key: &KeyRow,
        retirement_index: u64,
        skip: &[String],
        bundle: &BundleBytes,
    ) -> Result<Destruction, CoordError> {
        let holders: Vec<String> = key
            .participants
            .iter()
            .filter(|p| !skip.contains(p))
            .cloned()
            .collect();
        if holders.is_empty() {
            return Ok(Destruction::default());
        }
        // Every holder must see the entry in a checkpoint it co-signed; one
        // that is down does not hold up the others (they are asked anyway).
        if let Err(e) = self.audit.witness_through(retirement_index, &holders).await {
            tracing::warn!(key_id = %key.key_id, error = %e,
                "not every holder co-signed the retirement's checkpoint");
            if let Err(e) = self.audit.witness_through(retirement_index, &[]).await {
                tracing::warn!(key_id = %key.key_id, error = %e, "retirement not checkpointed");
            }
        }
        let epoch = self.signers.epoch()?;
        let mut out = Destruction::default();
        for node in holders {
            let Some(signer) = self.signers.get(&node).cloned() else {
                out.failed
                    .push((node, "not a configured signer".to_owned()));
                continue;
            };
            let req = RetireKeyRequest {
                key_id: key.key_id.clone(),
                coordinator_epoch: epoch,
                policy_document: bundle.document.clone(),
                policy_signatures: bundle.signatures.clone(),
            };
            let mut client = signer.client();
            let call = client.retire_key(req);
            match tokio::time::timeout(self.settings.session_timeout, call).await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    tracing::warn!(key_id = %key.key_id, signer = %node,
                        shares = r.shares_destroyed, presignatures = r.presignatures_destroyed,
                        "signer destroyed its share of the retired key");
                    out.destroyed.push(node);
                }
                Ok(Err(status)) => out.failed.push((node, status.message().to_owned())),
                Err(_) => out.failed.push((node, "did not answer in time".to_owned())),
            }
        }
        Ok(out)
    }
}

//! Restoring a signer's key share from a backup (`custos recovery restore`
//! on a new host): the share, opened from its backup by the admins'
//! recovery key, is sealed into this node's data directory under this
//! node's own sealer, with its public metadata and the group's aux info.

use custos_mpc::KeyShare;
use custos_mpc::protocol::to_secret_bytes;
use custos_mpc::recovery::BackupHeader;

use crate::error::NodeError;
use crate::store::{KeyMeta, Store, validate_id};

/// Seals `share` (opened from a backup whose public facts are `header`)
/// into `store` as node `node_id`'s share; returns the key's metadata.
///
/// Refuses a backup of another node (a share is bound to its keygen index,
/// which is this node's position among the participants), and a key the
/// store already holds. The group's aux info (inside the share) is stored
/// too if the node has none for that group.
pub fn restore_share(
    store: &Store,
    node_id: &str,
    header: &BackupHeader,
    share: &KeyShare,
) -> Result<KeyMeta, NodeError> {
    validate_id("key id", &header.key_id)?;
    validate_id("group id", &header.group_id)?;
    if header.node_id != node_id {
        return Err(NodeError::InvalidRequest(format!(
            "the backup is of signer {}'s share, and this node is {node_id}: restore each signer from its own backup",
            header.node_id
        )));
    }
    if header.participants.get(usize::from(header.party_index)) != Some(&header.node_id)
        || share.core.i != header.party_index
    {
        return Err(NodeError::InvalidRequest(format!(
            "the backup's keygen index {} is not {node_id}'s position among the key's participants",
            header.party_index
        )));
    }
    if store.key_meta(&header.key_id).is_ok() {
        return Err(NodeError::InvalidRequest(format!(
            "this node already holds key {}: nothing restored",
            header.key_id
        )));
    }
    if store.get_aux(&header.group_id)?.is_none() {
        store.put_aux(&header.group_id, &to_secret_bytes(&share.aux)?)?;
    }
    let meta = KeyMeta {
        key_id: header.key_id.clone(),
        group_id: header.group_id.clone(),
        threshold: header.threshold,
        participants: header.participants.clone(),
        public_key: header.public_key.clone(),
        chain_code: custos_mpc::hd::share_chain_code(share).map(hex::encode),
        scheme: custos_mpc::SchemeId::EcdsaSecp256k1.name().to_owned(),
        generation: 0,
        public_package: None,
    };
    store.put_key(&meta, &to_secret_bytes(share)?)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use custos_mpc::protocol::{from_secret_bytes, public_key};
    use custos_mpc::recovery::BACKUP_FORMAT;

    use super::*;
    use crate::store::test_store as store;

    #[test]
    fn a_restored_share_is_sealed_under_the_new_node_and_loads_back() {
        let aux = custos_mpc::fixture::checked_in_aux(3).unwrap();
        let shares = futures::executor::block_on(custos_mpc::sim::keygen(2, &aux)).unwrap();
        let share = &shares[2];
        let header = BackupHeader {
            format: BACKUP_FORMAT.into(),
            key_id: "w-1".into(),
            group_id: "g-1".into(),
            scheme: "ecdsa-secp256k1".into(),
            node_id: "signer-3".into(),
            party_index: 2,
            threshold: 2,
            participants: vec!["signer-1".into(), "signer-2".into(), "signer-3".into()],
            public_key: hex::encode(public_key(share)),
            recipient: String::new(),
            created_at_ms: 0,
        };
        let dir = tempfile::tempdir().unwrap();
        // Another node's backup is refused.
        let s1 = store(&dir.path().join("s1"), "signer-1");
        let e = restore_share(&s1, "signer-1", &header, share).unwrap_err();
        assert!(e.to_string().contains("signer-3's share"), "{e}");
        assert_eq!(s1.key_count().unwrap(), 0);

        let s3 = store(&dir.path().join("s3"), "signer-3");
        let meta = restore_share(&s3, "signer-3", &header, share).unwrap();
        assert_eq!(meta.participants, header.participants);
        let back: KeyShare = from_secret_bytes(&s3.key_share("w-1").unwrap()).unwrap();
        assert_eq!(public_key(&back), public_key(share));
        assert_eq!(back.core.i, 2);
        assert_eq!(s3.aux_groups().unwrap(), vec!["g-1".to_owned()]);
        // Nothing in the data directory holds the share in the clear.
        let sealed = std::fs::read(dir.path().join("s3/keys/w-1.sealed")).unwrap();
        let plain = custos_mpc::protocol::to_secret_bytes(share).unwrap();
        assert!(plain.windows(6).any(|w| w == b"\"core\""));
        assert!(!sealed.windows(6).any(|w| w == b"\"core\""));
        // A second restore of the same key is refused, the first one stands.
        let e = restore_share(&s3, "signer-3", &header, share).unwrap_err();
        assert!(e.to_string().contains("already holds key w-1"), "{e}");
    }
}

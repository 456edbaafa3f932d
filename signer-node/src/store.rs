//! The signer's data directory: every secret sealed, every write atomic.
//!
//! ```text
//! aux/<group>.sealed            aux info of a signer group (Paillier secret key)
//! primes/next.sealed            safe primes waiting for the next aux-info run
//! keys/<key>.sealed             completed key share (generation 0)
//! keys/<key>.g<n>.sealed        the share after the n-th refresh or repair
//! keys/<key>.json               public metadata (threshold, participants, public key)
//! keys/<key>.retired            the key is retired: its share and pool are destroyed
//! presigs/<key>/<id>.sealed     unused presignature
//! consumed/<id>                 presignature consumed (written before the partial leaves)
//! sessions.log                  execution ids already used, one hex id per line
//! ```
//! Files are written temp + fsync + rename + directory fsync, so a crash
//! leaves either the old or the new content, never a torn file.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use custos_hsm::{SealContext, Sealer};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::NodeError;
use crate::stages::{self, Stage};

/// Public facts about a key this node holds a share of.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyMeta {
    /// Key id.
    pub key_id: String,
    /// Signer group the key was generated in.
    pub group_id: String,
    /// Threshold t.
    pub threshold: u16,
    /// Node ids in keygen index order.
    pub participants: Vec<String>,
    /// The key's public key, hex: SEC1 compressed (ECDSA), BIP340 x-only
    /// (FROST secp256k1-tr), RFC 8032 (FROST Ed25519).
    pub public_key: String,
    /// The chain code the signers generated with the key (hex), for HD
    /// derivation; absent for keys generated before HD support, which
    /// derive with the legacy chain code (`custos_mpc::hd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_code: Option<String>,
    /// Signature scheme (`custos_mpc::SchemeId` name); keys from before
    /// schemes were recorded are cggmp21 ECDSA.
    #[serde(default = "ecdsa_scheme")]
    pub scheme: String,
    /// Share generation: 0 from keygen, then the generation of the last
    /// refresh or repair that replaced this node's share (FROST). It names
    /// the share's file and is bound into the share's sealing context, so a
    /// share of another generation cannot be swapped in.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// The key's public package (hex: what its keygen, refresh or repair
    /// returned), recorded since HD derivation of FROST keys: a taproot
    /// key's children are derived from it (`custos_mpc::frost::hd`). An
    /// ECDSA key's package is its public key, which older records hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_package: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// File name and sealing context of a key's share of `generation`.
fn share_location(key_id: &str, generation: u64) -> (String, String) {
    if generation == 0 {
        (format!("keys/{key_id}.sealed"), "share".to_owned())
    } else {
        (
            format!("keys/{key_id}.g{generation}.sealed"),
            format!("share:g{generation}"),
        )
    }
}

fn ecdsa_scheme() -> String {
    custos_mpc::SchemeId::EcdsaSecp256k1.name().to_owned()
}

impl KeyMeta {
    fn bad(&self, what: &str) -> NodeError {
        NodeError::Internal(format!("key {}: stored {what}", self.key_id))
    }

    /// The chain code the key's keygen made, if any.
    pub fn chain_code(&self) -> Result<Option<[u8; 32]>, NodeError> {
        self.chain_code
            .as_ref()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| self.bad("chain code is not 32 bytes of hex"))
            })
            .transpose()
    }

    /// The key's extended public key (its chain code, or the legacy one).
    pub fn extended_public_key(&self) -> Result<custos_mpc::ExtendedPublicKey, NodeError> {
        let pk = hex::decode(&self.public_key).map_err(|_| self.bad("public key is not hex"))?;
        custos_mpc::ExtendedPublicKey::of_key(&pk, self.chain_code()?)
            .map_err(|e| NodeError::Internal(format!("key {}: {e}", self.key_id)))
    }

    /// The key's public package ([`Self::public_package`]; for an ECDSA
    /// key recorded without one, its public key).
    pub fn package(&self) -> Result<Vec<u8>, NodeError> {
        match (&self.public_package, self.scheme()?) {
            (Some(h), _) => hex::decode(h).map_err(|_| self.bad("public package is not hex")),
            (None, custos_mpc::SchemeId::EcdsaSecp256k1) => {
                hex::decode(&self.public_key).map_err(|_| self.bad("public key is not hex"))
            }
            (None, scheme) => Err(NodeError::Refused(format!(
                "key {} ({scheme}) was recorded without its public package (before HD derivation of FROST keys): a share refresh records it",
                self.key_id
            ))),
        }
    }

    /// The key's signature scheme.
    pub fn scheme(&self) -> Result<custos_mpc::SchemeId, NodeError> {
        custos_mpc::SchemeId::from_name(&self.scheme)
            .map_err(|e| NodeError::Internal(format!("key {}: stored scheme: {e}", self.key_id)))
    }
}

/// A presignature's public facts, stored next to its sealed secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PresigMeta {
    /// Signer node ids, in session order.
    pub signers: Vec<String>,
}

/// A key's retirement as this signer recorded it (`keys/<key>.retired`,
/// written before the share is destroyed: a crash half-way leaves a
/// retired key whose destruction the next request finishes).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retirement {
    /// The `key_retired` entry of the audit log this signer witnessed.
    pub retirement_index: u64,
    /// This signer's clock when it retired the key, Unix seconds.
    pub at: i64,
}

/// What destroying a retired key's material removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destroyed {
    /// Share files overwritten and deleted (0 when a previous call did it).
    pub shares: usize,
    /// Presignatures or nonce commitments overwritten and deleted.
    pub presignatures: usize,
}

/// Checks an id used as a file name: no path tricks, bounded length.
pub fn validate_id(what: &str, id: &str) -> Result<(), NodeError> {
    if custos_service::daemon::is_valid_id(id) {
        Ok(())
    } else {
        Err(NodeError::InvalidRequest(format!(
            "{what} {id:?} must be 1-64 characters of letters, digits, '-', '_', '.' and not start with '.'"
        )))
    }
}

/// The public half of the key store: key metadata, no shares.
#[derive(Clone, Debug)]
pub struct KeyDirectory {
    root: PathBuf,
}

impl KeyDirectory {
    /// A key's metadata.
    pub fn key_meta(&self, key_id: &str) -> Result<KeyMeta, NodeError> {
        validate_id("key id", key_id)?;
        let path = self.root.join(format!("keys/{key_id}.json"));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NodeError::NotFound(format!("key {key_id}")));
            }
            Err(e) => return Err(NodeError::storage(&path, e)),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| NodeError::Internal(format!("{}: {e}", path.display())))
    }

    /// A key's public key (SEC1 bytes), `None` if unknown or unreadable.
    pub fn public_key(&self, key_id: &str) -> Option<Vec<u8>> {
        self.key_meta(key_id)
            .ok()
            .and_then(|m| hex::decode(m.public_key).ok())
    }
}

/// The data directory.
pub struct Store {
    root: PathBuf,
    node_id: String,
    sealer: Arc<dyn Sealer>,
    used_eids: Mutex<HashSet<String>>,
}

impl Store {
    /// Opens (creating) the data directory and loads the used-session log.
    pub fn open(root: &Path, node_id: &str, sealer: Box<dyn Sealer>) -> Result<Store, NodeError> {
        for dir in ["aux", "primes", "keys", "presigs", "consumed"] {
            fs::create_dir_all(root.join(dir))
                .map_err(|e| NodeError::storage(&root.join(dir), e))?;
        }
        let log = root.join("sessions.log");
        let used = match fs::read_to_string(&log) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(NodeError::storage(&log, e)),
        };
        Ok(Store {
            root: root.to_owned(),
            node_id: node_id.to_owned(),
            sealer: Arc::from(sealer),
            used_eids: Mutex::new(used),
        })
    }

    /// The sealer (also seals the witness key).
    pub fn sealer(&self) -> &dyn Sealer {
        self.sealer.as_ref()
    }

    /// The sealer, shared (the software rollback counter seals with it).
    pub fn shared_sealer(&self) -> Arc<dyn Sealer> {
        Arc::clone(&self.sealer)
    }

    /// The sealing backend's name, for status output.
    pub fn sealer_backend(&self) -> &'static str {
        self.sealer.backend()
    }

    /// Records an execution id as used, durably, before the session starts;
    /// refuses one that was used before (a replayed session request).
    pub fn claim_execution_id(&self, eid_hex: &str) -> Result<(), NodeError> {
        let mut used = self.used_eids.lock().unwrap_or_else(|p| p.into_inner());
        if used.contains(eid_hex) {
            return Err(NodeError::Replay(format!(
                "execution id {} was already used",
                &eid_hex[..16.min(eid_hex.len())]
            )));
        }
        let path = self.root.join("sessions.log");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| NodeError::storage(&path, e))?;
        f.write_all(format!("{eid_hex}\n").as_bytes())
            .map_err(|e| NodeError::storage(&path, e))?;
        f.sync_all().map_err(|e| NodeError::storage(&path, e))?;
        used.insert(eid_hex.to_owned());
        Ok(())
    }

    fn seal_to(
        &self,
        path: &Path,
        key_id: &str,
        share_id: &str,
        plaintext: &[u8],
    ) -> Result<(), NodeError> {
        let ctx = SealContext {
            node_id: &self.node_id,
            key_id,
            share_id,
        };
        let blob = self.sealer.seal(&ctx, plaintext)?;
        write_atomic(path, &blob)
    }

    fn unseal_from(
        &self,
        path: &Path,
        key_id: &str,
        share_id: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, NodeError> {
        let blob = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(NodeError::storage(path, e)),
        };
        let ctx = SealContext {
            node_id: &self.node_id,
            key_id,
            share_id,
        };
        Ok(Some(self.sealer.unseal(&ctx, &blob)?))
    }

    /// Stores the primes for the next aux-info run.
    pub fn put_primes(&self, plaintext: &[u8]) -> Result<(), NodeError> {
        self.seal_to(
            &self.root.join("primes/next.sealed"),
            "primes",
            "next",
            plaintext,
        )
    }

    /// Loads the stored primes, if any.
    pub fn get_primes(&self) -> Result<Option<Zeroizing<Vec<u8>>>, NodeError> {
        self.unseal_from(&self.root.join("primes/next.sealed"), "primes", "next")
    }

    /// Removes the primes once an aux-info run used them (they are now part of the aux info).
    pub fn drop_primes(&self) -> Result<(), NodeError> {
        remove_durably(&self.root.join("primes/next.sealed"))
    }

    /// Stores a group's aux info.
    pub fn put_aux(&self, group_id: &str, plaintext: &[u8]) -> Result<(), NodeError> {
        validate_id("group id", group_id)?;
        self.seal_to(
            &self.root.join(format!("aux/{group_id}.sealed")),
            group_id,
            "aux",
            plaintext,
        )
    }

    /// Loads a group's aux info.
    pub fn get_aux(&self, group_id: &str) -> Result<Option<Zeroizing<Vec<u8>>>, NodeError> {
        validate_id("group id", group_id)?;
        self.unseal_from(
            &self.root.join(format!("aux/{group_id}.sealed")),
            group_id,
            "aux",
        )
    }

    /// Group ids with aux info.
    pub fn aux_groups(&self) -> Result<Vec<String>, NodeError> {
        self.list("aux", ".sealed")
    }

    /// Stores a key share and its metadata (share first: metadata marks it usable).
    pub fn put_key(&self, meta: &KeyMeta, share: &[u8]) -> Result<(), NodeError> {
        validate_id("key id", &meta.key_id)?;
        let k = &meta.key_id;
        if self.root.join(format!("keys/{k}.json")).exists() {
            return Err(NodeError::InvalidRequest(format!("key {k} already exists")));
        }
        self.seal_to(
            &self.root.join(format!("keys/{k}.sealed")),
            k,
            "share",
            share,
        )?;
        let json =
            serde_json::to_vec_pretty(meta).map_err(|e| NodeError::Internal(e.to_string()))?;
        write_atomic(&self.root.join(format!("keys/{k}.json")), &json)
    }

    /// A key's metadata.
    pub fn key_meta(&self, key_id: &str) -> Result<KeyMeta, NodeError> {
        self.key_directory().key_meta(key_id)
    }

    /// A reader of key metadata that others may hold (the co-signer looks
    /// up wallet keys through it).
    pub fn key_directory(&self) -> KeyDirectory {
        KeyDirectory {
            root: self.root.clone(),
        }
    }

    /// The retirement of `key_id`, if this signer retired it.
    pub fn retirement(&self, key_id: &str) -> Result<Option<Retirement>, NodeError> {
        validate_id("key id", key_id)?;
        let path = self.root.join(format!("keys/{key_id}.retired"));
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| NodeError::Internal(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NodeError::storage(&path, e)),
        }
    }

    /// Refuses (typed, naming the key) when `key_id` is retired here.
    pub fn check_not_retired(&self, key_id: &str) -> Result<(), NodeError> {
        match self.retirement(key_id)? {
            Some(r) => Err(NodeError::KeyRetired {
                key_id: key_id.to_owned(),
                retirement_index: r.retirement_index,
            }),
            None => Ok(()),
        }
    }

    /// Retires `key_id` for good: records the retirement durably first
    /// (from then on nothing of the key is unsealed or stored again), then
    /// overwrites with zeros and deletes every share file of the key (any
    /// generation) and every pooled presignature or nonce commitment. The
    /// public metadata stays, so the key stays known as retired. Repeating
    /// it finishes an interrupted destruction and keeps the first record.
    pub fn retire_key(
        &self,
        key_id: &str,
        retirement: &Retirement,
    ) -> Result<Destroyed, NodeError> {
        validate_id("key id", key_id)?;
        let meta = self.key_meta(key_id)?;
        if self.retirement(key_id)?.is_none() {
            let json = serde_json::to_vec_pretty(retirement)
                .map_err(|e| NodeError::Internal(e.to_string()))?;
            write_atomic(&self.root.join(format!("keys/{key_id}.retired")), &json)?;
        }
        let mut destroyed = Destroyed::default();
        // Every generation up to the one in force (an older one left by a
        // crash mid-replacement included).
        for generation in 0..=meta.generation {
            let path = self.root.join(share_location(key_id, generation).0);
            if shred(&path)? {
                destroyed.shares += 1;
            }
        }
        let pool = self.root.join(format!("presigs/{key_id}"));
        match fs::read_dir(&pool) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| NodeError::storage(&pool, e))?;
                    if shred(&entry.path())? {
                        destroyed.presignatures += 1;
                    }
                }
                fs::remove_dir(&pool).map_err(|e| NodeError::storage(&pool, e))?;
                sync_dir(&self.root.join("presigs"))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(NodeError::storage(&pool, e)),
        }
        Ok(destroyed)
    }

    /// A key's sealed share (of the generation its metadata names), unsealed.
    /// A retired key's share is refused even where a file was restored.
    pub fn key_share(&self, key_id: &str) -> Result<Zeroizing<Vec<u8>>, NodeError> {
        validate_id("key id", key_id)?;
        self.check_not_retired(key_id)?;
        let generation = match self.key_meta(key_id) {
            Ok(m) => m.generation,
            Err(NodeError::NotFound(_)) => 0,
            Err(e) => return Err(e),
        };
        let (file, context) = share_location(key_id, generation);
        self.unseal_from(&self.root.join(file), key_id, &context)?
            .ok_or_else(|| NodeError::NotFound(format!("share of key {key_id}")))
    }

    /// Replaces a key's share with one of a newer generation (a refresh, or
    /// a repair after a lost share), crash-consistently: the new share is
    /// sealed and durable first, then the key's pool items (made under the
    /// old share) are dropped, then the metadata naming the new generation
    /// is written (the commit point: a crash before it leaves the old share
    /// in force, after it the new one), and only then is the old share
    /// removed. `meta.generation` must be newer than the stored one.
    pub fn replace_share(&self, meta: &KeyMeta, share: &[u8]) -> Result<(), NodeError> {
        let k = &meta.key_id;
        validate_id("key id", k)?;
        self.check_not_retired(k)?;
        let old = match self.key_meta(k) {
            Ok(m) => Some(m.generation),
            Err(NodeError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        if old.is_some_and(|g| g >= meta.generation) {
            return Err(NodeError::Replay(format!(
                "key {k}: share generation {} is not newer than the stored {}",
                meta.generation,
                old.unwrap_or_default()
            )));
        }
        let (file, context) = share_location(k, meta.generation);
        self.seal_to(&self.root.join(file), k, &context, share)?;
        self.discard_presigs(k)?;
        let json =
            serde_json::to_vec_pretty(meta).map_err(|e| NodeError::Internal(e.to_string()))?;
        write_atomic(&self.root.join(format!("keys/{k}.json")), &json)?;
        if let Some(g) = old {
            remove_durably(&self.root.join(share_location(k, g).0))?;
        }
        // A pool item stored while the metadata still named the old share.
        self.discard_presigs(k).map(|_| ())
    }

    /// Stores a repaired share in place of one that is lost (missing or
    /// unreadable) at `meta.generation`: sealed first, then the metadata.
    /// Only for a share that cannot be read: nothing readable is replaced.
    pub fn restore_share(&self, meta: &KeyMeta, share: &[u8]) -> Result<(), NodeError> {
        let k = &meta.key_id;
        validate_id("key id", k)?;
        self.check_not_retired(k)?;
        if self.key_share(k).is_ok() {
            return Err(NodeError::Replay(format!(
                "key {k}: a readable share is never overwritten by a repair"
            )));
        }
        let (file, context) = share_location(k, meta.generation);
        self.seal_to(&self.root.join(file), k, &context, share)?;
        self.discard_presigs(k)?;
        let json =
            serde_json::to_vec_pretty(meta).map_err(|e| NodeError::Internal(e.to_string()))?;
        write_atomic(&self.root.join(format!("keys/{k}.json")), &json)
    }

    /// Drops every unused pool item of a key (durably): items made under a
    /// share that was replaced must not outlive it.
    pub fn discard_presigs(&self, key_id: &str) -> Result<usize, NodeError> {
        validate_id("key id", key_id)?;
        let dir = self.root.join(format!("presigs/{key_id}"));
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(NodeError::storage(&dir, e)),
        };
        let mut n = 0;
        for entry in entries {
            let entry = entry.map_err(|e| NodeError::storage(&dir, e))?;
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| NodeError::storage(&path, e))?;
            n += 1;
        }
        sync_dir(&dir)?;
        Ok(n)
    }

    /// Number of keys held.
    pub fn key_count(&self) -> Result<usize, NodeError> {
        Ok(self.list("keys", ".json")?.len())
    }

    /// Stores a fresh presignature.
    pub fn put_presig(
        &self,
        key_id: &str,
        presig_id: &str,
        meta: &PresigMeta,
        secret: &[u8],
    ) -> Result<(), NodeError> {
        validate_id("key id", key_id)?;
        validate_id("presignature id", presig_id)?;
        self.check_not_retired(key_id)?;
        if self.is_consumed(presig_id) {
            return Err(NodeError::Replay(format!(
                "presignature {presig_id} was already consumed"
            )));
        }
        let dir = self.root.join(format!("presigs/{key_id}"));
        fs::create_dir_all(&dir).map_err(|e| NodeError::storage(&dir, e))?;
        let json = serde_json::to_vec(meta).map_err(|e| NodeError::Internal(e.to_string()))?;
        // Metadata is bound into the sealed blob's share id so it cannot be swapped.
        let mut payload = Zeroizing::new(Vec::with_capacity(json.len() + secret.len() + 4));
        payload.extend_from_slice(&(json.len() as u32).to_be_bytes());
        payload.extend_from_slice(&json);
        payload.extend_from_slice(secret);
        self.seal_to(
            &dir.join(format!("{presig_id}.sealed")),
            key_id,
            &format!("presig:{presig_id}"),
            &payload,
        )
    }

    /// Whether a presignature was consumed (ever).
    pub fn is_consumed(&self, presig_id: &str) -> bool {
        self.root.join(format!("consumed/{presig_id}")).exists()
    }

    /// Takes a presignature for use: loads it, then durably marks it consumed
    /// before returning it, so it can never be used again — even if the
    /// process dies right after, or the signing fails.
    pub fn consume_presig(
        &self,
        key_id: &str,
        presig_id: &str,
        usage: &str,
    ) -> Result<(PresigMeta, Zeroizing<Vec<u8>>), NodeError> {
        validate_id("key id", key_id)?;
        validate_id("presignature id", presig_id)?;
        self.check_not_retired(key_id)?;
        if self.is_consumed(presig_id) {
            return Err(NodeError::Replay(format!(
                "presignature {presig_id} was already consumed"
            )));
        }
        let path = self
            .root
            .join(format!("presigs/{key_id}/{presig_id}.sealed"));
        let unsealing = Instant::now();
        let payload = self
            .unseal_from(&path, key_id, &format!("presig:{presig_id}"))?
            .ok_or_else(|| {
                NodeError::NotFound(format!("presignature {presig_id} of key {key_id}"))
            })?;
        stages::since(Stage::Unseal, unsealing);
        let marking = Instant::now();
        let marker = self.root.join(format!("consumed/{presig_id}"));
        // create_new: two concurrent consumers cannot both win.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    NodeError::Replay(format!("presignature {presig_id} was already consumed"))
                } else {
                    NodeError::storage(&marker, e)
                }
            })?;
        f.write_all(usage.as_bytes())
            .map_err(|e| NodeError::storage(&marker, e))?;
        f.sync_all().map_err(|e| NodeError::storage(&marker, e))?;
        sync_dir(&self.root.join("consumed"))?;
        stages::since(Stage::ConsumeMarker, marking);
        // The marker is authoritative; the blob's removal need not be durable.
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(error = %e, "consumed presignature blob not removed");
        }
        let (meta, secret) = split_presig(&payload)?;
        Ok((meta, secret))
    }

    /// Number of unused presignatures of a key.
    pub fn presig_count(&self, key_id: &str) -> usize {
        fs::read_dir(self.root.join(format!("presigs/{key_id}")))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Unused presignatures across keys.
    pub fn presig_total(&self) -> usize {
        let Ok(dirs) = fs::read_dir(self.root.join("presigs")) else {
            return 0;
        };
        dirs.filter_map(Result::ok)
            .map(|d| fs::read_dir(d.path()).map(|x| x.count()).unwrap_or(0))
            .sum()
    }

    fn list(&self, dir: &str, suffix: &str) -> Result<Vec<String>, NodeError> {
        let path = self.root.join(dir);
        let entries = fs::read_dir(&path).map_err(|e| NodeError::storage(&path, e))?;
        let mut out: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(suffix))
                    .map(str::to_owned)
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

fn split_presig(payload: &[u8]) -> Result<(PresigMeta, Zeroizing<Vec<u8>>), NodeError> {
    let bad = || NodeError::Internal("stored presignature is malformed".into());
    let len_bytes: [u8; 4] = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let json = payload.get(4..4 + len).ok_or_else(bad)?;
    let meta = serde_json::from_slice(json).map_err(|_| bad())?;
    let secret = Zeroizing::new(payload.get(4 + len..).ok_or_else(bad)?.to_vec());
    Ok((meta, secret))
}

/// Writes `bytes` to `path` with mode 0600 through the workspace's one
/// crash-consistent write (temp + fsync + rename + directory fsync): a crash
/// leaves the old or the new file, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    custos_fsutil::write_atomic(path, bytes, custos_fsutil::PRIVATE_MODE)
        .map_err(|e| NodeError::storage(path, e))
}

fn remove_durably(path: &Path) -> Result<(), NodeError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NodeError::storage(path, e)),
    }
}

/// Overwrites a secret's file with zeros (fsync'd), then deletes it
/// durably: the sealed bytes do not linger in the file's blocks. `false`
/// when there was no such file.
fn shred(path: &Path) -> Result<bool, NodeError> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(NodeError::storage(path, e)),
    };
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| NodeError::storage(path, e))?;
    let zeros = vec![0u8; usize::try_from(len).unwrap_or(0)];
    f.write_all(&zeros)
        .and_then(|_| f.sync_all())
        .map_err(|e| NodeError::storage(path, e))?;
    drop(f);
    remove_durably(path).map(|()| true)
}

fn sync_dir(dir: &Path) -> Result<(), NodeError> {
    custos_fsutil::sync_dir(dir).map_err(|e| NodeError::storage(dir, e))
}

/// A store in `dir` for node `node` under a software sealer with fast
/// (insecure) key derivation: unit tests only.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_store(dir: &Path, node: &str) -> Store {
    use custos_hsm::{KdfParams, Secret, SoftwareSealer};
    let sealer = SoftwareSealer::open_with_params(
        dir,
        &Secret::new(b"pass".to_vec()),
        true,
        KdfParams::insecure_fast_for_tests(),
    )
    .unwrap();
    Store::open(dir, node, Box::new(sealer)).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, node: &str) -> Store {
        test_store(dir, node)
    }

    fn meta() -> PresigMeta {
        PresigMeta {
            signers: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn a_presignature_is_consumed_once_even_across_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), "n1");
        s.put_presig("k1", "p1", &meta(), b"secret").unwrap();
        let (m, secret) = s.consume_presig("k1", "p1", "request=r1").unwrap();
        assert_eq!((m.signers.len(), secret.as_slice()), (2, &b"secret"[..]));
        assert!(matches!(
            s.consume_presig("k1", "p1", "r2"),
            Err(NodeError::Replay(_))
        ));

        // A crash after the marker but before the blob's removal: the blob is
        // still on disk, yet a restarted node refuses it (docs/SECURITY.md case 17).
        s.put_presig("k1", "p2", &meta(), b"secret2").unwrap();
        let blob = fs::read(dir.path().join("presigs/k1/p2.sealed")).unwrap();
        s.consume_presig("k1", "p2", "r3").unwrap();
        fs::write(dir.path().join("presigs/k1/p2.sealed"), blob).unwrap();
        drop(s);
        let restarted = store(dir.path(), "n1");
        assert!(matches!(
            restarted.consume_presig("k1", "p2", "r4"),
            Err(NodeError::Replay(_))
        ));
        // And a consumed id can never be stored again.
        assert!(matches!(
            restarted.put_presig("k1", "p2", &meta(), b"x"),
            Err(NodeError::Replay(_))
        ));
    }

    #[test]
    fn concurrent_consumers_of_one_presignature_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(store(dir.path(), "n1"));
        s.put_presig("k1", "p1", &meta(), b"secret").unwrap();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || s.consume_presig("k1", "p1", &format!("r{i}")).is_ok())
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|w| *w)
            .count();
        assert_eq!(wins, 1);
    }

    #[test]
    fn a_retired_key_loses_its_share_and_pool_and_never_signs_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), "n1");
        let key = KeyMeta {
            key_id: "old".into(),
            group_id: "g".into(),
            threshold: 2,
            participants: vec!["n1".into(), "n2".into()],
            public_key: "02".repeat(33),
            chain_code: None,
            scheme: ecdsa_scheme(),
            generation: 0,
            public_package: None,
        };
        s.put_key(&key, b"share-bytes").unwrap();
        // A key whose id extends the retired one's is not touched.
        let other = KeyMeta {
            key_id: "old.g1".into(),
            ..key.clone()
        };
        s.put_key(&other, b"other-share").unwrap();
        s.put_presig("old", "p1", &meta(), b"nonce-1").unwrap();
        s.put_presig("old", "p2", &meta(), b"nonce-2").unwrap();
        assert_eq!(s.check_not_retired("old").ok(), Some(()));
        let sealed = dir.path().join("keys/old.sealed");
        assert!(sealed.exists());

        let r = Retirement {
            retirement_index: 41,
            at: 1_700_000_000,
        };
        let out = s.retire_key("old", &r).unwrap();
        assert_eq!(
            out,
            Destroyed {
                shares: 1,
                presignatures: 2
            }
        );
        assert!(!sealed.exists(), "the share file is gone");
        assert!(!dir.path().join("presigs/old").exists(), "the pool is gone");
        let refused = |e: NodeError| matches!(e, NodeError::KeyRetired { ref key_id, retirement_index: 41 } if key_id == "old");
        assert!(refused(s.key_share("old").unwrap_err()));
        assert!(refused(s.consume_presig("old", "p1", "r").unwrap_err()));
        assert!(refused(
            s.put_presig("old", "p3", &meta(), b"x").unwrap_err()
        ));
        assert!(refused(s.restore_share(&key, b"restored").unwrap_err()));
        // A share file restored from an old backup is still refused.
        fs::write(&sealed, b"whatever").unwrap();
        assert!(refused(s.key_share("old").unwrap_err()));
        // Again: idempotent, the first record stays, the stray file goes.
        let again = s
            .retire_key(
                "old",
                &Retirement {
                    retirement_index: 99,
                    at: 1,
                },
            )
            .unwrap();
        assert_eq!(again.shares, 1);
        assert_eq!(s.retirement("old").unwrap(), Some(r));
        // The other key still signs; the retired one survives a restart.
        assert_eq!(s.key_share("old.g1").unwrap().as_slice(), b"other-share");
        drop(s);
        let s = store(dir.path(), "n1");
        assert!(refused(s.key_share("old").unwrap_err()));
    }

    #[test]
    fn execution_ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), "n1");
        s.claim_execution_id("aa").unwrap();
        assert!(matches!(
            s.claim_execution_id("aa"),
            Err(NodeError::Replay(_))
        ));
        drop(s);
        let s = store(dir.path(), "n1");
        assert!(matches!(
            s.claim_execution_id("aa"),
            Err(NodeError::Replay(_))
        ));
        s.claim_execution_id("bb").unwrap();
    }

    #[test]
    fn shares_are_sealed_and_bound_to_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), "n1");
        let m = KeyMeta {
            key_id: "k1".into(),
            group_id: "g".into(),
            threshold: 2,
            participants: vec!["n1".into(), "n2".into()],
            public_key: "00".into(),
            chain_code: None,
            scheme: "ecdsa-secp256k1".into(),
            generation: 0,
            public_package: None,
        };
        s.put_key(&m, b"{\"plaintext share\":1}").unwrap();
        let raw = fs::read(dir.path().join("keys/k1.sealed")).unwrap();
        assert!(
            !raw.windows(15).any(|w| w == b"plaintext share"),
            "share is sealed at rest"
        );
        assert_eq!(
            s.key_share("k1").unwrap().as_slice(),
            b"{\"plaintext share\":1}"
        );
        assert!(matches!(
            s.put_key(&m, b"again"),
            Err(NodeError::InvalidRequest(_))
        ));
        // The same blob read as another node fails to unseal.
        drop(s);
        let other = store(dir.path(), "n2");
        assert!(matches!(other.key_share("k1"), Err(NodeError::Sealer(_))));
        // A torn temp file from a crashed write is ignored.
        fs::write(dir.path().join("keys/k2.tmp"), b"torn").unwrap();
        assert_eq!(other.key_count().unwrap(), 1);
        assert!(validate_id("key id", "../etc").is_err());
    }

    #[test]
    fn a_replaced_share_is_durable_before_the_old_one_goes_and_pool_items_go_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), "n1");
        let mut m = KeyMeta {
            key_id: "k1".into(),
            group_id: "g".into(),
            threshold: 2,
            participants: vec!["n1".into(), "n2".into()],
            public_key: "00".into(),
            chain_code: None,
            scheme: "ed25519".into(),
            generation: 0,
            public_package: None,
        };
        s.put_key(&m, b"old share").unwrap();
        s.put_presig("k1", "p1", &meta(), b"nonces under the old share")
            .unwrap();
        assert_eq!(s.presig_count("k1"), 1);
        // A crash after the new share is sealed but before the metadata
        // names it: the old share stays in force.
        let (file, ctx) = share_location("k1", 1);
        s.seal_to(&dir.path().join(&file), "k1", &ctx, b"new share")
            .unwrap();
        drop(s);
        let s = store(dir.path(), "n1");
        assert_eq!(s.key_share("k1").unwrap().as_slice(), b"old share");
        // The replacement itself.
        m.generation = 1;
        s.replace_share(&m, b"new share").unwrap();
        assert_eq!(s.key_share("k1").unwrap().as_slice(), b"new share");
        assert_eq!(s.key_meta("k1").unwrap().generation, 1);
        assert!(
            !dir.path().join("keys/k1.sealed").exists(),
            "old share removed"
        );
        assert_eq!(
            s.presig_count("k1"),
            0,
            "pool items of the old share dropped"
        );
        assert!(matches!(
            s.consume_presig("k1", "p1", "after refresh"),
            Err(NodeError::NotFound(_))
        ));
        // Not newer: refused, nothing changes.
        assert!(matches!(
            s.replace_share(&m, b"other"),
            Err(NodeError::Replay(_))
        ));
        assert_eq!(s.key_share("k1").unwrap().as_slice(), b"new share");
        // A generation-1 blob under the generation-2 name does not unseal:
        // the generation is bound into the sealing context.
        fs::copy(
            dir.path().join("keys/k1.g1.sealed"),
            dir.path().join("keys/k1.g2.sealed"),
        )
        .unwrap();
        m.generation = 2;
        let json = serde_json::to_vec(&m).unwrap();
        write_atomic(&dir.path().join("keys/k1.json"), &json).unwrap();
        assert!(matches!(s.key_share("k1"), Err(NodeError::Sealer(_))));
        // Metadata of generation 0 keeps its old form (no `generation` field).
        m.generation = 0;
        assert!(!serde_json::to_string(&m).unwrap().contains("generation"));
    }
}

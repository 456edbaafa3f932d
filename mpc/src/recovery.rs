//! Share backups and disaster recovery.
//!
//! # Design
//!
//! A signer backs up a key share by sealing it to the admins' offline
//! recovery key, whose private half never touches the cluster: HPKE (RFC
//! 9180) in base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
//! ChaCha20-Poly1305. HPKE rather than age: the same X25519 recipients,
//! a standard with test vectors, and a small dependency (the `age` crate
//! brings localisation and embedding crates with it).
//!
//! A [`ShareBackup`] is JSON: the public header (format, key id, scheme,
//! node, keygen index, threshold, participants, public key, recipient,
//! creation time) in clear, bound as the AEAD's associated data, so a
//! backup whose header was edited (another node, index or key) does not
//! open; then the encapsulated key and the ciphertext of the signer's share
//! (the cggmp21 key share with its aux info, as the signer stores it sealed).
//!
//! # Format (`custos-share-backup-v1`)
//!
//! ```text
//! recipient   = "custos-recipient1:" hex(X25519 public key)
//! identity    = "custos-recovery-identity1:" hex(X25519 private key)
//! HPKE        = base mode, KEM 0x0020, KDF 0x0001, AEAD 0x0003,
//!               info "custos share backup v1"
//! aad         = field(format) field(key_id) field(group_id) field(scheme)
//!               field(node_id) field(u16 party_index) field(u16 threshold)
//!               field(u32 count) field(participant)* field(public_key hex)
//!               field(recipient) field(u64 created_at_ms)
//! field(b)    = u32 big-endian length || b; integers big-endian
//! backup JSON = the header fields, "enc" and "ciphertext" (hex)
//! ```
//!
//! `tests/vectors/backup.py` seals a backup from this description alone
//! (RFC 9180 written out over X25519, HMAC and ChaCha20-Poly1305), and the
//! tests open it.
//!
//! [`reconstruct_ecdsa`] is the worst case: with `t` backups of one key on
//! an air-gapped machine, it interpolates the secret key at zero (Lagrange
//! over the shares' VSS indices), checks it against the key's public key
//! and returns it in zeroizing memory. It refuses fewer than `t` backups,
//! duplicates, and backups of different keys.

use std::fmt;

use cggmp21::generic_ec::{Point, Scalar, SecretScalar};
use cggmp21::key_share::AnyKeyShare;
use cggmp21::supported_curves::Secp256k1;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::MpcError;
use crate::protocol::{self, KeyShare};

/// The `format` of a [`ShareBackup`].
pub const BACKUP_FORMAT: &str = "custos-share-backup-v1";
/// Prefix of a recipient (the recovery key's public half) in text.
pub const RECIPIENT_PREFIX: &str = "custos-recipient1:";
/// Prefix of the recovery key's private half in its file.
pub const IDENTITY_PREFIX: &str = "custos-recovery-identity1:";
/// HPKE `info`: separates these backups from any other use of the key.
const HPKE_INFO: &[u8] = b"custos share backup v1";

type Kem = X25519HkdfSha256;

fn bad(what: &str) -> MpcError {
    MpcError::InvalidInput(what.to_owned())
}

fn hex32(text: &str, what: &str) -> Result<[u8; 32], MpcError> {
    let bytes = hex::decode(text.trim())
        .map_err(|_| bad(&format!("{what}: not hex (expected 64 hex digits)")))?;
    bytes
        .try_into()
        .map_err(|_| bad(&format!("{what}: expected 32 bytes (64 hex digits)")))
}

/// The public half of a recovery key: who backups are sealed to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Recipient([u8; 32]);

impl Recipient {
    /// Parses `custos-recipient1:<64 hex digits>`.
    pub fn parse(text: &str) -> Result<Self, MpcError> {
        let hex = text.trim().strip_prefix(RECIPIENT_PREFIX).ok_or_else(|| {
            bad(&format!(
                "recipient {:?} must start with {RECIPIENT_PREFIX}",
                text.trim().chars().take(40).collect::<String>()
            ))
        })?;
        let bytes = hex32(hex, "recipient")?;
        <Kem as hpke::Kem>::PublicKey::from_bytes(&bytes)
            .map_err(|_| bad("recipient: not an X25519 public key"))?;
        Ok(Recipient(bytes))
    }

    /// SHA-256 of the X25519 public key: what the audit log records.
    pub fn fingerprint_bytes(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }

    /// [`Self::fingerprint_bytes`], hex: what logs and reports name.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.fingerprint_bytes())
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{RECIPIENT_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({self})")
    }
}

/// The private half of a recovery key (kept offline by the admins).
pub struct RecoveryIdentity {
    secret: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for RecoveryIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryIdentity(<redacted>)")
    }
}

impl RecoveryIdentity {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, secret.as_mut());
        // Through the KEM's own key derivation, so any 32 bytes give a valid key.
        let (sk, _) = Kem::derive_keypair(secret.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&sk.to_bytes());
        RecoveryIdentity { secret: out }
    }

    /// Parses the identity file's text (`custos-recovery-identity1:<hex>`;
    /// lines starting with `#` are comments).
    pub fn parse(text: &str) -> Result<Self, MpcError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| bad("recovery identity: the file holds no key"))?;
        let hex = line.strip_prefix(IDENTITY_PREFIX).ok_or_else(|| {
            bad(&format!(
                "recovery identity must start with {IDENTITY_PREFIX} (is this a recipient or a backup?)"
            ))
        })?;
        let secret = Zeroizing::new(hex32(hex, "recovery identity")?);
        <Kem as hpke::Kem>::PrivateKey::from_bytes(secret.as_ref())
            .map_err(|_| bad("recovery identity: not an X25519 private key"))?;
        Ok(RecoveryIdentity { secret })
    }

    /// The identity file's text (secret).
    pub fn to_text(&self) -> Zeroizing<String> {
        let secret = Zeroizing::new(hex::encode(self.secret.as_ref()));
        Zeroizing::new(format!(
            "# Custos recovery key: keep offline. Recipient: {}\n{IDENTITY_PREFIX}{}\n",
            self.recipient(),
            secret.as_str()
        ))
    }

    fn private_key(&self) -> Result<<Kem as hpke::Kem>::PrivateKey, MpcError> {
        <Kem as hpke::Kem>::PrivateKey::from_bytes(self.secret.as_ref())
            .map_err(|_| bad("recovery identity: not an X25519 private key"))
    }

    /// Its public half.
    pub fn recipient(&self) -> Recipient {
        let mut out = [0u8; 32];
        if let Ok(sk) = self.private_key() {
            out.copy_from_slice(&Kem::sk_to_pk(&sk).to_bytes());
        }
        Recipient(out)
    }
}

/// The public facts of a backup, in clear and bound into its encryption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// [`BACKUP_FORMAT`].
    pub format: String,
    /// Key id.
    pub key_id: String,
    /// The signer group the key was generated in (a restored signer files
    /// the share's aux info under it).
    pub group_id: String,
    /// Signature scheme name ([`crate::SchemeId::name`]).
    pub scheme: String,
    /// The signer node that held the share.
    pub node_id: String,
    /// Its keygen index (position in `participants`).
    pub party_index: u16,
    /// Shares needed to sign (and to reconstruct).
    pub threshold: u16,
    /// Node ids in keygen index order.
    pub participants: Vec<String>,
    /// The key's compressed SEC1 public key, hex.
    pub public_key: String,
    /// Who can open it ([`Recipient`] text).
    pub recipient: String,
    /// The signer's clock at export, Unix ms.
    pub created_at_ms: u64,
}

impl BackupHeader {
    /// Canonical bytes (length-prefixed fields in declaration order): the
    /// AEAD's associated data.
    fn aad(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let mut put = |b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        };
        put(self.format.as_bytes());
        put(self.key_id.as_bytes());
        put(self.group_id.as_bytes());
        put(self.scheme.as_bytes());
        put(self.node_id.as_bytes());
        put(&self.party_index.to_be_bytes());
        put(&self.threshold.to_be_bytes());
        put(&(self.participants.len() as u32).to_be_bytes());
        for p in &self.participants {
            put(p.as_bytes());
        }
        put(self.public_key.as_bytes());
        put(self.recipient.as_bytes());
        put(&self.created_at_ms.to_be_bytes());
        out
    }
}

/// One signer's share of one key, sealed to a recovery key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareBackup {
    /// Public facts (authenticated).
    #[serde(flatten)]
    pub header: BackupHeader,
    /// HPKE encapsulated key, hex.
    pub enc: String,
    /// HPKE ciphertext of the share, hex.
    pub ciphertext: String,
}

impl ShareBackup {
    /// Seals `share` (the signer's stored share bytes) to `recipient`.
    pub fn seal(
        header: BackupHeader,
        recipient: &Recipient,
        share: &[u8],
    ) -> Result<Self, MpcError> {
        if header.format != BACKUP_FORMAT {
            return Err(bad(&format!("backup format must be {BACKUP_FORMAT}")));
        }
        if header.recipient != recipient.to_string() {
            return Err(bad("backup header names another recipient"));
        }
        let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&recipient.0)
            .map_err(|_| bad("recipient: not an X25519 public key"))?;
        let mut rng = rand_core_09::UnwrapErr(rand_core_09::OsRng);
        let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
            &OpModeS::Base,
            &pk,
            HPKE_INFO,
            share,
            &header.aad(),
            &mut rng,
        )
        .map_err(|e| MpcError::InvalidState(format!("sealing the backup: {e}")))?;
        Ok(ShareBackup {
            header,
            enc: hex::encode(enc.to_bytes()),
            ciphertext: hex::encode(ciphertext),
        })
    }

    /// Parses a backup file's JSON, naming what is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, MpcError> {
        let b: ShareBackup = serde_json::from_slice(bytes)
            .map_err(|e| bad(&format!("not a Custos share backup: {e}")))?;
        if b.header.format != BACKUP_FORMAT {
            return Err(bad(&format!(
                "backup format {:?}, expected {BACKUP_FORMAT}",
                b.header.format
            )));
        }
        Ok(b)
    }

    /// The backup's JSON (public: it is ciphertext).
    pub fn to_json(&self) -> Result<Vec<u8>, MpcError> {
        serde_json::to_vec_pretty(self).map_err(|e| MpcError::InvalidState(e.to_string()))
    }

    /// SHA-256 over the encapsulated key and the ciphertext: what the audit
    /// log records, so a backup file can be matched to its export entry.
    pub fn ciphertext_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.enc.as_bytes());
        h.update(b".");
        h.update(self.ciphertext.as_bytes());
        h.finalize().into()
    }

    /// Opens it with the recovery key: the share's bytes (secret).
    pub fn open(&self, identity: &RecoveryIdentity) -> Result<Zeroizing<Vec<u8>>, MpcError> {
        if self.header.recipient != identity.recipient().to_string() {
            return Err(bad(&format!(
                "backup of {} by {} is sealed to recipient {}, not to this recovery key",
                self.header.key_id, self.header.node_id, self.header.recipient
            )));
        }
        let enc = hex::decode(&self.enc).map_err(|_| bad("backup enc: not hex"))?;
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc)
            .map_err(|_| bad("backup enc: not an X25519 encapsulated key"))?;
        let ct = hex::decode(&self.ciphertext).map_err(|_| bad("backup ciphertext: not hex"))?;
        let sk = identity.private_key()?;
        let plain = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &sk,
            &enc,
            HPKE_INFO,
            &ct,
            &self.header.aad(),
        )
        .map_err(|_| {
            bad(&format!(
                "backup of {} by {} does not open: ciphertext or header altered",
                self.header.key_id, self.header.node_id
            ))
        })?;
        Ok(Zeroizing::new(plain))
    }

    /// Opens it and checks the share against the header: the ECDSA share
    /// (with its aux info), its keygen index and public key.
    pub fn open_ecdsa(&self, identity: &RecoveryIdentity) -> Result<KeyShare, MpcError> {
        if self.header.scheme != crate::SchemeId::EcdsaSecp256k1.name() {
            return Err(bad(&format!(
                "backup of {} is a {} share: only ecdsa-secp256k1 shares are backed up",
                self.header.key_id, self.header.scheme
            )));
        }
        let bytes = self.open(identity)?;
        let share: KeyShare = protocol::from_secret_bytes(&bytes)?;
        if share.core.i != self.header.party_index
            || hex::encode(protocol::public_key(&share)) != self.header.public_key
            || share.min_signers() != self.header.threshold
        {
            return Err(bad(&format!(
                "backup of {} by {}: the share does not match its header",
                self.header.key_id, self.header.node_id
            )));
        }
        Ok(share)
    }
}

/// A key reconstructed from backups (secret: zeroized on drop).
pub struct RecoveredKey {
    /// The secp256k1 secret key, big-endian.
    pub secret: Zeroizing<[u8; 32]>,
    /// Its compressed SEC1 public key.
    pub public_key: [u8; 33],
    /// Key id.
    pub key_id: String,
    /// Node ids whose backups were used.
    pub from_nodes: Vec<String>,
}

impl fmt::Debug for RecoveredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveredKey")
            .field("secret", &"<redacted>")
            .field("public_key", &hex::encode(self.public_key))
            .field("key_id", &self.key_id)
            .field("from_nodes", &self.from_nodes)
            .finish()
    }
}

/// Reconstructs an ECDSA key from `backups` of one key (at least its
/// threshold, distinct signers), checked against its public key.
pub fn reconstruct_ecdsa(
    identity: &RecoveryIdentity,
    backups: &[ShareBackup],
) -> Result<RecoveredKey, MpcError> {
    let first = backups
        .first()
        .ok_or_else(|| bad("no backups given: reconstruction needs the key's threshold of them"))?;
    let h = &first.header;
    for b in backups {
        if b.header.key_id != h.key_id || b.header.public_key != h.public_key {
            return Err(bad(&format!(
                "backups of different keys: {} ({}) and {} ({})",
                h.key_id, h.public_key, b.header.key_id, b.header.public_key
            )));
        }
    }
    let mut indices: Vec<u16> = backups.iter().map(|b| b.header.party_index).collect();
    indices.sort_unstable();
    indices.dedup();
    let t = usize::from(h.threshold);
    if indices.len() != backups.len() {
        return Err(bad(&format!(
            "two backups of key {} are of the same signer: each must come from another signer",
            h.key_id
        )));
    }
    if backups.len() < t {
        return Err(bad(&format!(
            "key {} needs {t} backups from distinct signers, got {}",
            h.key_id,
            backups.len()
        )));
    }
    let shares = backups
        .iter()
        .map(|b| b.open_ecdsa(identity))
        .collect::<Result<Vec<_>, _>>()?;
    let used = &shares[..t];
    let vss = used[0]
        .core
        .key_info
        .vss_setup
        .as_ref()
        .ok_or_else(|| bad("key share without a VSS setup: not a threshold key"))?;
    let xs = used
        .iter()
        .map(|s| {
            vss.I
                .get(usize::from(s.core.i))
                .map(|x| *x.as_ref())
                .ok_or_else(|| bad("key share index outside the VSS setup"))
        })
        .collect::<Result<Vec<Scalar<Secp256k1>>, _>>()?;
    let mut sk = Scalar::<Secp256k1>::zero();
    for (j, share) in used.iter().enumerate() {
        let mut num = Scalar::<Secp256k1>::one();
        let mut den = Scalar::<Secp256k1>::one();
        for (m, x_m) in xs.iter().enumerate() {
            if m != j {
                num *= *x_m;
                den *= *x_m - xs[j];
            }
        }
        let lambda = num
            * den
                .invert()
                .ok_or_else(|| bad("two shares with one VSS index"))?;
        sk += lambda * &share.core.x;
    }
    let sk = SecretScalar::new(&mut sk);
    let pk = Point::<Secp256k1>::generator() * &sk;
    let mut public_key = [0u8; 33];
    public_key.copy_from_slice(pk.to_bytes(true).as_bytes());
    if hex::encode(public_key) != h.public_key {
        return Err(bad(&format!(
            "the reconstructed key of {} does not match its public key: a backup is not of this key",
            h.key_id
        )));
    }
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(sk.as_ref().to_be_bytes().as_bytes());
    Ok(RecoveredKey {
        secret,
        public_key,
        key_id: h.key_id.clone(),
        from_nodes: backups
            .iter()
            .take(t)
            .map(|b| b.header.node_id.clone())
            .collect(),
    })
}

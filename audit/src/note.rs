//! C2SP signed notes (<https://c2sp.org/signed-note>), checkpoints
//! (<https://c2sp.org/tlog-checkpoint>) and Ed25519 cosignatures
//! (<https://c2sp.org/tlog-cosignature>).
//!
//! A checkpoint note looks like this (the em dash is U+2014):
//!
//! ```text
//! custos.example/log
//! 120
//! <base64 root hash>
//! timestamp 1764072000000
//!
//! — custos.example/log <base64(key id || Ed25519 signature)>
//! — witness-1 <base64(key id || u64 timestamp || Ed25519 signature)>
//! ```
//!
//! The fourth line is a checkpoint extension line carrying the log's clock
//! (Unix milliseconds) so auditors see when each tree head was published.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::hash::Hash;
use crate::{AuditError, LogSigner, SignatureAlgorithm};

/// Signature type of an Ed25519 note signature (the log's own key).
pub const SIG_TYPE_ED25519: u8 = 0x01;
/// Signature type of an Ed25519 `cosignature/v1` (witnesses).
pub const SIG_TYPE_COSIGNATURE_V1: u8 = 0x04;
const MAX_SIGNATURES: usize = 100;
const MAX_NOTE: usize = 1 << 20;
const EM_DASH: &str = "\u{2014} ";
const TIMESTAMP_EXT: &str = "timestamp ";

fn malformed(msg: impl Into<String>) -> AuditError {
    AuditError::MalformedNote(msg.into())
}

/// A public key that verifies note signatures, with its name and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    sig_type: u8,
    key: [u8; 32],
}

impl VerifierKey {
    /// A key of `sig_type` ([`SIG_TYPE_ED25519`] or [`SIG_TYPE_COSIGNATURE_V1`]).
    pub fn new(name: &str, sig_type: u8, public_key: &[u8]) -> Result<Self, AuditError> {
        check_key_name(name)?;
        if sig_type != SIG_TYPE_ED25519 && sig_type != SIG_TYPE_COSIGNATURE_V1 {
            return Err(AuditError::UnsupportedAlgorithm(format!(
                "note signature type {sig_type:#04x}"
            )));
        }
        let key: [u8; 32] = public_key.try_into().map_err(|_| {
            malformed(format!(
                "Ed25519 public key must be 32 bytes, got {}",
                public_key.len()
            ))
        })?;
        VerifyingKey::from_bytes(&key).map_err(|_| malformed("not an Ed25519 public key"))?;
        Ok(Self {
            name: name.to_owned(),
            sig_type,
            key,
        })
    }

    /// The verifier key of a [`LogSigner`] (which must be Ed25519).
    pub fn from_signer(
        name: &str,
        sig_type: u8,
        signer: &dyn LogSigner,
    ) -> Result<Self, AuditError> {
        if signer.algorithm() != SignatureAlgorithm::Ed25519 {
            return Err(AuditError::UnsupportedAlgorithm(format!(
                "{:?} log keys",
                signer.algorithm()
            )));
        }
        Self::new(name, sig_type, &signer.public_key())
    }

    /// Parses a vkey: `<name>+<hex key id>+<base64(type || public key)>`.
    pub fn parse(vkey: &str) -> Result<Self, AuditError> {
        let vkey = vkey.trim();
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("verifier key must be name+keyid+base64key"));
        };
        let raw = B64
            .decode(key)
            .map_err(|_| malformed("verifier key material is not base64"))?;
        let (&sig_type, public) = raw
            .split_first()
            .ok_or_else(|| malformed("empty verifier key"))?;
        let k = Self::new(name, sig_type, public)?;
        if id.len() != 8 || hex::encode(k.key_id()) != id.to_ascii_lowercase() {
            return Err(malformed(format!(
                "verifier key {name}: key id {id} does not match the key"
            )));
        }
        Ok(k)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The signature type byte.
    pub fn sig_type(&self) -> u8 {
        self.sig_type
    }

    /// `SHA-256(name || "\n" || type || public key)[:4]`.
    pub fn key_id(&self) -> [u8; 4] {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update(b"\n");
        h.update([self.sig_type]);
        h.update(self.key);
        let d = h.finalize();
        [d[0], d[1], d[2], d[3]]
    }

    fn verifying_key(&self) -> Result<VerifyingKey, AuditError> {
        VerifyingKey::from_bytes(&self.key).map_err(|_| malformed("not an Ed25519 public key"))
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![self.sig_type];
        raw.extend_from_slice(&self.key);
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id()),
            B64.encode(raw)
        )
    }
}

fn check_key_name(name: &str) -> Result<(), AuditError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(malformed(format!("invalid key name {name:?}")));
    }
    Ok(())
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key id.
    pub key_id: [u8; 4],
    /// Signature bytes after the key id.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// Parses `— <name> <base64(key id || signature)>` (without newline).
    pub fn parse_line(line: &str) -> Result<Self, AuditError> {
        let rest = line
            .strip_prefix(EM_DASH)
            .ok_or_else(|| malformed("signature line must start with an em dash"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| malformed("signature line without signature"))?;
        check_key_name(name)?;
        let raw = B64
            .decode(b64)
            .map_err(|_| malformed("signature is not base64"))?;
        if raw.len() < 5 {
            return Err(malformed("signature too short"));
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: [raw[0], raw[1], raw[2], raw[3]],
            signature: raw[4..].to_vec(),
        })
    }

    /// The line, without newline.
    pub fn line(&self) -> String {
        let mut raw = self.key_id.to_vec();
        raw.extend_from_slice(&self.signature);
        format!("{EM_DASH}{} {}", self.name, B64.encode(raw))
    }
}

/// A note: UTF-8 text and its signature lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNote {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Signature lines in order.
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Parses a signed note: text, a blank line, signature lines.
    pub fn parse(note: &str) -> Result<Self, AuditError> {
        if note.len() > MAX_NOTE {
            return Err(malformed("note too large"));
        }
        // The text cannot contain a blank line, so the last "\n\n" separates it.
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| malformed("note has no signature block"))?;
        let text = &note[..=split];
        let sigs = &note[split + 2..];
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(malformed("control character in note text"));
        }
        let sigs = sigs
            .strip_suffix('\n')
            .ok_or_else(|| malformed("note must end with a newline"))?;
        let signatures = sigs
            .split('\n')
            .map(NoteSignature::parse_line)
            .collect::<Result<Vec<_>, _>>()?;
        if signatures.len() > MAX_SIGNATURES {
            return Err(malformed("too many signatures"));
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The full note.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.line());
            out.push('\n');
        }
        out
    }

    /// Verifies the signature by `key` (type 0x01). A note must carry exactly
    /// one line matching the key's name and id, and it must verify.
    pub fn verify_by(&self, key: &VerifierKey) -> Result<(), AuditError> {
        let sig = self
            .matching(key)?
            .ok_or_else(|| AuditError::MissingSignature(key.name.clone()))?;
        if key.sig_type != SIG_TYPE_ED25519 {
            return Err(AuditError::UnsupportedAlgorithm(
                "expected an Ed25519 note key".into(),
            ));
        }
        let s = Signature::from_slice(&sig.signature)
            .map_err(|_| AuditError::BadSignature(key.name.clone()))?;
        key.verifying_key()?
            .verify_strict(self.text.as_bytes(), &s)
            .map_err(|_| AuditError::BadSignature(key.name.clone()))
    }

    /// Verifies the `cosignature/v1` by `key` (type 0x04); returns its timestamp.
    pub fn verify_cosignature_by(&self, key: &VerifierKey) -> Result<u64, AuditError> {
        let sig = self
            .matching(key)?
            .ok_or_else(|| AuditError::MissingSignature(key.name.clone()))?;
        if key.sig_type != SIG_TYPE_COSIGNATURE_V1 {
            return Err(AuditError::UnsupportedAlgorithm(
                "expected a cosignature/v1 key".into(),
            ));
        }
        let (ts, s) = sig
            .signature
            .split_at_checked(8)
            .ok_or_else(|| AuditError::BadSignature(key.name.clone()))?;
        let mut tsb = [0u8; 8];
        tsb.copy_from_slice(ts);
        let time = u64::from_be_bytes(tsb);
        if time > i64::MAX as u64 {
            return Err(AuditError::BadSignature(key.name.clone()));
        }
        let s = Signature::from_slice(s).map_err(|_| AuditError::BadSignature(key.name.clone()))?;
        key.verifying_key()?
            .verify_strict(cosigned_message(&self.text, time).as_bytes(), &s)
            .map_err(|_| AuditError::BadSignature(key.name.clone()))?;
        Ok(time)
    }

    fn matching(&self, key: &VerifierKey) -> Result<Option<&NoteSignature>, AuditError> {
        let id = key.key_id();
        let mut found = self
            .signatures
            .iter()
            .filter(|s| s.name == key.name && s.key_id == id);
        let first = found.next();
        if found.next().is_some() {
            return Err(malformed(format!("two signatures by {}", key.name)));
        }
        Ok(first)
    }
}

fn cosigned_message(text: &str, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{text}")
}

/// A checkpoint: the note text of a signed tree head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log identity.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// `MTH` of the first `size` entries.
    pub root: Hash,
    /// Log clock at signing, Unix milliseconds (extension line).
    pub timestamp_ms: Option<u64>,
}

impl Checkpoint {
    /// The note text.
    pub fn to_text(&self) -> String {
        let mut t = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        if let Some(ts) = self.timestamp_ms {
            t.push_str(&format!("{TIMESTAMP_EXT}{ts}\n"));
        }
        t
    }

    /// Parses checkpoint note text (unknown extension lines are ignored).
    pub fn parse_text(text: &str) -> Result<Self, AuditError> {
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed("checkpoint must end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| malformed("checkpoint has no origin"))?;
        let size_line = lines
            .next()
            .ok_or_else(|| malformed("checkpoint has no size"))?;
        let size_ok = !size_line.is_empty()
            && size_line.bytes().all(|b| b.is_ascii_digit())
            && (size_line == "0" || !size_line.starts_with('0'));
        let size: u64 = size_line
            .parse()
            .ok()
            .filter(|_| size_ok)
            .ok_or_else(|| malformed(format!("bad checkpoint size {size_line:?}")))?;
        let root_line = lines
            .next()
            .ok_or_else(|| malformed("checkpoint has no root hash"))?;
        let root: Hash = B64
            .decode(root_line)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| malformed("checkpoint root is not a base64 32-byte hash"))?;
        let mut timestamp_ms = None;
        for ext in lines {
            if ext.is_empty() {
                return Err(malformed("empty extension line"));
            }
            if let Some(ts) = ext.strip_prefix(TIMESTAMP_EXT) {
                timestamp_ms = Some(
                    ts.parse()
                        .map_err(|_| malformed("bad timestamp extension"))?,
                );
            }
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            timestamp_ms,
        })
    }

    /// Signs this checkpoint with the log key; returns the signed note.
    pub fn sign(&self, key_name: &str, signer: &dyn LogSigner) -> Result<SignedNote, AuditError> {
        let vk = VerifierKey::from_signer(key_name, SIG_TYPE_ED25519, signer)?;
        let text = self.to_text();
        let signature = signer.sign(text.as_bytes())?;
        let note = SignedNote {
            text,
            signatures: vec![NoteSignature {
                name: vk.name.clone(),
                key_id: vk.key_id(),
                signature,
            }],
        };
        // Never publish a signature the verifier would reject (a broken backend).
        note.verify_by(&vk)?;
        Ok(note)
    }
}

/// A signed checkpoint checked against the log key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The parsed checkpoint.
    pub checkpoint: Checkpoint,
    /// The whole note, with cosignatures.
    pub note: SignedNote,
}

impl VerifiedCheckpoint {
    /// Parses `note`, checks the log signature and the origin.
    pub fn verify(note: &str, log_key: &VerifierKey, origin: &str) -> Result<Self, AuditError> {
        let note = SignedNote::parse(note)?;
        note.verify_by(log_key)?;
        let checkpoint = Checkpoint::parse_text(&note.text)?;
        if checkpoint.origin != origin {
            return Err(AuditError::WrongOrigin {
                expected: origin.to_owned(),
                offered: checkpoint.origin,
            });
        }
        Ok(Self { checkpoint, note })
    }

    /// The witnesses among `keys` whose cosignatures verify (each counted once).
    pub fn valid_cosigners<'k>(&self, keys: &'k [VerifierKey]) -> Vec<&'k VerifierKey> {
        let mut seen: Vec<[u8; 32]> = Vec::new();
        keys.iter()
            .filter(|k| {
                let ok = !seen.contains(&k.key) && self.note.verify_cosignature_by(k).is_ok();
                if ok {
                    seen.push(k.key);
                }
                ok
            })
            .collect()
    }
}

/// Produces a `cosignature/v1` line for note `text` at `time` (Unix seconds).
pub(crate) fn cosign(
    text: &str,
    name: &str,
    signer: &dyn LogSigner,
    time: u64,
) -> Result<NoteSignature, AuditError> {
    if time > i64::MAX as u64 {
        return Err(AuditError::InvalidArgument(
            "cosignature time beyond 2^63-1".into(),
        ));
    }
    let vk = VerifierKey::from_signer(name, SIG_TYPE_COSIGNATURE_V1, signer)?;
    let sig = signer.sign(cosigned_message(text, time).as_bytes())?;
    let mut signature = time.to_be_bytes().to_vec();
    signature.extend_from_slice(&sig);
    Ok(NoteSignature {
        name: vk.name.clone(),
        key_id: vk.key_id(),
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example note from c2sp.org/tlog-cosignature (a real checkpoint with a
    // real log signature and cosignature) must parse and re-serialise exactly.
    #[test]
    fn parses_c2sp_example() {
        let note = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";
        let parsed = SignedNote::parse(note);
        assert!(parsed.is_ok(), "{parsed:?}");
        let Ok(parsed) = parsed else { return };
        assert_eq!(parsed.to_text(), note);
        assert_eq!(parsed.signatures.len(), 2);
        // Cosignature: 4-byte key id, 8-byte timestamp, 64-byte signature.
        assert_eq!(parsed.signatures[1].signature.len(), 72);
        assert_eq!(
            &parsed.signatures[1].signature[..8],
            &1_679_315_147u64.to_be_bytes()
        );
        let cp = Checkpoint::parse_text(&parsed.text);
        assert_eq!(cp.map(|c| c.size).ok(), Some(20_852_163));
    }

    #[test]
    fn rejects_malformed_checkpoints() {
        for bad in [
            "",
            "o\n",
            "o\n01\nAAAA\n",
            "o\n1\nnotbase64\n",
            "o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        ] {
            assert!(Checkpoint::parse_text(bad).is_err(), "{bad:?}");
        }
    }
}

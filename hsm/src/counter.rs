//! Rollback counters: a value that only moves forward and that restoring a
//! snapshot of a node's data directory does not rewind.
//!
//! A signer keeps in one the size and root of the last log checkpoint it
//! co-signed and the digest of its state file at that point. At start it
//! compares the state file with the counter: a file from before the counter
//! (a restored snapshot) or one that does not hash to it (an edited one) is
//! not trusted, and the signer rebuilds its state from the log.
//!
//! - [`Pkcs11Counter`]: a data object on the token (`CKO_DATA`, private,
//!   token-resident). A snapshot of the host's disk does not include the
//!   HSM's memory, so this is the counter that holds against a restore.
//! - [`SealedFileCounter`]: a file sealed by the node's sealer. It detects an
//!   edited or partly restored state, but a snapshot of the whole data
//!   directory (with the counter file in it) restores it too; keep it on
//!   another volume than the data directory where that matters, or use an HSM.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};

use crate::fsutil::write_atomic;
use crate::pkcs11::TokenSession;
use crate::{HsmError, Pin, SealContext, Sealer};

/// Encoded length of a [`CounterValue`].
const ENCODED_LEN: usize = 8 + 32 + 32;

/// What a counter holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValue {
    /// The position: only ever increases (a signer stores its witnessed log size).
    pub position: u64,
    /// What the position refers to (a signer: the checkpoint root at `position`).
    pub root: [u8; 32],
    /// Digest of the state that goes with it (a signer: SHA-256 of its state file).
    pub digest: [u8; 32],
}

impl CounterValue {
    /// `position (8, big-endian) || root (32) || digest (32)`.
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        out[..8].copy_from_slice(&self.position.to_be_bytes());
        out[8..40].copy_from_slice(&self.root);
        out[40..].copy_from_slice(&self.digest);
        out
    }

    /// Inverse of [`CounterValue::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, HsmError> {
        if bytes.len() != ENCODED_LEN {
            return Err(HsmError::SealedBlobInvalid(format!(
                "rollback counter: {} bytes, expected {ENCODED_LEN}",
                bytes.len()
            )));
        }
        let mut position = [0u8; 8];
        position.copy_from_slice(&bytes[..8]);
        let mut root = [0u8; 32];
        root.copy_from_slice(&bytes[8..40]);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&bytes[40..]);
        Ok(Self {
            position: u64::from_be_bytes(position),
            root,
            digest,
        })
    }
}

/// A monotonic counter kept where a restored snapshot cannot rewind it.
pub trait RollbackCounter: Send + Sync + fmt::Debug {
    /// Where it is kept, for messages (`PKCS#11 token "x" object "y"`, a path).
    fn location(&self) -> String;
    /// The stored value (all zero before the first [`RollbackCounter::advance`]).
    fn read(&self) -> Result<CounterValue, HsmError>;
    /// Stores `value`; refuses a position below the stored one.
    fn advance(&self, value: &CounterValue) -> Result<(), HsmError>;
}

fn refuse_rewind(location: &str, stored: u64, asked: u64) -> HsmError {
    HsmError::Config(format!(
        "rollback counter {location} is at {stored}: refusing to move it back to {asked}"
    ))
}

/// A counter in a file sealed by the node's sealer (see the module
/// documentation for what it does and does not protect against).
pub struct SealedFileCounter {
    path: PathBuf,
    sealer: Arc<dyn Sealer>,
    node_id: String,
    lock: Mutex<()>,
}

impl fmt::Debug for SealedFileCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedFileCounter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SealedFileCounter {
    /// The counter at `path`, sealed for node `node_id`.
    pub fn new(path: &Path, sealer: Arc<dyn Sealer>, node_id: &str) -> Self {
        Self {
            path: path.to_path_buf(),
            sealer,
            node_id: node_id.to_owned(),
            lock: Mutex::new(()),
        }
    }

    fn context(&self) -> SealContext<'_> {
        SealContext {
            node_id: &self.node_id,
            key_id: "rollback-counter",
            share_id: "state",
        }
    }

    fn read_unlocked(&self) -> Result<CounterValue, HsmError> {
        match std::fs::read(&self.path) {
            Ok(sealed) => {
                let plain = self.sealer.unseal(&self.context(), &sealed)?;
                CounterValue::decode(&plain)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CounterValue::default()),
            Err(e) => Err(HsmError::io(&self.path, e)),
        }
    }
}

impl RollbackCounter for SealedFileCounter {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn read(&self) -> Result<CounterValue, HsmError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.read_unlocked()
    }

    fn advance(&self, value: &CounterValue) -> Result<(), HsmError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let stored = self.read_unlocked()?;
        if value.position < stored.position {
            return Err(refuse_rewind(
                &self.location(),
                stored.position,
                value.position,
            ));
        }
        let sealed = self.sealer.seal(&self.context(), &value.encode())?;
        write_atomic(&self.path, &sealed)
    }
}

/// A counter in a private data object on a PKCS#11 token.
pub struct Pkcs11Counter {
    token_label: String,
    label: String,
    inner: Mutex<(TokenSession, ObjectHandle)>,
}

impl fmt::Debug for Pkcs11Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Counter")
            .field("token_label", &self.token_label)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Counter {
    /// Opens the data object labelled `label` on the token labelled
    /// `token_label`, creating it (all zero) if absent.
    pub fn open(
        module: &Path,
        token_label: &str,
        pin: &Pin,
        label: &str,
    ) -> Result<Self, HsmError> {
        if label.is_empty() {
            return Err(HsmError::Config("rollback counter label is empty".into()));
        }
        let ts = TokenSession::open(module, token_label, pin)?;
        let handle = match ts.find_one(ObjectClass::DATA, label)? {
            Some(h) => h,
            None => ts
                .session
                .create_object(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Modifiable(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                    Attribute::Application(b"custos".to_vec()),
                    Attribute::Value(CounterValue::default().encode().to_vec()),
                ])
                .map_err(|e| HsmError::pkcs11("C_CreateObject", e))?,
        };
        Ok(Self {
            token_label: token_label.to_owned(),
            label: label.to_owned(),
            inner: Mutex::new((ts, handle)),
        })
    }

    fn read_locked(ts: &TokenSession, handle: ObjectHandle) -> Result<CounterValue, HsmError> {
        let value = ts
            .attributes(handle, &[AttributeType::Value])?
            .into_iter()
            .find_map(|a| match a {
                Attribute::Value(v) => Some(v),
                _ => None,
            })
            .unwrap_or_default();
        CounterValue::decode(&value)
    }
}

impl RollbackCounter for Pkcs11Counter {
    fn location(&self) -> String {
        format!(
            "PKCS#11 token {:?} object {:?}",
            self.token_label, self.label
        )
    }

    fn read(&self) -> Result<CounterValue, HsmError> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Self::read_locked(&g.0, g.1)
    }

    fn advance(&self, value: &CounterValue) -> Result<(), HsmError> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let stored = Self::read_locked(&g.0, g.1)?;
        if value.position < stored.position {
            return Err(refuse_rewind(
                &self.location(),
                stored.position,
                value.position,
            ));
        }
        g.0.session
            .update_attributes(g.1, &[Attribute::Value(value.encode().to_vec())])
            .map_err(|e| HsmError::pkcs11("C_SetAttributeValue", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bad_lengths_are_refused() {
        let v = CounterValue {
            position: 0x0102_0304_0506_0708,
            root: [7; 32],
            digest: [9; 32],
        };
        assert_eq!(CounterValue::decode(&v.encode()).unwrap(), v);
        assert!(CounterValue::decode(&v.encode()[..71]).is_err());
        assert!(CounterValue::decode(&[0; 73]).is_err());
    }
}

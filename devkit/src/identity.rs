//! libp2p Ed25519 identities and other random secrets.

use std::path::Path;

use libp2p_identity::{Keypair, PeerId};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::DevkitError;
use crate::fsutil::{self, SECRET_MODE};

fn id_err(path: &Path, message: impl std::fmt::Display) -> DevkitError {
    DevkitError::Identity {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The PeerId of the protobuf-encoded keypair in `path`.
pub fn peer_id_of_key_file(path: &Path) -> Result<PeerId, DevkitError> {
    let bytes = Zeroizing::new(fsutil::read(path)?);
    let key = Keypair::from_protobuf_encoding(&bytes).map_err(|e| id_err(path, e))?;
    Ok(key.public().to_peer_id())
}

/// Loads the identity in `path`, or creates a new Ed25519 one (mode 0600).
pub(crate) fn load_or_create_identity(path: &Path) -> Result<PeerId, DevkitError> {
    if path.is_file() {
        fsutil::restrict(path)?;
        return peer_id_of_key_file(path);
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    // `ed25519_from_bytes` zeroizes the seed it is given.
    let key = Keypair::ed25519_from_bytes(&mut seed[..]).map_err(|e| id_err(path, e))?;
    let encoded = Zeroizing::new(key.to_protobuf_encoding().map_err(|e| id_err(path, e))?);
    fsutil::write_atomic(path, &encoded, SECRET_MODE)?;
    Ok(key.public().to_peer_id())
}

/// Creates `path` holding 32 random bytes in hex (mode 0600) unless it exists.
pub(crate) fn ensure_random_secret(path: &Path) -> Result<(), DevkitError> {
    if path.is_file() {
        return fsutil::restrict(path);
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    let text = Zeroizing::new(hex::encode(&bytes[..]));
    fsutil::write_atomic(path, text.as_bytes(), SECRET_MODE)
}

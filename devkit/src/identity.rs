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

/// Where the PeerId of the identity in `key` is kept in plain text: the
/// signer seals its key file at its first start, after which only the node
/// can read the key.
fn peer_id_file(key: &Path) -> std::path::PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".peer");
    name.into()
}

/// The PeerId of the identity in `path`: from the protobuf-encoded keypair,
/// or, once the signer has sealed it, from the `.peer` file written beside it.
pub fn peer_id_of_key_file(path: &Path) -> Result<PeerId, DevkitError> {
    let bytes = Zeroizing::new(fsutil::read(path)?);
    let peer_id = match Keypair::from_protobuf_encoding(&bytes) {
        Ok(key) => key.public().to_peer_id(),
        Err(e) => {
            let side = peer_id_file(path);
            let text = std::fs::read_to_string(&side)
                .map_err(|_| id_err(path, format!("{e}, and no {} beside it", side.display())))?;
            text.trim().parse().map_err(|e| id_err(&side, e))?
        }
    };
    let side = peer_id_file(path);
    if !side.is_file() {
        fsutil::write_atomic(
            &side,
            format!("{peer_id}\n").as_bytes(),
            fsutil::PUBLIC_MODE,
        )?;
    }
    Ok(peer_id)
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
    let peer_id = key.public().to_peer_id();
    fsutil::write_atomic(
        &peer_id_file(path),
        format!("{peer_id}\n").as_bytes(),
        fsutil::PUBLIC_MODE,
    )?;
    Ok(peer_id)
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

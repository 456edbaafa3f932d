//! The protocols, each a function over a [`SessionIo`].

use cggmp21::generic_ec::{NonZero, Point, Scalar};
use cggmp21::key_share::AnyKeyShare;
use cggmp21::round_based::MpcParty;
use cggmp21::supported_curves::Secp256k1;
use cggmp21::{DataToSign, ExecutionId as CrateEid};
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::cancel::CancelTracer;
use crate::error::MpcError;
use crate::session::{ObservedHandle, SessionIo, delivery};

/// A completed key share (secret: store sealed, keep in memory briefly).
pub type KeyShare = cggmp21::KeyShare<Secp256k1>;
/// Key share before auxiliary info is attached.
pub type IncompleteKeyShare = cggmp21::IncompleteKeyShare<Secp256k1>;
/// Auxiliary info of one party of a signer group (holds its Paillier secret key).
pub type AuxInfo = cggmp21::key_share::AuxInfo;
/// A presignature: use at most once, ever.
pub type Presignature = cggmp21::Presignature<Secp256k1>;
/// One signer's share of a signature.
pub type PartialSignature = cggmp21::PartialSignature<Secp256k1>;
/// Two safe primes for a party's Paillier key.
pub type Primes = cggmp21::PregeneratedPrimes;

/// An ECDSA signature over secp256k1, `s` normalised to the lower half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    /// `r`, big-endian.
    pub r: [u8; 32],
    /// `s`, big-endian, low-s.
    pub s: [u8; 32],
}

impl Signature {
    /// `r || s`.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.r);
        out[32..].copy_from_slice(&self.s);
        out
    }

    fn from_crate(sig: cggmp21::Signature<Secp256k1>) -> Self {
        let sig = sig.normalize_s();
        let mut buf = [0u8; 64];
        sig.write_to_slice(&mut buf);
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&buf[..32]);
        s.copy_from_slice(&buf[32..]);
        Signature { r, s }
    }
}

pub(crate) fn data_to_sign(digest: &[u8; 32]) -> DataToSign<Secp256k1> {
    // The digest is the chain's own pre-hash (keccak256, sighash): sign it as is.
    DataToSign::from_scalar(Scalar::from_be_bytes_mod_order(digest))
}

/// Compressed SEC1 public key of a key share.
pub fn public_key(share: &KeyShare) -> [u8; 33] {
    let mut out = [0u8; 33];
    out.copy_from_slice(share.shared_public_key.to_bytes(true).as_bytes());
    out
}

/// Runs auxiliary-info generation (Paillier keys with their Π-mod and Π-fac
/// proofs, which every party verifies) for a signer group of `io.parties`.
/// The work stops at the next protocol stage once `io.cancel` is set.
pub async fn run_aux_info(io: SessionIo, primes: Primes) -> Result<AuxInfo, MpcError> {
    let (me, n, eid) = (io.me, io.parties, io.eid);
    let mut tracer = CancelTracer(io.cancel.clone());
    let (incoming, outgoing, observed) = delivery(io);
    let party = MpcParty::connected((incoming, outgoing));
    let result = cggmp21::aux_info_gen(CrateEid::new(&eid.0), me, n, primes)
        .set_progress_tracer(&mut tracer)
        .start(&mut OsRng, party)
        .await;
    result.map_err(|e| attribute(&observed, &e))
}

/// Runs threshold key generation (`threshold`-of-`io.parties`). The key
/// carries a chain code the parties generate jointly, so its children can
/// be derived (non-hardened BIP32, [`crate::hd`]).
pub async fn run_keygen(io: SessionIo, threshold: u16) -> Result<IncompleteKeyShare, MpcError> {
    let (me, n, eid) = (io.me, io.parties, io.eid);
    if threshold < 2 || threshold > n {
        return Err(MpcError::InvalidInput(format!(
            "threshold {threshold} must be in 2..={n}"
        )));
    }
    let (incoming, outgoing, observed) = delivery(io);
    let party = MpcParty::connected((incoming, outgoing));
    let result = cggmp21::keygen::<Secp256k1>(CrateEid::new(&eid.0), me, n)
        .set_threshold(threshold)
        .hd_wallet(true)
        .start(&mut OsRng, party)
        .await;
    result.map_err(|e| attribute(&observed, &e))
}

/// Attaches the group's aux info to a fresh key share.
pub fn complete_key_share(
    incomplete: IncompleteKeyShare,
    aux: AuxInfo,
) -> Result<KeyShare, MpcError> {
    KeyShare::from_parts((incomplete, aux))
        .map_err(|e| MpcError::InvalidState(format!("key share: {e}")))
}

fn check_signers(
    share: &KeyShare,
    io: &SessionIo,
    parties_at_keygen: &[u16],
) -> Result<(), MpcError> {
    let t = usize::from(share.min_signers());
    if parties_at_keygen.len() != t || usize::from(io.parties) != t {
        return Err(MpcError::InvalidInput(format!(
            "exactly {t} signers must take part, got {}",
            parties_at_keygen.len()
        )));
    }
    if parties_at_keygen.get(usize::from(io.me)) != Some(&share.i) {
        return Err(MpcError::InvalidInput(
            "our position in the signer list does not hold our keygen index".into(),
        ));
    }
    Ok(())
}

/// Generates a presignature with exactly `threshold` signers.
pub async fn run_presign(
    io: SessionIo,
    share: &KeyShare,
    parties_at_keygen: &[u16],
) -> Result<Presignature, MpcError> {
    check_signers(share, &io, parties_at_keygen)?;
    let (me, eid) = (io.me, io.eid);
    let (incoming, outgoing, observed) = delivery(io);
    let party = MpcParty::connected((incoming, outgoing));
    let result = cggmp21::signing(CrateEid::new(&eid.0), me, parties_at_keygen, share)
        .generate_presignature(&mut OsRng, party)
        .await;
    result.map_err(|e| attribute(&observed, &e))
}

/// Signs `digest` interactively (no presignature).
pub async fn run_sign(
    io: SessionIo,
    share: &KeyShare,
    parties_at_keygen: &[u16],
    digest: &[u8; 32],
) -> Result<Signature, MpcError> {
    check_signers(share, &io, parties_at_keygen)?;
    let (me, eid) = (io.me, io.eid);
    let (incoming, outgoing, observed) = delivery(io);
    let party = MpcParty::connected((incoming, outgoing));
    let result = cggmp21::signing(CrateEid::new(&eid.0), me, parties_at_keygen, share)
        .sign(&mut OsRng, party, data_to_sign(digest))
        .await;
    let sig = result.map_err(|e| attribute(&observed, &e))?;
    Ok(Signature::from_crate(sig))
}

/// Issues this signer's partial signature from a presignature, consuming it.
pub fn issue_partial(presignature: Presignature, digest: &[u8; 32]) -> PartialSignature {
    presignature.issue_partial_signature(data_to_sign(digest))
}

/// Combines partial signatures and verifies the result under `public_key`.
pub fn combine(
    partials: &[PartialSignature],
    public_key: &[u8; 33],
    digest: &[u8; 32],
) -> Result<Signature, MpcError> {
    let pk = Point::<Secp256k1>::from_bytes(public_key)
        .map_err(|_| MpcError::InvalidInput("public key is not a secp256k1 point".into()))?;
    let sig = cggmp21::PartialSignature::combine(partials).ok_or(MpcError::InvalidSignature)?;
    sig.verify(&pk, &data_to_sign(digest))
        .map_err(|_| MpcError::InvalidSignature)?;
    Ok(Signature::from_crate(sig))
}

/// Verifies an ECDSA signature (`r || s`) over `digest` under `public_key`.
pub fn verify(
    public_key: &[u8; 33],
    digest: &[u8; 32],
    signature: &Signature,
) -> Result<(), MpcError> {
    let pk = Point::<Secp256k1>::from_bytes(public_key)
        .map_err(|_| MpcError::InvalidInput("public key is not a secp256k1 point".into()))?;
    let sig = cggmp21::Signature::<Secp256k1>::read_from_slice(&signature.to_bytes())
        .ok_or(MpcError::InvalidSignature)?;
    sig.verify(&pk, &data_to_sign(digest))
        .map_err(|_| MpcError::InvalidSignature)
}

/// The presignature's public nonce point `R`, compressed: not secret, lets
/// the coordinator check all partials came from the same presignature.
pub fn presignature_nonce(presignature: &Presignature) -> [u8; 33] {
    let r: &NonZero<Point<Secp256k1>> = &presignature.R;
    let mut out = [0u8; 33];
    out.copy_from_slice(r.to_bytes(true).as_bytes());
    out
}

/// Serialises secret protocol state for sealing.
pub fn to_secret_bytes<T: serde::Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, MpcError> {
    serde_json::to_vec(value)
        .map(Zeroizing::new)
        .map_err(|e| MpcError::InvalidState(e.to_string()))
}

/// Restores protocol state unsealed from storage (validated by its type).
pub fn from_secret_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, MpcError> {
    serde_json::from_slice(bytes).map_err(|e| MpcError::InvalidState(e.to_string()))
}

/// Turns a protocol error into one that names the culprit where possible:
/// first a frame our adapter rejected, then the blame cggmp21 reports.
fn attribute(observed: &ObservedHandle, err: &dyn std::error::Error) -> MpcError {
    let mut chain = format!("{err}");
    let mut debug = format!("{err:?}");
    let mut src = err.source();
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        debug.push_str(&format!(" {s:?}"));
        src = s.source();
    }
    let o = observed.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((party, reason)) = &o.culprit {
        return MpcError::PeerMisbehaved {
            party: *party,
            reason: reason.clone(),
        };
    }
    if let Some(party) = blamed_party(&debug) {
        return MpcError::PeerMisbehaved {
            party,
            reason: chain,
        };
    }
    if debug.contains("ReceiveMessageEof") || debug.contains("SendMessage") {
        return MpcError::Transport(chain);
    }
    MpcError::Aborted(chain)
}

/// cggmp21 reports blame only in its Debug output (`faulty_party: N`, or
/// `([(N, msg, msg)])` for signing proofs).
fn blamed_party(debug: &str) -> Option<u16> {
    if let Some(pos) = debug.find("faulty_party: ") {
        let digits: String = debug[pos + 14..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        return digits.parse().ok();
    }
    for marker in [
        "EncProofOfK([(",
        "InvalidPsi([(",
        "InvalidPsiPrimePrime([(",
        "Round1aNotReliable([(",
    ] {
        if let Some(pos) = debug.find(marker) {
            let digits: String = debug[pos + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            return digits.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::blamed_party;

    #[test]
    fn blame_is_parsed() {
        assert_eq!(
            blamed_party(
                "Aborted(ProtocolAborted { parties: [AbortBlame { faulty_party: 2, data_message: 1 }]"
            ),
            Some(2)
        );
        assert_eq!(blamed_party("Aborted(EncProofOfK([(1, 4, 5)]))"), Some(1));
        assert_eq!(blamed_party("IoError(ReceiveMessageEof)"), None);
    }
}

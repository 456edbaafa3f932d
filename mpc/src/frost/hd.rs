//! HD derivation of FROST taproot keys (`frost-secp256k1-tr`): non-hardened
//! BIP32 children of the BIP341 internal key, each spent by key path as
//! its own BIP86 output.
//!
//! # Design
//!
//! A taproot wallet key is two points: the DKG's joint key `P` (the BIP341
//! internal key, [`FrostPublicKey::dkg_key`]) and the output key
//! `Q = lift_x(P) + t·G`, `t = int(hash_TapTweak(x(P)))`, which the
//! ciphersuite applies inside the DKG (its shares are shares of `Q`'s
//! discrete log, negated first when `P` has an odd Y).
//!
//! - **Base.** Derivation starts from the *even-Y lift* of the internal
//!   key, `02 || x(P)`, not from `P` with the parity the DKG happened to
//!   produce: BIP341 keeps only `x(P)`, so the base is a function of what
//!   every wallet tool sees, and the untweaked shares (stored shares minus
//!   `t`) are exactly shares of `lift_x(P)`'s discrete log.
//! - **Chain code.** FROST's DKG makes no joint chain code, so the chain
//!   code is [`legacy_chain_code`] of the base, as for ECDSA keys made
//!   before HD support: deterministic, so every signer and the coordinator
//!   compute the same with nothing to store or agree on. The price is
//!   privacy, not safety: whoever learns the base and so the chain code
//!   (`x(P)` is not on chain for a key-path spend, but anyone shown the
//!   internal key, e.g. in a PSBT's `tap_internal_key`, has it) can link
//!   every derived address to the wallet. No key material becomes known.
//! - **Child.** The child internal key at `path` is the BIP32 child of the
//!   base, `P' = lift_x(P) + I_L·G` (`I_L` summed over the levels, public),
//!   and its address is P2TR of `P'`'s BIP86 tweak `Q'`. Consequently the
//!   extended public key (base, chain code) exported as an xpub gives the
//!   same addresses in a standard `tr(xpub/0/*)` descriptor wallet.
//! - **Shares.** Every signer derives its child share itself: from its
//!   stored (tweaked) share `s̃ᵢ` it removes `t`, adds `I_L` (a constant
//!   added to every Shamir share is added to the secret), and applies the
//!   ciphersuite's own tweak of the child (negation if `P'` has an odd Y,
//!   then `+ t'`). The verifying shares and the group key follow the same
//!   public steps, so the coordinator combines with the child's public
//!   package derived from the public package alone, and FROST's cheater
//!   detection names a signer whose share was derived at another path.

use std::collections::BTreeMap;

use cggmp21::generic_ec::{Point, Scalar};
use cggmp21::supported_curves::Secp256k1;
use frost_core::keys::{KeyPackage, PublicKeyPackage, SigningShare, VerifyingShare};
use frost_core::{Ciphersuite, VerifyingKey};
use frost_secp256k1_tr::keys::Tweak;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::{FrostKeyShare, FrostPublicKey, Secp256k1Tr, internal};
use crate::error::MpcError;
use crate::hd::{DerivationPath, ExtendedPublicKey, legacy_chain_code, point};

/// `int(hash_TapTweak(x))` reduced modulo the group order (BIP341; the
/// ciphersuite reduces the same way).
fn tap_tweak(x: &[u8; 32]) -> Scalar<Secp256k1> {
    let tag = Sha256::digest(b"TapTweak");
    let hash = Sha256::new()
        .chain_update(tag)
        .chain_update(tag)
        .chain_update(x)
        .finalize();
    Scalar::from_be_bytes_mod_order(hash)
}

fn sec1<C: Ciphersuite>(
    bytes: Result<Vec<u8>, frost_core::Error<C>>,
) -> Result<Point<Secp256k1>, MpcError> {
    point(&bytes.map_err(internal)?)
}

fn verifying_key(p: Point<Secp256k1>) -> Result<VerifyingKey<Secp256k1Tr>, MpcError> {
    VerifyingKey::deserialize(p.to_bytes(true).as_bytes()).map_err(internal)
}

fn verifying_share(p: Point<Secp256k1>) -> Result<VerifyingShare<Secp256k1Tr>, MpcError> {
    VerifyingShare::deserialize(p.to_bytes(true).as_bytes()).map_err(internal)
}

/// The x-only internal key of a taproot key (BIP341 `x(P)`).
pub fn internal_key(public: &FrostPublicKey<Secp256k1Tr>) -> Result<[u8; 32], MpcError> {
    public
        .dkg_key_bytes()
        .try_into()
        .map_err(|_| MpcError::InvalidState("taproot internal key is not 32 bytes".into()))
}

/// The extended public key derivation starts from: the even-Y lift of the
/// x-only internal key `x` and its [`legacy_chain_code`] (module docs).
pub fn extended_public_key(x: &[u8; 32]) -> Result<ExtendedPublicKey, MpcError> {
    let mut base = [0u8; 33];
    base[0] = 0x02;
    base[1..].copy_from_slice(x);
    ExtendedPublicKey::new(&base, legacy_chain_code(&base))
}

/// The x-only BIP86 output key of the internal key `internal` (a SEC1
/// point; only its x counts): `x(lift_x(P) + t·G)`.
pub fn output_key(internal: &[u8]) -> Result<[u8; 32], MpcError> {
    let p = point(internal)?;
    let mut x = [0u8; 32];
    x.copy_from_slice(&p.to_bytes(true).as_bytes()[1..]);
    let lifted = extended_public_key(&x)?;
    let q = point(&lifted.public_key())? + Point::generator() * tap_tweak(&x);
    let mut out = [0u8; 32];
    out.copy_from_slice(&q.to_bytes(true).as_bytes()[1..]);
    Ok(out)
}

/// The child internal key at `path` and `I_L - t`: what moves a stored
/// (tweaked) share or verifying share to the untweaked child's. Checks that
/// the stored group key is the BIP86 tweak of the internal key.
fn child_shift(
    public: &FrostPublicKey<Secp256k1Tr>,
    path: &DerivationPath,
) -> Result<(Point<Secp256k1>, Scalar<Secp256k1>), MpcError> {
    let x = internal_key(public)?;
    let base = extended_public_key(&x)?;
    let t = tap_tweak(&x);
    let q = point(&base.public_key())? + Point::generator() * t;
    if q != sec1(public.package.verifying_key().serialize())? {
        return Err(MpcError::InvalidState(
            "taproot group key is not the BIP86 tweak of its internal key".into(),
        ));
    }
    let (child, shift) = base.derive_with_shift(path)?;
    Ok((point(&child.public_key())?, shift - t))
}

/// The public form of the child key at `path` (module docs): its group key
/// is the child's output key, its verifying shares the signers' derived
/// ones, its DKG key the child internal key.
pub fn derive_public(
    public: &FrostPublicKey<Secp256k1Tr>,
    path: &DerivationPath,
) -> Result<FrostPublicKey<Secp256k1Tr>, MpcError> {
    if path.is_master() {
        return Ok(public.clone());
    }
    let (child, delta) = child_shift(public, path)?;
    let moved = Point::generator() * delta;
    let shares = public
        .package
        .verifying_shares()
        .iter()
        .map(|(id, vs)| Ok((*id, verifying_share(sec1(vs.serialize())? + moved)?)))
        .collect::<Result<BTreeMap<_, _>, MpcError>>()?;
    let untweaked =
        PublicKeyPackage::new(shares, verifying_key(child)?, public.package.min_signers());
    Ok(FrostPublicKey {
        package: untweaked.tweak::<&[u8]>(None),
        dkg_key: verifying_key(child)?,
    })
}

/// This signer's share of the child key at `path`, derived from its own
/// share alone (module docs). The child share is secret like the parent's.
pub fn derive_share(
    share: &FrostKeyShare<Secp256k1Tr>,
    path: &DerivationPath,
) -> Result<FrostKeyShare<Secp256k1Tr>, MpcError> {
    let (child, delta) = child_shift(&share.public, path)?;
    let public = derive_public(&share.public, path)?;
    let kp = &share.key_package;
    let stored = Zeroizing::new(kp.signing_share().serialize());
    let mut s = Scalar::<Secp256k1>::from_be_bytes(stored.as_slice())
        .map_err(|_| MpcError::InvalidState("signing share is not a scalar".into()))?;
    s += delta;
    let bytes = Zeroizing::new(s.to_be_bytes().as_bytes().to_vec());
    s.zeroize();
    let signing_share = SigningShare::deserialize(&bytes).map_err(internal)?;
    let moved = Point::generator() * delta;
    let untweaked = KeyPackage::new(
        *kp.identifier(),
        signing_share,
        verifying_share(sec1(kp.verifying_share().serialize())? + moved)?,
        verifying_key(child)?,
        *kp.min_signers(),
    );
    FrostKeyShare::new(share.index, untweaked.tweak::<&[u8]>(None), public)
}

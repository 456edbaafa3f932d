//! The signature-scheme seam: one trait that every threshold scheme Custos
//! signs with implements, so services drive keygen, the presignature pool,
//! partial signing and combining without knowing which scheme a key uses.
//!
//! # Design
//!
//! Both schemes split signing the same way, which is what the seam captures:
//! an interactive, message-independent precomputation whose secret half is
//! pooled and used at most once ([`SignatureScheme::Presignature`]: a cggmp21
//! presignature, or FROST nonces with every signer's commitments), then one
//! local step per signer once the message is known
//! ([`SignatureScheme::partial_sign`], which consumes the pool item), then a
//! public combine that verifies its result ([`SignatureScheme::combine`]).
//! What the combiner needs from the precomputation besides the partials is
//! its public half ([`SignatureScheme::PresignaturePublic`]).
//!
//! The functions of [`crate::protocol`] stay as they are (the signer and the
//! coordinator call them directly today); [`Cggmp21Ecdsa`] implements the
//! trait over them without changing their behaviour.

use std::future::Future;

use crate::error::MpcError;
use crate::hd::{DerivationPath, ExtendedPublicKey};
use crate::protocol::{self, AuxInfo, KeyShare, PartialSignature, Presignature, Signature};
use crate::session::SessionIo;

/// The signature schemes Custos signs with, by their stable names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SchemeId {
    /// Threshold ECDSA over secp256k1 (cggmp21); signs 32-byte prehashes.
    EcdsaSecp256k1,
    /// Threshold BIP340 Schnorr over secp256k1 (FROST, `frost-secp256k1-tr`),
    /// keys tweaked for taproot key-path spends (BIP86: no script tree).
    SchnorrSecp256k1Taproot,
    /// Threshold Ed25519 (FROST, `frost-ed25519`, RFC 8032 signatures).
    Ed25519,
}

impl SchemeId {
    /// Every scheme.
    pub const ALL: [SchemeId; 3] = [
        Self::EcdsaSecp256k1,
        Self::SchnorrSecp256k1Taproot,
        Self::Ed25519,
    ];

    /// The stable name stored with keys and sent on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaSecp256k1 => "ecdsa-secp256k1",
            Self::SchnorrSecp256k1Taproot => "schnorr-secp256k1-taproot",
            Self::Ed25519 => "ed25519",
        }
    }

    /// The curve the scheme works on.
    pub fn curve(self) -> &'static str {
        match self {
            Self::EcdsaSecp256k1 | Self::SchnorrSecp256k1Taproot => "secp256k1",
            Self::Ed25519 => "ed25519",
        }
    }

    /// The threshold protocol implementing it.
    pub fn protocol(self) -> &'static str {
        match self {
            Self::EcdsaSecp256k1 => "cggmp21",
            Self::SchnorrSecp256k1Taproot | Self::Ed25519 => "frost",
        }
    }

    /// The scheme with this [`name`](Self::name).
    pub fn from_name(name: &str) -> Result<Self, MpcError> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| MpcError::InvalidInput(format!("unknown signature scheme {name:?}")))
    }
}

impl std::fmt::Display for SchemeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A threshold signature scheme, as services drive it.
///
/// Party indices: `threshold`-of-`n` keys give each party a keygen index in
/// `0..n` (its position in the keygen session). Signing sessions list the
/// signers by keygen index (`parties_at_keygen`, in session order).
pub trait SignatureScheme {
    /// Which scheme this is.
    const ID: SchemeId;
    /// What key generation needs besides the session (ECDSA: the group's
    /// aux info; FROST: nothing).
    type KeygenSetup;
    /// One party's long-lived secret share (store sealed; redacted `Debug`).
    type KeyShare;
    /// The key's public form: what addresses are derived from and
    /// signatures verify under, plus what combining needs.
    type PublicKey: Clone;
    /// Secret, message-independent precomputation: a pool item that signs
    /// exactly one message and is consumed by doing so.
    type Presignature;
    /// The public half of a precomputation that the combiner needs.
    type PresignaturePublic: Clone;
    /// One signer's share of a signature (public).
    type PartialSignature: Clone;
    /// A complete signature.
    type Signature: Clone;

    /// Runs distributed key generation; `io.parties` parties, any
    /// `threshold` of which can sign.
    fn keygen(
        io: SessionIo,
        threshold: u16,
        setup: Self::KeygenSetup,
    ) -> impl Future<Output = Result<Self::KeyShare, MpcError>>;

    /// The public form of a share's key.
    fn public_key(share: &Self::KeyShare) -> Self::PublicKey;

    /// The key bytes an independent verifier takes (ECDSA: compressed SEC1;
    /// BIP340: x-only; Ed25519: RFC 8032 encoding).
    fn public_key_bytes(key: &Self::PublicKey) -> Vec<u8>;

    /// Runs the precomputation among the signers `parties_at_keygen`.
    fn precompute<'a>(
        io: SessionIo,
        share: &'a Self::KeyShare,
        parties_at_keygen: &'a [u16],
    ) -> impl Future<Output = Result<Self::Presignature, MpcError>> + 'a;

    /// The public half of a precomputation (not secret).
    fn presignature_public(presignature: &Self::Presignature) -> Self::PresignaturePublic;

    /// This signer's partial signature over `message`, consuming the
    /// presignature. ECDSA signs a 32-byte prehash; the Schnorr schemes sign
    /// the message itself (for taproot, the 32-byte BIP341 sighash).
    fn partial_sign(
        presignature: Self::Presignature,
        share: &Self::KeyShare,
        message: &[u8],
    ) -> Result<Self::PartialSignature, MpcError>;

    /// Combines the signers' partials into a signature and verifies it;
    /// names the signer of a bad partial where the scheme allows.
    fn combine(
        key: &Self::PublicKey,
        presignature: &Self::PresignaturePublic,
        message: &[u8],
        partials: &[Self::PartialSignature],
    ) -> Result<Self::Signature, MpcError>;

    /// Verifies a signature under the key.
    fn verify(
        key: &Self::PublicKey,
        message: &[u8],
        signature: &Self::Signature,
    ) -> Result<(), MpcError>;

    /// The signature's standard encoding (ECDSA `r || s`, low s; BIP340 and
    /// Ed25519: 64 bytes).
    fn signature_bytes(signature: &Self::Signature) -> Vec<u8>;
}

/// Threshold ECDSA over secp256k1 (cggmp21), over the functions of
/// [`crate::protocol`].
#[derive(Clone, Copy, Debug)]
pub struct Cggmp21Ecdsa;

fn prehash(message: &[u8]) -> Result<&[u8; 32], MpcError> {
    message.try_into().map_err(|_| {
        MpcError::InvalidInput(format!(
            "ECDSA signs a 32-byte prehash, got {} bytes",
            message.len()
        ))
    })
}

impl SignatureScheme for Cggmp21Ecdsa {
    const ID: SchemeId = SchemeId::EcdsaSecp256k1;
    type KeygenSetup = AuxInfo;
    type KeyShare = KeyShare;
    type PublicKey = [u8; 33];
    type Presignature = Presignature;
    /// The presignature's nonce point `R`, compressed.
    type PresignaturePublic = [u8; 33];
    type PartialSignature = PartialSignature;
    type Signature = Signature;

    async fn keygen(io: SessionIo, threshold: u16, aux: AuxInfo) -> Result<KeyShare, MpcError> {
        let incomplete = protocol::run_keygen(io, threshold).await?;
        protocol::complete_key_share(incomplete, aux)
    }

    fn public_key(share: &KeyShare) -> [u8; 33] {
        protocol::public_key(share)
    }

    fn public_key_bytes(key: &[u8; 33]) -> Vec<u8> {
        key.to_vec()
    }

    fn precompute<'a>(
        io: SessionIo,
        share: &'a KeyShare,
        parties_at_keygen: &'a [u16],
    ) -> impl Future<Output = Result<Presignature, MpcError>> + 'a {
        protocol::run_presign(io, share, parties_at_keygen)
    }

    fn presignature_public(presignature: &Presignature) -> [u8; 33] {
        protocol::presignature_nonce(presignature)
    }

    fn partial_sign(
        presignature: Presignature,
        _share: &KeyShare,
        message: &[u8],
    ) -> Result<PartialSignature, MpcError> {
        Ok(protocol::issue_partial(presignature, prehash(message)?))
    }

    fn combine(
        key: &[u8; 33],
        _nonce: &[u8; 33],
        message: &[u8],
        partials: &[PartialSignature],
    ) -> Result<Signature, MpcError> {
        protocol::combine(partials, key, prehash(message)?)
    }

    fn verify(key: &[u8; 33], message: &[u8], signature: &Signature) -> Result<(), MpcError> {
        protocol::verify(key, prehash(message)?, signature)
    }

    fn signature_bytes(signature: &Signature) -> Vec<u8> {
        signature.to_bytes().to_vec()
    }
}

fn fixed33(bytes: &[u8], what: &str) -> Result<[u8; 33], MpcError> {
    bytes.try_into().map_err(|_| {
        MpcError::InvalidInput(format!(
            "{what} must be a 33-byte compressed point, got {} bytes",
            bytes.len()
        ))
    })
}

impl crate::erased::Erasable for Cggmp21Ecdsa {
    const INTERACTIVE: bool = true;
    const NEEDS_AUX: bool = true;

    fn keygen_setup(aux: Option<&[u8]>) -> Result<AuxInfo, MpcError> {
        let aux = aux.ok_or_else(|| {
            MpcError::InvalidInput("cggmp21 key generation needs the group's aux info".into())
        })?;
        protocol::from_secret_bytes(aux)
    }

    /// The compressed SEC1 key, as stored since the first version.
    fn encode_public(key: &[u8; 33]) -> Result<Vec<u8>, MpcError> {
        Ok(key.to_vec())
    }

    fn decode_public(bytes: &[u8]) -> Result<[u8; 33], MpcError> {
        fixed33(bytes, "public key")
    }

    /// The compressed nonce point `R`, as stored since the first version.
    fn encode_presignature_public(nonce: &[u8; 33]) -> Result<Vec<u8>, MpcError> {
        Ok(nonce.to_vec())
    }

    fn decode_presignature_public(bytes: &[u8]) -> Result<[u8; 33], MpcError> {
        fixed33(bytes, "nonce point")
    }

    /// cggmp21 partials carry no signer (combining does not need one).
    fn attribute(_: &mut PartialSignature, _: u16) {}

    const NO_DERIVATION: Option<&'static str> = None;

    /// The BIP32 child of the key with its chain code, or the legacy one
    /// ([`crate::hd`]).
    fn derive_public(
        key: &[u8; 33],
        chain_code: Option<[u8; 32]>,
        path: &DerivationPath,
    ) -> Result<[u8; 33], MpcError> {
        Ok(ExtendedPublicKey::of_key(key, chain_code)?
            .derive(path)?
            .public_key())
    }

    fn derivation_chain_code(key: &[u8; 33], chain_code: Option<[u8; 32]>) -> Option<[u8; 32]> {
        ExtendedPublicKey::of_key(key, chain_code)
            .ok()
            .map(|x| x.chain_code())
    }

    /// The presignature shifted to the child (cggmp21's HD support).
    fn partial_sign_at(
        presignature: Presignature,
        share: &KeyShare,
        message: &[u8],
        path: &DerivationPath,
    ) -> Result<PartialSignature, MpcError> {
        let master = ExtendedPublicKey::of_share(share)?;
        crate::hd::issue_partial_derived(presignature, &master, path, prehash(message)?)
    }

    fn check_message(message: &[u8]) -> Result<(), MpcError> {
        prehash(message).map(|_| ())
    }
}

//! The signature-scheme seam as services use it: one object-safe trait,
//! [`ThresholdScheme`], over bytes, picked by [`SchemeId`] with [`scheme`].
//!
//! # Design
//!
//! Services store and send a scheme's state as bytes (sealed shares and
//! pool items, partials on the wire, public packages in the coordinator's
//! database) and learn a key's scheme only at run time, from its stored
//! record. [`SignatureScheme`] has typed associated items, which is right
//! for the protocols and their tests but cannot be picked at run time; this
//! module erases the types once, generically, so that every scheme behind
//! the seam is driven by the same code in the signer and the coordinator,
//! with no per-scheme branches there. What differs per scheme (how its
//! public forms are encoded, what keygen needs, how long a message may be)
//! is [`Erasable`], implemented beside each scheme ([`crate::scheme`] for
//! cggmp21 ECDSA, [`crate::frost`] for FROST).
//!
//! Encodings: shares and pool items are the JSON the crates serialise
//! (sealed by the caller, in `Zeroizing` buffers); partials are JSON (the
//! bytes ECDSA signers have always sent); public keys and presignature
//! public halves are what [`Erasable`] says (ECDSA keeps its raw 33-byte
//! SEC1 points, so nothing stored before changes).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::error::MpcError;
use crate::frost::{FrostEd25519, FrostTaproot};
use crate::hd::DerivationPath;
use crate::protocol::{from_secret_bytes, to_secret_bytes};
use crate::scheme::{Cggmp21Ecdsa, SchemeId, SignatureScheme};
use crate::session::SessionIo;

/// A protocol run, driven on the caller's executor (not `Send`: the
/// signer runs each session on its own blocking thread).
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = Result<T, MpcError>>>>;

/// What a key generation leaves with one party.
pub struct KeygenOutput {
    /// The party's share, serialised (secret: seal it).
    pub share: Zeroizing<Vec<u8>>,
    /// [`SignatureScheme::public_key_bytes`] of the key.
    pub public_key: Vec<u8>,
    /// What combining needs besides the partials (FROST: the public key
    /// package with every verifying share; ECDSA: the compressed key).
    /// Every honest party returns the same bytes.
    pub public_package: Vec<u8>,
}

impl std::fmt::Debug for KeygenOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeygenOutput")
            .field("share", &"<redacted>")
            .field("public_key", &hex::encode(&self.public_key))
            .finish()
    }
}

/// A key's HD child, public ([`ThresholdScheme::derive_public`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DerivedKey {
    /// [`SignatureScheme::public_key_bytes`] of the child: what its address
    /// is made from (ECDSA: compressed SEC1; taproot: the x-only output key).
    pub public_key: Vec<u8>,
    /// What combining the child's partials takes (as
    /// [`KeygenOutput::public_package`]).
    pub public_package: Vec<u8>,
    /// The parent's chain code the child was derived with (`None` for the
    /// master of a scheme without children).
    pub chain_code: Option<[u8; 32]>,
}

/// One pool item (presignature or FROST nonces with every commitment).
pub struct Precomputed {
    /// The secret pool item, serialised (seal it; use once, ever).
    pub secret: Zeroizing<Vec<u8>>,
    /// Its public half, identical on every honest signer of the session.
    pub public: Vec<u8>,
}

impl std::fmt::Debug for Precomputed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Precomputed")
            .field("secret", &"<redacted>")
            .field("public_len", &self.public.len())
            .finish()
    }
}

/// A threshold signature scheme driven over bytes (see the module docs).
pub trait ThresholdScheme: Send + Sync {
    /// Which scheme this is.
    fn id(&self) -> SchemeId;

    /// Whether it has an interactive signing protocol without a pool item
    /// (cggmp21 does; FROST signs from a fresh commitment round instead).
    fn interactive_signing(&self) -> bool;

    /// Whether key generation needs the signer group's aux info (cggmp21).
    fn needs_aux_info(&self) -> bool;

    /// Checks that `message` is something the scheme signs (ECDSA: a
    /// 32-byte prehash; Schnorr: 1 to [`MAX_MESSAGE`] bytes).
    fn check_message(&self, message: &[u8]) -> Result<(), MpcError>;

    /// Distributed key generation; `aux` is the group's aux info (ECDSA
    /// needs it; FROST ignores it).
    fn keygen(
        &self,
        io: SessionIo,
        threshold: u16,
        aux: Option<Zeroizing<Vec<u8>>>,
    ) -> LocalFuture<KeygenOutput>;

    /// The precomputation among `parties_at_keygen` with this party's share.
    fn precompute(
        &self,
        io: SessionIo,
        share: Zeroizing<Vec<u8>>,
        parties_at_keygen: Vec<u16>,
    ) -> LocalFuture<Precomputed>;

    /// This signer's partial over `message` from a pool item (which the
    /// caller has durably marked consumed before calling).
    fn partial_sign(
        &self,
        presignature: &[u8],
        share: &[u8],
        message: &[u8],
    ) -> Result<Vec<u8>, MpcError>;

    /// Checks that the scheme's keys have a child at `path` (every scheme
    /// has the master, `m`): callers check before they consume a pool item.
    /// Ed25519 keys have no other ([`MpcError::Unsupported`]).
    fn check_path(&self, path: &DerivationPath) -> Result<(), MpcError>;

    /// [`partial_sign`](Self::partial_sign) for the key's child at `path`
    /// ([`crate::hd`], [`crate::frost::hd`]): every signer derives the
    /// child from its own share.
    fn partial_sign_at(
        &self,
        presignature: &[u8],
        share: &[u8],
        message: &[u8],
        path: &DerivationPath,
    ) -> Result<Vec<u8>, MpcError>;

    /// The key's child at `path`, from the key's public package and, for a
    /// key whose keygen made one, its chain code: what the child's address
    /// is made from and what combining its partials takes.
    fn derive_public(
        &self,
        public_package: &[u8],
        chain_code: Option<[u8; 32]>,
        path: &DerivationPath,
    ) -> Result<DerivedKey, MpcError>;

    /// Combines partials, each with its signer's keygen index (from the
    /// authenticated sender, not from the partial), into a verified
    /// signature in the scheme's standard encoding. A partial that does not
    /// parse is [`MpcError::MalformedPartial`], naming its signer.
    fn combine(
        &self,
        public_package: &[u8],
        presignature_public: &[u8],
        message: &[u8],
        partials: &[(u16, &[u8])],
    ) -> Result<Vec<u8>, MpcError>;

    /// Whether the scheme refreshes and repairs shares (FROST does;
    /// cggmp21 ECDSA here does not): [`MpcError::Unsupported`] if not.
    /// Callers check it before they start a session.
    fn check_refreshable(&self) -> Result<(), MpcError>;

    /// Share refresh without a dealer among every holder of the key
    /// (`parties_at_keygen` in session order): the same public key, new
    /// shares, and a new public package (new verifying shares). Old shares
    /// no longer combine with new ones: the caller stores the new share
    /// durably, then drops the old one and every pool item made under it.
    fn refresh(
        &self,
        io: SessionIo,
        share: Zeroizing<Vec<u8>>,
        parties_at_keygen: Vec<u16>,
    ) -> LocalFuture<KeygenOutput>;

    /// A helper's part in rebuilding party `lost`'s share: `helpers` (at
    /// least the threshold, keygen indices) hold session positions
    /// `0..helpers.len()`, the lost party the last one. The helper learns
    /// nothing of the rebuilt share.
    fn repair_help(
        &self,
        io: SessionIo,
        share: Zeroizing<Vec<u8>>,
        helpers: Vec<u16>,
        lost: u16,
    ) -> LocalFuture<()>;

    /// The lost party's part: rebuilds its share from the helpers' data and
    /// checks it against its verifying share in `public_package` (which
    /// the caller must have from a record the helpers agree with, not from
    /// the helpers' messages).
    fn repair_recover(
        &self,
        io: SessionIo,
        public_package: Vec<u8>,
        helpers: Vec<u16>,
        lost: u16,
    ) -> LocalFuture<KeygenOutput>;

    /// The public package of a share (what its keygen, refresh or repair
    /// returned as [`KeygenOutput::public_package`]).
    fn share_public_package(&self, share: &[u8]) -> Result<Vec<u8>, MpcError>;
}

/// Longest message the Schnorr schemes sign through the services.
pub const MAX_MESSAGE: usize = 4096;

/// What a scheme says about itself for [`ThresholdScheme`]: encodings of
/// its public forms and what its keygen needs.
/// Its share, pool item and partial must also serialise (serde), which
/// [`ThresholdScheme`]'s implementation requires.
pub trait Erasable: SignatureScheme + 'static {
    /// See [`ThresholdScheme::interactive_signing`].
    const INTERACTIVE: bool;
    /// See [`ThresholdScheme::needs_aux_info`].
    const NEEDS_AUX: bool;
    /// The keygen setup from the group's aux info, if the scheme needs it.
    fn keygen_setup(aux: Option<&[u8]>) -> Result<Self::KeygenSetup, MpcError>;
    /// Encodes the key's public form.
    fn encode_public(key: &Self::PublicKey) -> Result<Vec<u8>, MpcError>;
    /// Decodes [`encode_public`](Self::encode_public).
    fn decode_public(bytes: &[u8]) -> Result<Self::PublicKey, MpcError>;
    /// Encodes a precomputation's public half.
    fn encode_presignature_public(p: &Self::PresignaturePublic) -> Result<Vec<u8>, MpcError>;
    /// Decodes [`encode_presignature_public`](Self::encode_presignature_public).
    fn decode_presignature_public(bytes: &[u8]) -> Result<Self::PresignaturePublic, MpcError>;
    /// Sets the signer of a partial from the authenticated sender.
    fn attribute(partial: &mut Self::PartialSignature, keygen_index: u16);
    /// See [`ThresholdScheme::check_message`].
    fn check_message(message: &[u8]) -> Result<(), MpcError>;

    /// `None` if the scheme's keys have HD children below the master, else
    /// why not (the [`MpcError::Unsupported`] a path below it gets).
    const NO_DERIVATION: Option<&'static str>;
    /// The key's child at `path` (see [`ThresholdScheme::derive_public`]).
    fn derive_public(
        key: &Self::PublicKey,
        chain_code: Option<[u8; 32]>,
        path: &DerivationPath,
    ) -> Result<Self::PublicKey, MpcError>;
    /// The chain code derivation below the key uses (the keygen's, else
    /// the one derived from the key); `None` for keys without children.
    fn derivation_chain_code(
        key: &Self::PublicKey,
        chain_code: Option<[u8; 32]>,
    ) -> Option<[u8; 32]>;
    /// This signer's partial for the key's child at `path`.
    fn partial_sign_at(
        presignature: Self::Presignature,
        share: &Self::KeyShare,
        message: &[u8],
        path: &DerivationPath,
    ) -> Result<Self::PartialSignature, MpcError>;

    /// Whether [`refresh`](Self::refresh) and the repairs are implemented.
    const REFRESHABLE: bool = false;

    /// See [`ThresholdScheme::refresh`]; unsupported unless implemented.
    fn refresh(
        io: SessionIo,
        share: Self::KeyShare,
        parties_at_keygen: Vec<u16>,
    ) -> LocalFuture<Self::KeyShare> {
        drop((io, share, parties_at_keygen));
        let e = unsupported(Self::ID, "share refresh");
        Box::pin(async move { Err(e) })
    }

    /// See [`ThresholdScheme::repair_help`]; unsupported unless implemented.
    fn repair_help(
        io: SessionIo,
        share: Self::KeyShare,
        helpers: Vec<u16>,
        lost: u16,
    ) -> LocalFuture<()> {
        drop((io, share, helpers, lost));
        let e = unsupported(Self::ID, "share repair");
        Box::pin(async move { Err(e) })
    }

    /// See [`ThresholdScheme::repair_recover`]; unsupported unless implemented.
    fn repair_recover(
        io: SessionIo,
        public: Self::PublicKey,
        helpers: Vec<u16>,
        lost: u16,
    ) -> LocalFuture<Self::KeyShare> {
        drop((io, public, helpers, lost));
        let e = unsupported(Self::ID, "share repair");
        Box::pin(async move { Err(e) })
    }
}

fn unsupported(scheme: SchemeId, operation: &'static str) -> MpcError {
    MpcError::Unsupported { scheme, operation }
}

/// The bytes of a share and its public forms.
fn output<S>(share: &S::KeyShare) -> Result<KeygenOutput, MpcError>
where
    S: Erasable,
    S::KeyShare: Serialize,
{
    let public = S::public_key(share);
    Ok(KeygenOutput {
        share: to_secret_bytes(share)?,
        public_key: S::public_key_bytes(&public),
        public_package: S::encode_public(&public)?,
    })
}

/// A Schnorr message: 1 to [`MAX_MESSAGE`] bytes.
pub(crate) fn check_schnorr_message(message: &[u8]) -> Result<(), MpcError> {
    if message.is_empty() || message.len() > MAX_MESSAGE {
        return Err(MpcError::InvalidInput(format!(
            "a message of 1 to {MAX_MESSAGE} bytes is signed, got {} bytes",
            message.len()
        )));
    }
    Ok(())
}

/// [`ThresholdScheme`] over any [`Erasable`] scheme.
struct Erased<S>(PhantomData<fn() -> S>);

impl<S> ThresholdScheme for Erased<S>
where
    S: Erasable,
    S::KeyShare: Serialize + DeserializeOwned,
    S::Presignature: Serialize + DeserializeOwned,
    S::PartialSignature: Serialize + DeserializeOwned,
{
    fn id(&self) -> SchemeId {
        S::ID
    }

    fn interactive_signing(&self) -> bool {
        S::INTERACTIVE
    }

    fn needs_aux_info(&self) -> bool {
        S::NEEDS_AUX
    }

    fn check_message(&self, message: &[u8]) -> Result<(), MpcError> {
        S::check_message(message)
    }

    fn keygen(
        &self,
        io: SessionIo,
        threshold: u16,
        aux: Option<Zeroizing<Vec<u8>>>,
    ) -> LocalFuture<KeygenOutput> {
        Box::pin(async move {
            let setup = S::keygen_setup(aux.as_ref().map(|a| a.as_slice()))?;
            drop(aux);
            let share = S::keygen(io, threshold, setup).await?;
            output::<S>(&share)
        })
    }

    fn check_refreshable(&self) -> Result<(), MpcError> {
        if S::REFRESHABLE {
            Ok(())
        } else {
            Err(unsupported(S::ID, "share refresh and repair"))
        }
    }

    fn refresh(
        &self,
        io: SessionIo,
        share: Zeroizing<Vec<u8>>,
        parties_at_keygen: Vec<u16>,
    ) -> LocalFuture<KeygenOutput> {
        Box::pin(async move {
            if !S::REFRESHABLE {
                return Err(unsupported(S::ID, "share refresh"));
            }
            let share: S::KeyShare = from_secret_bytes(&share)?;
            let new = S::refresh(io, share, parties_at_keygen).await?;
            output::<S>(&new)
        })
    }

    fn repair_help(
        &self,
        io: SessionIo,
        share: Zeroizing<Vec<u8>>,
        helpers: Vec<u16>,
        lost: u16,
    ) -> LocalFuture<()> {
        Box::pin(async move {
            if !S::REFRESHABLE {
                return Err(unsupported(S::ID, "share repair"));
            }
            let share: S::KeyShare = from_secret_bytes(&share)?;
            S::repair_help(io, share, helpers, lost).await
        })
    }

    fn repair_recover(
        &self,
        io: SessionIo,
        public_package: Vec<u8>,
        helpers: Vec<u16>,
        lost: u16,
    ) -> LocalFuture<KeygenOutput> {
        Box::pin(async move {
            if !S::REFRESHABLE {
                return Err(unsupported(S::ID, "share repair"));
            }
            let public = S::decode_public(&public_package)?;
            let share = S::repair_recover(io, public, helpers, lost).await?;
            output::<S>(&share)
        })
    }

    fn share_public_package(&self, share: &[u8]) -> Result<Vec<u8>, MpcError> {
        let share: S::KeyShare = from_secret_bytes(share)?;
        S::encode_public(&S::public_key(&share))
    }

    fn precompute(
        &self,
        io: SessionIo,
        share: Zeroizing<Vec<u8>>,
        parties_at_keygen: Vec<u16>,
    ) -> LocalFuture<Precomputed> {
        Box::pin(async move {
            let share: S::KeyShare = from_secret_bytes(&share)?;
            let pre = S::precompute(io, &share, &parties_at_keygen).await?;
            let public = S::encode_presignature_public(&S::presignature_public(&pre))?;
            Ok(Precomputed {
                secret: to_secret_bytes(&pre)?,
                public,
            })
        })
    }

    fn partial_sign(
        &self,
        presignature: &[u8],
        share: &[u8],
        message: &[u8],
    ) -> Result<Vec<u8>, MpcError> {
        self.partial_sign_at(presignature, share, message, &DerivationPath::master())
    }

    fn check_path(&self, path: &DerivationPath) -> Result<(), MpcError> {
        match S::NO_DERIVATION {
            Some(why) if !path.is_master() => Err(unsupported(S::ID, why)),
            _ => Ok(()),
        }
    }

    fn partial_sign_at(
        &self,
        presignature: &[u8],
        share: &[u8],
        message: &[u8],
        path: &DerivationPath,
    ) -> Result<Vec<u8>, MpcError> {
        S::check_message(message)?;
        self.check_path(path)?;
        let pre: S::Presignature = from_secret_bytes(presignature)?;
        let share: S::KeyShare = from_secret_bytes(share)?;
        let partial = S::partial_sign_at(pre, &share, message, path)?;
        serde_json::to_vec(&partial).map_err(|e| MpcError::InvalidState(e.to_string()))
    }

    fn derive_public(
        &self,
        public_package: &[u8],
        chain_code: Option<[u8; 32]>,
        path: &DerivationPath,
    ) -> Result<DerivedKey, MpcError> {
        let key = S::decode_public(public_package)?;
        let child = S::derive_public(&key, chain_code, path)?;
        Ok(DerivedKey {
            public_key: S::public_key_bytes(&child),
            public_package: S::encode_public(&child)?,
            chain_code: S::derivation_chain_code(&key, chain_code),
        })
    }

    fn combine(
        &self,
        public_package: &[u8],
        presignature_public: &[u8],
        message: &[u8],
        partials: &[(u16, &[u8])],
    ) -> Result<Vec<u8>, MpcError> {
        S::check_message(message)?;
        let key = S::decode_public(public_package)?;
        let pre = S::decode_presignature_public(presignature_public)?;
        let parsed = partials
            .iter()
            .map(|(k, bytes)| {
                let mut p: S::PartialSignature =
                    serde_json::from_slice(bytes).map_err(|e| MpcError::MalformedPartial {
                        party: *k,
                        reason: e.to_string(),
                    })?;
                S::attribute(&mut p, *k);
                Ok(p)
            })
            .collect::<Result<Vec<_>, MpcError>>()?;
        let sig = S::combine(&key, &pre, message, &parsed)?;
        Ok(S::signature_bytes(&sig))
    }
}

static ECDSA: Erased<Cggmp21Ecdsa> = Erased(PhantomData);
static TAPROOT: Erased<FrostTaproot> = Erased(PhantomData);
static ED25519: Erased<FrostEd25519> = Erased(PhantomData);

/// The implementation of scheme `id`.
pub fn scheme(id: SchemeId) -> &'static dyn ThresholdScheme {
    match id {
        SchemeId::EcdsaSecp256k1 => &ECDSA,
        SchemeId::SchnorrSecp256k1Taproot => &TAPROOT,
        SchemeId::Ed25519 => &ED25519,
    }
}

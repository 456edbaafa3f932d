//! Threshold Schnorr signing with FROST (RFC 9591), over the Zcash
//! Foundation's crates: BIP340 Schnorr with taproot-tweaked keys
//! (`frost-secp256k1-tr`) and Ed25519 (`frost-ed25519`).
//!
//! # Design
//!
//! The protocols run over the same [`SessionIo`] as cggmp21: every frame is
//! checked against the execution id and the authenticated sender by
//! [`crate::session`], and a peer whose frame, proof or share is bad is
//! named in [`MpcError::PeerMisbehaved`] (session-local index).
//!
//! - **Key generation** is the crates' three-part DKG: round 1 broadcast
//!   (commitments and proofs of knowledge), round 2 point-to-point shares,
//!   then a local part 3. Round 2 messages carry a hash of every round-1
//!   package the sender saw, so a party that equivocated in round 1 (a
//!   different package to different peers) aborts the session instead of
//!   splitting the group into different keys.
//! - **Precomputation** (the presignature pool): each signer draws its nonces
//!   and broadcasts their commitments; the pool item
//!   ([`FrostPresignature`]) holds the nonces (secret, zeroized on drop,
//!   neither `Clone` nor printable) and every signer's commitments. Signing
//!   consumes it by value: a FROST nonce used twice leaks the share.
//! - **Signing** is then one local step per signer ([`partial_sign`]) and a
//!   public [`combine`], which verifies every share against its signer's
//!   verifying share when the result does not verify, and names the signers
//!   of the bad ones ([`MpcError::InvalidSignatureShare`], keygen indices).
//! - **Refresh** ([`run_refresh`]): the crates' DKG-style refresh adds a
//!   sharing of zero; the group key stays, the shares change, and old and new
//!   shares no longer combine.
//! - **Repair** ([`run_repair_help`], [`run_repair_recover`]): `t` holders
//!   rebuild a lost party's share (the crates' RTS scheme) without learning
//!   it; the result is checked against the group's verifying share of the
//!   lost party.
//!
//! Indices: a party's keygen index `k` (its position in the keygen session)
//! is FROST identifier `k + 1`.
//!
//! Taproot: `frost-secp256k1-tr` tweaks the DKG's joint key `P` into the
//! output key `Q = lift_x(P) + H_TapTweak(P)·G` (BIP86, no script tree)
//! inside the DKG, so [`FrostPublicKey::package`]'s group key is already the
//! taproot output key and signatures verify under it as plain BIP340.
//! [`FrostPublicKey::dkg_key`] keeps `P` (the BIP341 internal key) so that
//! address derivation can be checked against an independent tweak.
//!
//! HD children ([`hd`]): a taproot key's non-hardened BIP32 children are
//! children of its internal key, each a BIP86 output; every signer derives
//! its child share from its own share ([`partial_sign_at`]) and the
//! combiner the child's public form from the public one
//! ([`FrostSuite::derive_public`]). Ed25519 keys have none (SLIP-10 derives
//! ed25519 keys by hardened indices only, which needs the whole private
//! key): a path below the master is [`MpcError::Unsupported`].

use std::collections::BTreeMap;
use std::fmt;

use frost_core::keys::dkg::{self, round1, round2};
use frost_core::keys::{KeyPackage, PublicKeyPackage, refresh, repairable};
use frost_core::round1::{SigningCommitments, SigningNonces};
use frost_core::round2::SignatureShare;
use frost_core::{CheaterDetection, Ciphersuite, Identifier, SigningPackage, VerifyingKey};
use futures::{SinkExt, Stream, StreamExt};
use rand_core::OsRng;
use round_based::{Incoming, MessageType, Outgoing};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::MpcError;
use crate::hd::DerivationPath;
use crate::scheme::{SchemeId, SignatureScheme};

pub mod hd;
use crate::session::{DeliveryError, SessionIo, delivery};

/// BIP340 Schnorr over secp256k1 with taproot-tweaked keys.
pub type Secp256k1Tr = frost_secp256k1_tr::Secp256K1Sha256TR;
/// Ed25519.
pub type Ed25519 = frost_ed25519::Ed25519Sha512;
/// A FROST signature.
pub type FrostSignature<C> = frost_core::Signature<C>;

/// A FROST ciphersuite Custos signs with.
pub trait FrostSuite: Ciphersuite {
    /// The scheme it implements.
    const SCHEME: SchemeId;
    /// `None` if its keys have HD children below the master ([`hd`]),
    /// else why not.
    const NO_DERIVATION: Option<&'static str>;
    /// The key bytes an independent verifier takes.
    fn key_bytes(key: &VerifyingKey<Self>) -> Vec<u8>;
    /// The public form of the key's child at `path` (a non-master path:
    /// [`MpcError::Unsupported`] if [`NO_DERIVATION`](Self::NO_DERIVATION)).
    fn derive_public(
        key: &FrostPublicKey<Self>,
        path: &DerivationPath,
    ) -> Result<FrostPublicKey<Self>, MpcError>;
    /// The chain code its children are derived with (`None`: no children).
    fn derivation_chain_code(key: &FrostPublicKey<Self>) -> Option<[u8; 32]>;
    /// This party's share of the key's child at `path`, derived from its
    /// own share (as [`derive_public`](Self::derive_public)).
    fn derive_share(
        share: &FrostKeyShare<Self>,
        path: &DerivationPath,
    ) -> Result<FrostKeyShare<Self>, MpcError>;
}

impl FrostSuite for Secp256k1Tr {
    const SCHEME: SchemeId = SchemeId::SchnorrSecp256k1Taproot;
    const NO_DERIVATION: Option<&'static str> = None;
    /// BIP340 x-only: the compressed encoding without its parity byte.
    fn key_bytes(key: &VerifyingKey<Self>) -> Vec<u8> {
        let mut bytes = key.serialize().unwrap_or_default();
        if !bytes.is_empty() {
            bytes.remove(0);
        }
        bytes
    }

    fn derive_public(
        key: &FrostPublicKey<Self>,
        path: &DerivationPath,
    ) -> Result<FrostPublicKey<Self>, MpcError> {
        hd::derive_public(key, path)
    }

    fn derivation_chain_code(key: &FrostPublicKey<Self>) -> Option<[u8; 32]> {
        hd::internal_key(key)
            .and_then(|x| hd::extended_public_key(&x))
            .ok()
            .map(|x| x.chain_code())
    }

    fn derive_share(
        share: &FrostKeyShare<Self>,
        path: &DerivationPath,
    ) -> Result<FrostKeyShare<Self>, MpcError> {
        hd::derive_share(share, path)
    }
}

/// Why an Ed25519 key has no child below the master.
const NO_ED25519_DERIVATION: &str = "derivation below the master key (SLIP-10 defines only hardened ed25519 derivation, which needs the private key no party holds)";

impl FrostSuite for Ed25519 {
    const SCHEME: SchemeId = SchemeId::Ed25519;
    const NO_DERIVATION: Option<&'static str> = Some(NO_ED25519_DERIVATION);
    fn key_bytes(key: &VerifyingKey<Self>) -> Vec<u8> {
        key.serialize().unwrap_or_default()
    }

    fn derive_public(
        key: &FrostPublicKey<Self>,
        path: &DerivationPath,
    ) -> Result<FrostPublicKey<Self>, MpcError> {
        if path.is_master() {
            return Ok(key.clone());
        }
        Err(MpcError::Unsupported {
            scheme: Self::SCHEME,
            operation: NO_ED25519_DERIVATION,
        })
    }

    fn derivation_chain_code(_key: &FrostPublicKey<Self>) -> Option<[u8; 32]> {
        None
    }

    fn derive_share(
        _share: &FrostKeyShare<Self>,
        _path: &DerivationPath,
    ) -> Result<FrostKeyShare<Self>, MpcError> {
        Err(MpcError::Unsupported {
            scheme: Self::SCHEME,
            operation: NO_ED25519_DERIVATION,
        })
    }
}

/// The FROST scheme over ciphersuite `C`.
#[derive(Clone, Copy, Debug)]
pub struct Frost<C>(std::marker::PhantomData<C>);

/// BIP340 Schnorr / taproot (`frost-secp256k1-tr`).
pub type FrostTaproot = Frost<Secp256k1Tr>;
/// Ed25519 (`frost-ed25519`).
pub type FrostEd25519 = Frost<Ed25519>;

/// A FROST key's public form (not secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "C: Ciphersuite")]
pub struct FrostPublicKey<C: Ciphersuite> {
    /// The group key (for secp256k1-tr the taproot output key) and every
    /// party's verifying share.
    pub package: PublicKeyPackage<C>,
    /// The DKG's joint key before the ciphersuite's post-processing: for
    /// secp256k1-tr the BIP341 internal key (untweaked), for Ed25519 the
    /// group key itself.
    pub dkg_key: VerifyingKey<C>,
}

impl<C: FrostSuite> FrostPublicKey<C> {
    /// The group key signatures verify under.
    pub fn verifying_key(&self) -> &VerifyingKey<C> {
        self.package.verifying_key()
    }

    /// [`FrostSuite::key_bytes`] of the group key.
    pub fn key_bytes(&self) -> Vec<u8> {
        C::key_bytes(self.verifying_key())
    }

    /// [`FrostSuite::key_bytes`] of [`dkg_key`](Self::dkg_key).
    pub fn dkg_key_bytes(&self) -> Vec<u8> {
        C::key_bytes(&self.dkg_key)
    }

    /// Threshold.
    pub fn min_signers(&self) -> Option<u16> {
        self.package.min_signers()
    }
}

/// One party's FROST key share (secret: zeroized on drop, `Debug` redacted).
#[derive(Serialize, Deserialize)]
#[serde(bound = "C: Ciphersuite")]
pub struct FrostKeyShare<C: Ciphersuite> {
    index: u16,
    key_package: KeyPackage<C>,
    public: FrostPublicKey<C>,
}

impl<C: FrostSuite> FrostKeyShare<C> {
    /// This party's keygen index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The key's public form.
    pub fn public(&self) -> &FrostPublicKey<C> {
        &self.public
    }

    /// Threshold.
    pub fn min_signers(&self) -> u16 {
        *self.key_package.min_signers()
    }

    /// Builds a share from the crate's types, checking that they belong together.
    fn new(
        index: u16,
        key_package: KeyPackage<C>,
        public: FrostPublicKey<C>,
    ) -> Result<Self, MpcError> {
        let id = ident::<C>(index)?;
        if *key_package.identifier() != id
            || key_package.verifying_key() != public.package.verifying_key()
            || public.package.verifying_shares().get(&id) != Some(key_package.verifying_share())
            || Some(*key_package.min_signers()) != public.package.min_signers()
        {
            return Err(MpcError::InvalidState(format!(
                "key package of party {index} does not match the group's public key package"
            )));
        }
        Ok(FrostKeyShare {
            index,
            key_package,
            public,
        })
    }
}

impl<C: FrostSuite> fmt::Debug for FrostKeyShare<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrostKeyShare")
            .field("scheme", &C::SCHEME)
            .field("index", &self.index)
            .field("key", &hex::encode(self.public.key_bytes()))
            .field("share", &"<redacted>")
            .finish()
    }
}

/// A presignature-pool item: this signer's nonces and every signer's
/// commitments. Signs one message, once: [`partial_sign`] consumes it; not
/// `Clone`; the nonces are zeroized on drop; `Debug` shows no secret.
///
/// ```compile_fail
/// use custos_mpc::frost::{FrostPresignature, Secp256k1Tr};
/// fn twice(p: &FrostPresignature<Secp256k1Tr>) -> FrostPresignature<Secp256k1Tr> {
///     p.clone() // a pool item cannot be duplicated
/// }
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "C: Ciphersuite")]
pub struct FrostPresignature<C: Ciphersuite> {
    me: u16,
    signers: Vec<u16>,
    nonces: SigningNonces<C>,
    commitments: BTreeMap<Identifier<C>, SigningCommitments<C>>,
}

impl<C: FrostSuite> fmt::Debug for FrostPresignature<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrostPresignature")
            .field("me", &self.me)
            .field("signers", &self.signers)
            .field("nonces", &"<redacted>")
            .finish()
    }
}

/// The public half of a [`FrostPresignature`]: who signs and every
/// signer's nonce commitments (what the combiner needs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "C: Ciphersuite")]
pub struct FrostCommitments<C: Ciphersuite> {
    /// Keygen indices of the signers, in session order.
    pub signers: Vec<u16>,
    /// Every signer's commitments, by FROST identifier.
    pub commitments: BTreeMap<Identifier<C>, SigningCommitments<C>>,
}

/// One signer's signature share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "C: Ciphersuite")]
pub struct FrostPartial<C: Ciphersuite> {
    /// Keygen index of the signer (set by the combiner from the authenticated
    /// sender, not trusted from the wire).
    pub signer: u16,
    /// The share.
    pub share: SignatureShare<C>,
    /// SHA-256 of the signing package (message and every commitment) the
    /// signer signed: a signer that was shown other commitments (a peer
    /// equivocated in the commitment round) or another message is told apart
    /// from one that sent a bad share.
    pub package_hash: [u8; 32],
}

/// FROST identifier of keygen index `k`.
pub fn ident<C: Ciphersuite>(k: u16) -> Result<Identifier<C>, MpcError> {
    k.checked_add(1)
        .and_then(|i| Identifier::try_from(i).ok())
        .ok_or_else(|| MpcError::InvalidInput(format!("party index {k} out of range")))
}

/// The keygen index (of `candidates`) that identifier `id` stands for.
fn index_of<C: Ciphersuite>(id: &Identifier<C>, candidates: &[u16]) -> Option<u16> {
    candidates
        .iter()
        .copied()
        .find(|k| ident::<C>(*k).ok().as_ref() == Some(id))
}

/// Maps a crate error to ours, naming the culprit by its position in
/// `session` (keygen indices in session order) when the crate names one.
fn blame<C: Ciphersuite>(err: frost_core::Error<C>, session: &[u16]) -> MpcError {
    let reason = err.to_string();
    let culprit = err
        .culprits()
        .first()
        .and_then(|id| index_of(id, session))
        .and_then(|k| session.iter().position(|s| *s == k))
        .and_then(|pos| u16::try_from(pos).ok());
    match culprit {
        Some(party) => MpcError::PeerMisbehaved { party, reason },
        None => MpcError::Aborted(reason),
    }
}

fn internal<C: Ciphersuite>(err: frost_core::Error<C>) -> MpcError {
    MpcError::InvalidState(err.to_string())
}

/// Protocol messages of the FROST sessions (bound to their session by the frame).
#[derive(Serialize, Deserialize)]
#[serde(bound = "C: Ciphersuite")]
enum Msg<C: Ciphersuite> {
    /// DKG or refresh round 1 (broadcast).
    Round1(round1::Package<C>),
    /// DKG or refresh round 2 (p2p), with the hash of every round-1 package seen.
    Round2 {
        package: round2::Package<C>,
        echo: [u8; 32],
    },
    /// Nonce commitments (broadcast).
    Commitments(SigningCommitments<C>),
    /// Repair: a helper's delta for another helper (p2p).
    Delta(repairable::Delta<C>),
    /// Repair: a helper's sigma for the lost party (p2p).
    Sigma(repairable::Sigma<C>),
}

impl<C: Ciphersuite> Msg<C> {
    fn round(&self) -> u8 {
        match self {
            Msg::Round1(_) | Msg::Commitments(_) | Msg::Delta(_) => 1,
            Msg::Round2 { .. } | Msg::Sigma(_) => 2,
        }
    }
}

/// Collects one round's messages at a time; keeps early ones for later.
struct Inbox<S, C: Ciphersuite> {
    incoming: S,
    early: Vec<(u16, MessageType, Msg<C>)>,
    done_round: u8,
}

impl<S, C> Inbox<S, C>
where
    S: Stream<Item = Result<Incoming<Msg<C>>, DeliveryError>> + Unpin,
    C: Ciphersuite,
{
    fn new(incoming: S) -> Self {
        Inbox {
            incoming,
            early: Vec::new(),
            done_round: 0,
        }
    }

    /// Waits for exactly one round-`round` message of type `kind` from each of
    /// `from` (session indices). A duplicate, a message of a past round or of
    /// the wrong kind, or a frame the session adapter rejected aborts naming
    /// its sender.
    async fn round<T>(
        &mut self,
        round: u8,
        kind: MessageType,
        from: &[u16],
        pick: impl Fn(Msg<C>) -> Option<T>,
    ) -> Result<BTreeMap<u16, T>, MpcError> {
        let mut got = BTreeMap::new();
        let mut pending: Vec<(u16, MessageType, Msg<C>)> = std::mem::take(&mut self.early);
        loop {
            if got.len() == from.len() {
                self.done_round = round;
                // Anything still pending belongs to a later round.
                self.early.extend(pending);
                return Ok(got);
            }
            let (sender, msg_type, msg) = match pending.pop() {
                Some(m) => m,
                None => match self.incoming.next().await {
                    Some(Ok(inc)) => (inc.sender, inc.msg_type, inc.msg),
                    Some(Err(e)) => {
                        return Err(MpcError::PeerMisbehaved {
                            party: e.party,
                            reason: e.reason,
                        });
                    }
                    None => {
                        let absent: Vec<u16> = from
                            .iter()
                            .copied()
                            .filter(|p| !got.contains_key(p))
                            .collect();
                        return Err(MpcError::Transport(format!(
                            "session closed before round {round} arrived from parties {absent:?}"
                        )));
                    }
                },
            };
            let bad = |reason: String| MpcError::PeerMisbehaved {
                party: sender,
                reason,
            };
            let r = msg.round();
            if r > round {
                self.early.push((sender, msg_type, msg));
                continue;
            }
            if r <= self.done_round {
                return Err(bad(format!("round-{r} message after that round ended")));
            }
            if !from.contains(&sender) {
                return Err(bad(format!("not expected to send in round {round}")));
            }
            if msg_type != kind {
                return Err(bad(format!(
                    "round-{round} message sent as {msg_type:?}, expected {kind:?}"
                )));
            }
            let Some(value) = pick(msg) else {
                return Err(bad(format!("unexpected message in round {round}")));
            };
            if got.insert(sender, value).is_some() {
                return Err(bad(format!("two round-{round} messages")));
            }
        }
    }
}

fn transport(_: crate::session::SendClosed) -> MpcError {
    MpcError::Transport("outbound channel closed".into())
}

/// SHA-256 over every round-1 package, in identifier order.
fn echo_hash<C: Ciphersuite>(
    packages: &BTreeMap<Identifier<C>, round1::Package<C>>,
) -> Result<[u8; 32], MpcError> {
    let mut h = Sha256::new();
    for (id, p) in packages {
        let bytes = p.serialize().map_err(internal)?;
        h.update(id.serialize());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    Ok(h.finalize().into())
}

fn check_threshold(threshold: u16, n: u16) -> Result<(), MpcError> {
    if threshold < 2 || threshold > n {
        return Err(MpcError::InvalidInput(format!(
            "threshold {threshold} must be in 2..={n}"
        )));
    }
    Ok(())
}

/// Checks a signer list against a share and a session.
fn check_signers<C: FrostSuite>(
    share: &FrostKeyShare<C>,
    io: &SessionIo,
    parties_at_keygen: &[u16],
) -> Result<(), MpcError> {
    let t = usize::from(share.min_signers());
    let n = share.public.package.verifying_shares().len();
    let mut sorted = parties_at_keygen.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != parties_at_keygen.len()
        || parties_at_keygen.len() < t
        || parties_at_keygen.len() > n
        || usize::from(io.parties) != parties_at_keygen.len()
    {
        return Err(MpcError::InvalidInput(format!(
            "{t} to {n} distinct signers must take part, got {parties_at_keygen:?}"
        )));
    }
    if parties_at_keygen.get(usize::from(io.me)) != Some(&share.index) {
        return Err(MpcError::InvalidInput(
            "our position in the signer list does not hold our keygen index".into(),
        ));
    }
    Ok(())
}

/// Round-1 packages by sender, round-2 packages by sender, and every
/// round-1 package including our own.
type Exchanged<C> = (
    BTreeMap<Identifier<C>, round1::Package<C>>,
    BTreeMap<Identifier<C>, round2::Package<C>>,
    BTreeMap<Identifier<C>, round1::Package<C>>,
);

/// The two rounds DKG and refresh share: our round-1 package broadcast, the
/// others' collected; our round-2 packages sent point to point with the echo
/// of round 1, the others' collected and their echoes checked. The parties
/// are `parties_at_keygen` in session order; culprits are named by session
/// position.
async fn dkg_rounds<C, S1, S2>(
    io: SessionIo,
    parties_at_keygen: &[u16],
    part1: impl FnOnce(Identifier<C>) -> Result<(S1, round1::Package<C>), frost_core::Error<C>>,
    part2: impl FnOnce(
        S1,
        &BTreeMap<Identifier<C>, round1::Package<C>>,
    ) -> Result<
        (S2, BTreeMap<Identifier<C>, round2::Package<C>>),
        frost_core::Error<C>,
    >,
) -> Result<(S2, Exchanged<C>), MpcError>
where
    C: FrostSuite,
{
    let me = io.me;
    let others: Vec<u16> = (0..io.parties).filter(|p| *p != me).collect();
    let k = parties_at_keygen
        .get(usize::from(me))
        .copied()
        .ok_or_else(|| MpcError::InvalidInput("our position is outside the party list".into()))?;
    let id = ident::<C>(k)?;
    let (incoming, mut outgoing, _observed) = delivery::<Msg<C>>(io);
    let mut inbox = Inbox::new(incoming);

    let (secret1, package1) = part1(id).map_err(|e| blame(e, parties_at_keygen))?;
    outgoing
        .send(Outgoing::broadcast(Msg::Round1(package1.clone())))
        .await
        .map_err(transport)?;
    let r1 = inbox
        .round(1, MessageType::Broadcast, &others, |m| match m {
            Msg::Round1(p) => Some(p),
            _ => None,
        })
        .await?;
    let r1 = by_identifier::<C, _>(by_keygen(r1, parties_at_keygen)?)?;
    let mut seen = r1.clone();
    seen.insert(id, package1);
    let echo = echo_hash(&seen)?;

    let (secret2, out2) = part2(secret1, &r1).map_err(|e| blame(e, parties_at_keygen))?;
    for (to, package) in out2 {
        let to = index_of(&to, parties_at_keygen)
            .and_then(|k| parties_at_keygen.iter().position(|p| *p == k))
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| MpcError::InvalidState("unknown peer".into()))?;
        outgoing
            .send(Outgoing::p2p(to, Msg::Round2 { package, echo }))
            .await
            .map_err(transport)?;
    }
    let r2 = inbox
        .round(2, MessageType::P2P, &others, |m| match m {
            Msg::Round2 { package, echo } => Some((package, echo)),
            _ => None,
        })
        .await?;
    let r2 = check_echo::<C>(by_keygen(r2, parties_at_keygen)?, &echo)?;
    Ok((secret2, (r1, r2, seen)))
}

/// Runs the DKG (`threshold`-of-`io.parties`); the keygen index is `io.me`.
pub async fn run_dkg<C: FrostSuite>(
    io: SessionIo,
    threshold: u16,
) -> Result<FrostKeyShare<C>, MpcError> {
    let (me, n) = (io.me, io.parties);
    check_threshold(threshold, n)?;
    let all: Vec<u16> = (0..n).collect();
    let (secret2, (r1, r2, seen)) = dkg_rounds(
        io,
        &all,
        |id| dkg::part1::<C, _>(id, n, threshold, OsRng),
        dkg::part2,
    )
    .await?;
    let (key_package, package) = dkg::part3(&secret2, &r1, &r2).map_err(|e| blame(e, &all))?;
    let commitments: BTreeMap<_, _> = seen.iter().map(|(i, p)| (*i, p.commitment())).collect();
    let dkg_key = *PublicKeyPackage::from_dkg_commitments(&commitments)
        .map_err(internal)?
        .verifying_key();
    FrostKeyShare::new(me, key_package, FrostPublicKey { package, dkg_key })
}
/// Re-keys messages from session positions to keygen indices.
fn by_keygen<T>(
    m: BTreeMap<u16, T>,
    parties_at_keygen: &[u16],
) -> Result<BTreeMap<u16, T>, MpcError> {
    m.into_iter()
        .map(|(pos, v)| {
            parties_at_keygen
                .get(usize::from(pos))
                .map(|k| (*k, v))
                .ok_or_else(|| MpcError::InvalidState("sender outside the signer list".into()))
        })
        .collect()
}

fn by_identifier<C: Ciphersuite, T>(
    m: BTreeMap<u16, T>,
) -> Result<BTreeMap<Identifier<C>, T>, MpcError> {
    m.into_iter()
        .map(|(k, v)| Ok((ident::<C>(k)?, v)))
        .collect()
}

fn check_echo<C: Ciphersuite>(
    r2: BTreeMap<u16, (round2::Package<C>, [u8; 32])>,
    echo: &[u8; 32],
) -> Result<BTreeMap<Identifier<C>, round2::Package<C>>, MpcError> {
    if let Some((from, _)) = r2.iter().find(|(_, (_, e))| e != echo) {
        return Err(MpcError::Aborted(format!(
            "round-1 broadcast was not consistent: party {from} saw other round-1 data (a party equivocated)"
        )));
    }
    by_identifier(r2.into_iter().map(|(k, (p, _))| (k, p)).collect())
}

/// Runs the commitment round among the signers `parties_at_keygen`,
/// producing one pool item.
pub async fn run_precompute<C: FrostSuite>(
    io: SessionIo,
    share: &FrostKeyShare<C>,
    parties_at_keygen: &[u16],
) -> Result<FrostPresignature<C>, MpcError> {
    check_signers(share, &io, parties_at_keygen)?;
    let me = io.me;
    let others: Vec<u16> = (0..io.parties).filter(|p| *p != me).collect();
    let (incoming, mut outgoing, _observed) = delivery::<Msg<C>>(io);
    let mut inbox = Inbox::new(incoming);
    let (nonces, mine) = frost_core::round1::commit(share.key_package.signing_share(), &mut OsRng);
    outgoing
        .send(Outgoing::broadcast(Msg::Commitments(mine)))
        .await
        .map_err(transport)?;
    let theirs = inbox
        .round(1, MessageType::Broadcast, &others, |m| match m {
            Msg::Commitments(c) => Some(c),
            _ => None,
        })
        .await?;
    let mut commitments = BTreeMap::new();
    commitments.insert(ident::<C>(share.index)?, mine);
    for (pos, c) in theirs {
        let k = parties_at_keygen
            .get(usize::from(pos))
            .copied()
            .ok_or_else(|| MpcError::InvalidState("sender outside the signer list".into()))?;
        commitments.insert(ident::<C>(k)?, c);
    }
    Ok(FrostPresignature {
        me: share.index,
        signers: parties_at_keygen.to_vec(),
        nonces,
        commitments,
    })
}

/// The public half of a pool item.
pub fn presignature_public<C: FrostSuite>(pre: &FrostPresignature<C>) -> FrostCommitments<C> {
    FrostCommitments {
        signers: pre.signers.clone(),
        commitments: pre.commitments.clone(),
    }
}

fn package_hash<C: Ciphersuite>(package: &SigningPackage<C>) -> Result<[u8; 32], MpcError> {
    let bytes = package.serialize().map_err(internal)?;
    Ok(Sha256::digest(bytes).into())
}

/// This signer's share of the signature over `message`, consuming the pool item.
pub fn partial_sign<C: FrostSuite>(
    presignature: FrostPresignature<C>,
    share: &FrostKeyShare<C>,
    message: &[u8],
) -> Result<FrostPartial<C>, MpcError> {
    if presignature.me != share.index {
        return Err(MpcError::InvalidInput(format!(
            "presignature of party {} used with the share of party {}",
            presignature.me, share.index
        )));
    }
    let id = ident::<C>(share.index)?;
    if presignature.commitments.get(&id) != Some(presignature.nonces.commitments()) {
        return Err(MpcError::InvalidState(
            "presignature's commitments do not hold its own nonces".into(),
        ));
    }
    let package = SigningPackage::new(presignature.commitments.clone(), message);
    let share_out = frost_core::round2::sign(&package, &presignature.nonces, &share.key_package)
        .map_err(internal)?;
    Ok(FrostPartial {
        signer: share.index,
        share: share_out,
        package_hash: package_hash(&package)?,
    })
    // `presignature` drops here: its nonces are zeroized.
}

/// This signer's share of the signature over `message` by the key's child
/// at `path` ([`hd`]), consuming the pool item: the nonces committed under
/// the master key sign for any child, since FROST's commitments do not
/// depend on the key. Every signer must use the same path, and the combiner
/// the child's public form ([`FrostSuite::derive_public`]).
pub fn partial_sign_at<C: FrostSuite>(
    presignature: FrostPresignature<C>,
    share: &FrostKeyShare<C>,
    message: &[u8],
    path: &DerivationPath,
) -> Result<FrostPartial<C>, MpcError> {
    if path.is_master() {
        return partial_sign(presignature, share, message);
    }
    let child = C::derive_share(share, path)?;
    partial_sign(presignature, &child, message)
}

/// Combines the signers' partials into a signature over `message`, verified
/// under the group key. A share that does not verify against its signer's
/// verifying share fails with [`MpcError::InvalidSignatureShare`] naming
/// every such signer (keygen indices).
pub fn combine<C: FrostSuite>(
    key: &FrostPublicKey<C>,
    presignature: &FrostCommitments<C>,
    message: &[u8],
    partials: &[FrostPartial<C>],
) -> Result<FrostSignature<C>, MpcError> {
    let package = SigningPackage::new(presignature.commitments.clone(), message);
    let expected = package_hash(&package)?;
    let mut shares = BTreeMap::new();
    for p in partials {
        if !presignature.signers.contains(&p.signer) {
            return Err(MpcError::InvalidInput(format!(
                "partial from party {}, not a signer of this presignature",
                p.signer
            )));
        }
        if p.package_hash != expected {
            return Err(MpcError::WrongSigningPackage { party: p.signer });
        }
        if shares.insert(ident::<C>(p.signer)?, p.share).is_some() {
            return Err(MpcError::InvalidInput(format!(
                "two partials from party {}",
                p.signer
            )));
        }
    }
    if shares.len() != presignature.signers.len() || shares.len() != presignature.commitments.len()
    {
        return Err(MpcError::InvalidInput(format!(
            "{} partials for {} signers",
            shares.len(),
            presignature.signers.len()
        )));
    }
    frost_core::aggregate_custom(
        &package,
        &shares,
        &key.package,
        CheaterDetection::AllCheaters,
    )
    .map_err(|e| {
        let parties: Vec<u16> = e
            .culprits()
            .iter()
            .filter_map(|id| index_of(id, &presignature.signers))
            .collect();
        if parties.is_empty() {
            MpcError::InvalidSignature
        } else {
            MpcError::InvalidSignatureShare { parties }
        }
    })
}

/// Verifies a signature over `message` under the group key.
pub fn verify<C: FrostSuite>(
    key: &FrostPublicKey<C>,
    message: &[u8],
    signature: &FrostSignature<C>,
) -> Result<(), MpcError> {
    key.verifying_key()
        .verify(message, signature)
        .map_err(|_| MpcError::InvalidSignature)
}

/// The signature's standard 64-byte encoding (BIP340 `R.x || s`; RFC 8032 `R || S`).
pub fn signature_bytes<C: FrostSuite>(signature: &FrostSignature<C>) -> Vec<u8> {
    signature.serialize().unwrap_or_default()
}

/// Refreshes the shares of the parties `parties_at_keygen` (in session
/// order, at least the threshold; parties left out are removed from the
/// group): same group key, new shares. Old shares do not combine with new
/// ones; the caller replaces the old share once the new one is stored.
pub async fn run_refresh<C: FrostSuite>(
    io: SessionIo,
    share: &FrostKeyShare<C>,
    parties_at_keygen: &[u16],
) -> Result<FrostKeyShare<C>, MpcError> {
    check_signers(share, &io, parties_at_keygen)?;
    let (n, t) = (io.parties, share.min_signers());
    let (secret2, (r1, r2, _)) = dkg_rounds(
        io,
        parties_at_keygen,
        |id| refresh::refresh_dkg_part1::<C, _>(id, n, t, OsRng),
        refresh::refresh_dkg_part2,
    )
    .await?;
    let (key_package, package) = refresh::refresh_dkg_shares(
        &secret2,
        &r1,
        &r2,
        share.public.package.clone(),
        share.key_package.clone(),
    )
    .map_err(|e| blame(e, parties_at_keygen))?;
    if package.verifying_key() != share.public.package.verifying_key() {
        return Err(MpcError::InvalidState(
            "refresh changed the group key".into(),
        ));
    }
    FrostKeyShare::new(
        share.index,
        key_package,
        FrostPublicKey {
            package,
            dkg_key: share.public.dkg_key,
        },
    )
}

/// Session layout of a repair: the helpers (at least the threshold, keygen
/// indices) in session positions `0..helpers.len()`, the party that lost its
/// share last.
fn check_repair(
    io: &SessionIo,
    threshold: u16,
    helpers: &[u16],
    lost: u16,
) -> Result<(), MpcError> {
    let mut sorted = helpers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != helpers.len()
        || helpers.len() < usize::from(threshold)
        || helpers.contains(&lost)
        || usize::from(io.parties) != helpers.len() + 1
    {
        return Err(MpcError::InvalidInput(format!(
            "repair of party {lost} needs at least {threshold} distinct other helpers, got {helpers:?}"
        )));
    }
    Ok(())
}

/// A helper's part in repairing party `lost`'s share: sends one delta to each
/// other helper and one sigma to the lost party; learns nothing of its share.
pub async fn run_repair_help<C: FrostSuite>(
    io: SessionIo,
    share: &FrostKeyShare<C>,
    helpers: &[u16],
    lost: u16,
) -> Result<(), MpcError> {
    check_repair(&io, share.min_signers(), helpers, lost)?;
    if helpers.get(usize::from(io.me)) != Some(&share.index) {
        return Err(MpcError::InvalidInput(
            "our position in the helper list does not hold our keygen index".into(),
        ));
    }
    let me = io.me;
    let lost_pos = io.parties - 1;
    let other_helpers: Vec<u16> = (0..lost_pos).filter(|p| *p != me).collect();
    let (incoming, mut outgoing, _observed) = delivery::<Msg<C>>(io);
    let mut inbox = Inbox::new(incoming);
    let helper_ids: Vec<Identifier<C>> = helpers
        .iter()
        .map(|k| ident::<C>(*k))
        .collect::<Result<_, _>>()?;
    let deltas = repairable::repair_share_part1(
        &helper_ids,
        &share.key_package,
        &mut OsRng,
        ident::<C>(lost)?,
    )
    .map_err(internal)?;
    let mut mine = None;
    for (to, delta) in deltas {
        let k = index_of(&to, helpers)
            .ok_or_else(|| MpcError::InvalidState("unknown helper".into()))?;
        if k == share.index {
            mine = Some(delta);
            continue;
        }
        let pos = helpers
            .iter()
            .position(|h| *h == k)
            .and_then(|p| u16::try_from(p).ok());
        let pos = pos.ok_or_else(|| MpcError::InvalidState("unknown helper".into()))?;
        outgoing
            .send(Outgoing::p2p(pos, Msg::Delta(delta)))
            .await
            .map_err(transport)?;
    }
    let mine = mine.ok_or_else(|| MpcError::InvalidState("no delta for ourselves".into()))?;
    let received = inbox
        .round(1, MessageType::P2P, &other_helpers, |m| match m {
            Msg::Delta(d) => Some(d),
            _ => None,
        })
        .await?;
    let mut all: Vec<_> = received.into_values().collect();
    all.push(mine);
    let sigma = repairable::repair_share_part2(&all);
    outgoing
        .send(Outgoing::p2p(lost_pos, Msg::Sigma(sigma)))
        .await
        .map_err(transport)?;
    Ok(())
}

/// The lost party's part of a repair: rebuilds its share from the helpers'
/// sigmas and checks it against its verifying share in `public`, which the
/// caller must take from a trusted record of the key (not from the helpers).
pub async fn run_repair_recover<C: FrostSuite>(
    io: SessionIo,
    public: &FrostPublicKey<C>,
    helpers: &[u16],
    lost: u16,
) -> Result<FrostKeyShare<C>, MpcError> {
    let threshold = public
        .min_signers()
        .ok_or_else(|| MpcError::InvalidState("public key package without threshold".into()))?;
    check_repair(&io, threshold, helpers, lost)?;
    if io.me != io.parties - 1 {
        return Err(MpcError::InvalidInput(
            "the party being repaired takes the last session position".into(),
        ));
    }
    let helper_pos: Vec<u16> = (0..io.parties - 1).collect();
    let (incoming, _outgoing, _observed) = delivery::<Msg<C>>(io);
    let mut inbox = Inbox::new(incoming);
    let sigmas = inbox
        .round(2, MessageType::P2P, &helper_pos, |m| match m {
            Msg::Sigma(s) => Some(s),
            _ => None,
        })
        .await?;
    let sigmas: Vec<_> = sigmas.into_values().collect();
    let id = ident::<C>(lost)?;
    let key_package =
        repairable::repair_share_part3(&sigmas, id, &public.package).map_err(internal)?;
    if public.package.verifying_shares().get(&id) != Some(key_package.verifying_share()) {
        return Err(MpcError::Aborted(
            "repaired share does not match the group's verifying share: a helper sent bad data"
                .into(),
        ));
    }
    FrostKeyShare::new(lost, key_package, public.clone())
}

impl<C: FrostSuite> SignatureScheme for Frost<C> {
    const ID: SchemeId = C::SCHEME;
    type KeygenSetup = ();
    type KeyShare = FrostKeyShare<C>;
    type PublicKey = FrostPublicKey<C>;
    type Presignature = FrostPresignature<C>;
    type PresignaturePublic = FrostCommitments<C>;
    type PartialSignature = FrostPartial<C>;
    type Signature = FrostSignature<C>;

    async fn keygen(io: SessionIo, threshold: u16, _: ()) -> Result<FrostKeyShare<C>, MpcError> {
        run_dkg(io, threshold).await
    }

    fn public_key(share: &FrostKeyShare<C>) -> FrostPublicKey<C> {
        share.public.clone()
    }

    fn public_key_bytes(key: &FrostPublicKey<C>) -> Vec<u8> {
        key.key_bytes()
    }

    fn precompute<'a>(
        io: SessionIo,
        share: &'a FrostKeyShare<C>,
        parties_at_keygen: &'a [u16],
    ) -> impl Future<Output = Result<FrostPresignature<C>, MpcError>> + 'a {
        run_precompute(io, share, parties_at_keygen)
    }

    fn presignature_public(presignature: &FrostPresignature<C>) -> FrostCommitments<C> {
        presignature_public(presignature)
    }

    fn partial_sign(
        presignature: FrostPresignature<C>,
        share: &FrostKeyShare<C>,
        message: &[u8],
    ) -> Result<FrostPartial<C>, MpcError> {
        partial_sign(presignature, share, message)
    }

    fn combine(
        key: &FrostPublicKey<C>,
        presignature: &FrostCommitments<C>,
        message: &[u8],
        partials: &[FrostPartial<C>],
    ) -> Result<FrostSignature<C>, MpcError> {
        combine(key, presignature, message, partials)
    }

    fn verify(
        key: &FrostPublicKey<C>,
        message: &[u8],
        signature: &FrostSignature<C>,
    ) -> Result<(), MpcError> {
        verify(key, message, signature)
    }

    fn signature_bytes(signature: &FrostSignature<C>) -> Vec<u8> {
        signature_bytes(signature)
    }
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, MpcError> {
    serde_json::to_vec(value).map_err(|e| MpcError::InvalidState(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, MpcError> {
    serde_json::from_slice(bytes).map_err(|e| MpcError::InvalidInput(format!("{what}: {e}")))
}

impl<C: FrostSuite> crate::erased::Erasable for Frost<C> {
    /// Signing takes a commitment round first (one pool item), then one
    /// local round.
    const INTERACTIVE: bool = false;
    /// The DKG needs no Paillier keys.
    const NEEDS_AUX: bool = false;

    fn keygen_setup(_: Option<&[u8]>) -> Result<(), MpcError> {
        Ok(())
    }

    /// The public key package (group key, every verifying share) and the
    /// DKG key, JSON: deterministic, so every honest party returns the same
    /// bytes.
    fn encode_public(key: &FrostPublicKey<C>) -> Result<Vec<u8>, MpcError> {
        json(key)
    }

    fn decode_public(bytes: &[u8]) -> Result<FrostPublicKey<C>, MpcError> {
        from_json(bytes, "FROST public key package")
    }

    /// Who signs and every signer's commitments, JSON (deterministic).
    fn encode_presignature_public(p: &FrostCommitments<C>) -> Result<Vec<u8>, MpcError> {
        json(p)
    }

    fn decode_presignature_public(bytes: &[u8]) -> Result<FrostCommitments<C>, MpcError> {
        from_json(bytes, "FROST nonce commitments")
    }

    fn attribute(partial: &mut FrostPartial<C>, keygen_index: u16) {
        partial.signer = keygen_index;
    }

    const NO_DERIVATION: Option<&'static str> = C::NO_DERIVATION;

    /// FROST keys have no chain code of their own ([`hd`]).
    fn derive_public(
        key: &FrostPublicKey<C>,
        _chain_code: Option<[u8; 32]>,
        path: &DerivationPath,
    ) -> Result<FrostPublicKey<C>, MpcError> {
        C::derive_public(key, path)
    }

    fn derivation_chain_code(
        key: &FrostPublicKey<C>,
        _chain_code: Option<[u8; 32]>,
    ) -> Option<[u8; 32]> {
        C::derivation_chain_code(key)
    }

    fn partial_sign_at(
        presignature: FrostPresignature<C>,
        share: &FrostKeyShare<C>,
        message: &[u8],
        path: &DerivationPath,
    ) -> Result<FrostPartial<C>, MpcError> {
        partial_sign_at(presignature, share, message, path)
    }

    fn check_message(message: &[u8]) -> Result<(), MpcError> {
        crate::erased::check_schnorr_message(message)
    }

    const REFRESHABLE: bool = true;

    fn refresh(
        io: SessionIo,
        share: FrostKeyShare<C>,
        parties_at_keygen: Vec<u16>,
    ) -> crate::erased::LocalFuture<FrostKeyShare<C>> {
        Box::pin(async move { run_refresh(io, &share, &parties_at_keygen).await })
    }

    fn repair_help(
        io: SessionIo,
        share: FrostKeyShare<C>,
        helpers: Vec<u16>,
        lost: u16,
    ) -> crate::erased::LocalFuture<()> {
        Box::pin(async move { run_repair_help(io, &share, &helpers, lost).await })
    }

    fn repair_recover(
        io: SessionIo,
        public: FrostPublicKey<C>,
        helpers: Vec<u16>,
        lost: u16,
    ) -> crate::erased::LocalFuture<FrostKeyShare<C>> {
        Box::pin(async move { run_repair_recover(io, &public, &helpers, lost).await })
    }
}

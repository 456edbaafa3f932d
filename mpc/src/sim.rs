//! In-process simulation: every party in one process, wired by channels.
//!
//! This is the library baseline the cluster is benchmarked against, and the
//! harness for adversarial tests: a [`Tamper`] hook sees every frame in
//! flight and may rewrite it, as a malicious party or network would.

use std::sync::Arc;

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use rand_core::{OsRng, RngCore};

use crate::eid::{ExecutionId, SessionKind};
use crate::error::MpcError;
use crate::frost::{self, FrostKeyShare, FrostPublicKey, FrostSuite};
use crate::protocol::{self, AuxInfo, KeyShare, Presignature, Primes, Signature};
use crate::scheme::{Cggmp21Ecdsa, SignatureScheme};
use crate::session::{Inbound, Outbound, SessionIo};

/// Rewrites a frame in flight: `(from, to, frame bytes)`.
pub type Tamper = Arc<dyn Fn(u16, u16, &mut Vec<u8>) + Send + Sync>;

/// Creates `n` connected session endpoints and the router future that moves
/// frames between them until every party has finished.
pub fn connect(
    n: u16,
    eid: ExecutionId,
    tamper: Option<Tamper>,
) -> (Vec<SessionIo>, impl Future<Output = ()>) {
    let mut ios = Vec::new();
    let mut inbound_tx = Vec::new();
    let mut outbound_rx = Vec::new();
    for me in 0..n {
        let (itx, irx) = mpsc::channel(4096);
        let (otx, orx) = mpsc::unbounded();
        ios.push(SessionIo {
            eid,
            me,
            parties: n,
            inbound: irx,
            outbound: otx,
            cancel: crate::cancel::CancelToken::new(),
        });
        inbound_tx.push(itx);
        outbound_rx.push(orx.map(move |o: Outbound| (me, o)));
    }
    let router = async move {
        let mut all = futures::stream::select_all(outbound_rx);
        while let Some((from, out)) = all.next().await {
            let targets: Vec<u16> = match out.to {
                Some(j) => vec![j],
                None => (0..n).filter(|j| *j != from).collect(),
            };
            for to in targets {
                let mut bytes = out.bytes.clone();
                if let Some(t) = &tamper {
                    t(from, to, &mut bytes);
                }
                if let Some(tx) = inbound_tx.get_mut(usize::from(to)) {
                    // A party that already finished has dropped its receiver.
                    let _ = tx.send(Inbound { from, bytes }).await;
                }
            }
        }
    };
    (ios, router)
}

/// Runs one future per party next to the router; the first error aborts all.
pub async fn run_parties<T, F>(
    parties: Vec<F>,
    router: impl Future<Output = ()>,
) -> Result<Vec<T>, MpcError>
where
    F: Future<Output = Result<T, MpcError>>,
{
    let (_, out) = futures::future::join(router, futures::future::try_join_all(parties)).await;
    out
}

/// A fresh random execution id for a simulated session.
pub fn random_eid(kind: SessionKind) -> ExecutionId {
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    ExecutionId::derive(kind, "sim", &[], &nonce)
}

/// Aux info for `primes.len()` parties.
pub async fn aux_info(
    primes: Vec<Primes>,
    tamper: Option<Tamper>,
) -> Result<Vec<AuxInfo>, MpcError> {
    let n = u16::try_from(primes.len())
        .map_err(|_| MpcError::InvalidInput("too many parties".into()))?;
    let (ios, router) = connect(n, random_eid(SessionKind::AuxInfo), tamper);
    let futs = ios
        .into_iter()
        .zip(primes)
        .map(|(io, p)| protocol::run_aux_info(io, p))
        .collect();
    run_parties(futs, router).await
}

/// Threshold keygen over existing aux info, completing the shares.
pub async fn keygen(threshold: u16, aux: &[AuxInfo]) -> Result<Vec<KeyShare>, MpcError> {
    keygen_with::<Cggmp21Ecdsa>(threshold, aux.to_vec(), None).await
}

/// Presignatures for the signers at keygen indices `signers`.
pub async fn presign(
    shares: &[KeyShare],
    signers: &[u16],
    tamper: Option<Tamper>,
) -> Result<Vec<Presignature>, MpcError> {
    precompute_with::<Cggmp21Ecdsa>(shares, signers, tamper).await
}

/// Interactive signing by the signers at keygen indices `signers`.
pub async fn sign(
    shares: &[KeyShare],
    signers: &[u16],
    digest: &[u8; 32],
    tamper: Option<Tamper>,
) -> Result<Signature, MpcError> {
    let t = u16::try_from(signers.len())
        .map_err(|_| MpcError::InvalidInput("too many signers".into()))?;
    let (ios, router) = connect(t, random_eid(SessionKind::Sign), tamper);
    let mut futs = Vec::new();
    for (io, k) in ios.into_iter().zip(signers) {
        let share = shares
            .get(usize::from(*k))
            .ok_or_else(|| MpcError::InvalidInput(format!("no share {k}")))?;
        futs.push(protocol::run_sign(io, share, signers, digest));
    }
    let sigs = run_parties(futs, router).await?;
    sigs.into_iter()
        .next()
        .ok_or(MpcError::InvalidInput("no signers".into()))
}

/// Key generation of any scheme behind the seam, one setup per party
/// (ECDSA: each party's aux info; FROST: `()`).
pub async fn keygen_with<S: SignatureScheme>(
    threshold: u16,
    setups: Vec<S::KeygenSetup>,
    tamper: Option<Tamper>,
) -> Result<Vec<S::KeyShare>, MpcError> {
    let n = u16::try_from(setups.len())
        .map_err(|_| MpcError::InvalidInput("too many parties".into()))?;
    let (ios, router) = connect(n, random_eid(SessionKind::Keygen), tamper);
    let futs = ios
        .into_iter()
        .zip(setups)
        .map(|(io, setup)| S::keygen(io, threshold, setup))
        .collect();
    run_parties(futs, router).await
}

/// Precomputation (presignatures, FROST nonces) of any scheme among the
/// signers at keygen indices `signers`; `shares[k]` is party `k`'s share.
pub async fn precompute_with<S: SignatureScheme>(
    shares: &[S::KeyShare],
    signers: &[u16],
    tamper: Option<Tamper>,
) -> Result<Vec<S::Presignature>, MpcError> {
    let t = u16::try_from(signers.len())
        .map_err(|_| MpcError::InvalidInput("too many signers".into()))?;
    let (ios, router) = connect(t, random_eid(SessionKind::Presign), tamper);
    let mut futs = Vec::new();
    for (io, k) in ios.into_iter().zip(signers) {
        let share = shares
            .get(usize::from(*k))
            .ok_or_else(|| MpcError::InvalidInput(format!("no share {k}")))?;
        futs.push(S::precompute(io, share, signers));
    }
    run_parties(futs, router).await
}

/// Precomputes, signs `message` with the signers at keygen indices
/// `signers` and combines: the whole signing path of any scheme.
pub async fn sign_with<S: SignatureScheme>(
    shares: &[S::KeyShare],
    signers: &[u16],
    message: &[u8],
) -> Result<S::Signature, MpcError> {
    let presignatures = precompute_with::<S>(shares, signers, None).await?;
    let public = presignatures
        .first()
        .map(S::presignature_public)
        .ok_or_else(|| MpcError::InvalidInput("no signers".into()))?;
    let mut partials = Vec::new();
    for (pre, k) in presignatures.into_iter().zip(signers) {
        let share = shares
            .get(usize::from(*k))
            .ok_or_else(|| MpcError::InvalidInput(format!("no share {k}")))?;
        partials.push(S::partial_sign(pre, share, message)?);
    }
    let key = shares
        .first()
        .map(S::public_key)
        .ok_or_else(|| MpcError::InvalidInput("no shares".into()))?;
    S::combine(&key, &public, message, &partials)
}

/// FROST share refresh among the parties at keygen indices `parties`
/// (`shares[k]` is party `k`'s share); returns their new shares in that order.
pub async fn frost_refresh<C: FrostSuite>(
    shares: &[FrostKeyShare<C>],
    parties: &[u16],
    tamper: Option<Tamper>,
) -> Result<Vec<FrostKeyShare<C>>, MpcError> {
    let n = u16::try_from(parties.len())
        .map_err(|_| MpcError::InvalidInput("too many parties".into()))?;
    let (ios, router) = connect(n, random_eid(SessionKind::Keygen), tamper);
    let mut futs = Vec::new();
    for (io, k) in ios.into_iter().zip(parties) {
        let share = shares
            .get(usize::from(*k))
            .ok_or_else(|| MpcError::InvalidInput(format!("no share {k}")))?;
        futs.push(frost::run_refresh(io, share, parties));
    }
    run_parties(futs, router).await
}

/// FROST repair of party `lost`'s share by the helpers (keygen indices;
/// `shares[k]` is party `k`'s share), against the key's public record.
pub async fn frost_repair<C: FrostSuite>(
    shares: &[FrostKeyShare<C>],
    helpers: &[u16],
    lost: u16,
    public: &FrostPublicKey<C>,
    tamper: Option<Tamper>,
) -> Result<FrostKeyShare<C>, MpcError> {
    let n = u16::try_from(helpers.len() + 1)
        .map_err(|_| MpcError::InvalidInput("too many parties".into()))?;
    let (ios, router) = connect(n, random_eid(SessionKind::Keygen), tamper);
    type Fut<'a, C> =
        std::pin::Pin<Box<dyn Future<Output = Result<Option<FrostKeyShare<C>>, MpcError>> + 'a>>;
    let mut futs: Vec<Fut<'_, C>> = Vec::new();
    for (pos, io) in ios.into_iter().enumerate() {
        match helpers.get(pos) {
            Some(k) => {
                let share = shares
                    .get(usize::from(*k))
                    .ok_or_else(|| MpcError::InvalidInput(format!("no share {k}")))?;
                futs.push(Box::pin(async move {
                    frost::run_repair_help(io, share, helpers, lost)
                        .await
                        .map(|()| None)
                }));
            }
            None => futs.push(Box::pin(async move {
                frost::run_repair_recover(io, public, helpers, lost)
                    .await
                    .map(Some)
            })),
        }
    }
    let out = run_parties(futs, router).await?;
    out.into_iter()
        .flatten()
        .next()
        .ok_or_else(|| MpcError::InvalidState("the lost party returned no share".into()))
}

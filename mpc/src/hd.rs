//! HD derivation of wallet keys: non-hardened BIP32 / SLIP-10 paths.
//!
//! # Design
//!
//! A wallet key is a threshold key whose secret no party ever holds, so
//! only *non-hardened* derivation is possible: a child public key is the
//! parent's plus `I_L·G`, with `I = HMAC-SHA512(chain code, parent SEC1 ||
//! index)`, all public. Anyone with the extended public key (public key and
//! chain code) derives every child address; signing with a child key adds
//! the same public shift to the presignature (cggmp21's `hd-wallet`
//! feature), so the pool of presignatures of the master key serves every
//! derived address and no new key generation is needed.
//!
//! Chain code. Keys generated since HD support carry a chain code that the
//! signers generate jointly in the keygen (cggmp21 `hd_wallet(true)`: every
//! party commits to a random contribution, the chain code is their XOR), so
//! nobody but the cluster (signers, coordinator) can link derived addresses
//! to each other. Keys generated before have none, and cggmp21 cannot add
//! one afterwards without a new keygen (which would change the key and its
//! address, so every existing balance would have to move). For those, the
//! chain code is derived from the public key itself
//! ([`legacy_chain_code`]): deterministic, so every signer and the
//! coordinator compute the same one with nothing new to store or agree on,
//! and derivation stays exactly BIP32. The price is privacy, not safety:
//! whoever learns such a key's master public key (it is revealed once the
//! master address spends) can derive and link its child addresses. No key
//! material becomes known either way (a child private key, which with the
//! chain code would reveal the parent's, never exists in one place).
//!
//! Schemes. This module derives secp256k1 public keys and ECDSA partial
//! signatures; each scheme says what its child is through the seam
//! (`ThresholdScheme::derive_public`, `partial_sign_at`): ECDSA keys are
//! derived here; FROST taproot keys derive from their BIP341 internal key
//! with its legacy chain code (FROST's DKG makes no joint chain code) and
//! every signer derives its child share itself ([`crate::frost::hd`]);
//! Ed25519 keys have no non-hardened children (SLIP-10 defines only
//! hardened ed25519 derivation, which needs the whole private key) and
//! refuse every path but `m` ([`MpcError::Unsupported`]).
//!
//! SLIP-10 and BIP32 agree for secp256k1 except where `I_L` is not a valid
//! scalar or the child is the point at infinity (probability about
//! 2^-127): BIP32 skips the index, SLIP-10 (used here, as by cggmp21)
//! hashes again. Both are deterministic; no such index is known.

use std::fmt;
use std::str::FromStr;

use cggmp21::generic_ec::{NonZero, Point, Scalar};
use cggmp21::hd_wallet::{self, NonHardenedIndex, Slip10};
use cggmp21::supported_curves::Secp256k1;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::MpcError;
use crate::protocol::{KeyShare, PartialSignature, Presignature, data_to_sign};

/// Deepest path accepted: deposit schemes use two or three levels
/// (`m/account/index`); the bound keeps a request's work small.
pub const MAX_DEPTH: usize = 16;

/// Domain separator of [`legacy_chain_code`].
pub const LEGACY_CHAIN_CODE_DOMAIN: &[u8] = b"custos.hd-chain-code.v1\x00";

fn bad_path(path: &str, reason: impl Into<String>) -> MpcError {
    MpcError::InvalidDerivationPath {
        path: path.chars().take(64).collect(),
        reason: reason.into(),
    }
}

/// A non-hardened derivation path, `m/i/j/...` with every index below
/// 2^31. One path has exactly one text form (no leading zeros, no
/// whitespace), because the text is what approvals and digests bind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DerivationPath(Vec<u32>);

impl DerivationPath {
    /// The master key itself (`m`).
    pub fn master() -> Self {
        Self(Vec::new())
    }

    /// The path `m/i0/i1/...`; refuses hardened indices and paths deeper
    /// than [`MAX_DEPTH`].
    pub fn from_indices(indices: &[u32]) -> Result<Self, MpcError> {
        let path = Self(indices.to_vec());
        if indices.len() > MAX_DEPTH {
            return Err(bad_path(
                &path.to_string(),
                format!("deeper than {MAX_DEPTH} levels"),
            ));
        }
        if let Some(i) = indices.iter().find(|i| **i >= hd_wallet::H) {
            return Err(bad_path(
                &path.to_string(),
                format!(
                    "index {i} is hardened (2^31 or more): hardened derivation needs the private key, which no party holds"
                ),
            ));
        }
        Ok(path)
    }

    /// Whether this is the master key (`m`, no index).
    pub fn is_master(&self) -> bool {
        self.0.is_empty()
    }

    /// The indices, from the master down.
    pub fn indices(&self) -> &[u32] {
        &self.0
    }

    fn non_hardened(&self) -> Result<Vec<NonHardenedIndex>, MpcError> {
        self.0
            .iter()
            .map(|i| {
                NonHardenedIndex::try_from(*i)
                    .map_err(|_| bad_path(&self.to_string(), format!("index {i} is hardened")))
            })
            .collect()
    }
}

impl fmt::Display for DerivationPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("m")?;
        for i in &self.0 {
            write!(f, "/{i}")?;
        }
        Ok(())
    }
}

impl FromStr for DerivationPath {
    type Err = MpcError;

    fn from_str(text: &str) -> Result<Self, MpcError> {
        let mut parts = text.split('/');
        if parts.next() != Some("m") {
            return Err(bad_path(text, "must start with \"m\" (as in m/0/5)"));
        }
        let mut indices = Vec::new();
        for part in parts {
            if part.ends_with(['\'', 'h', 'H']) {
                return Err(bad_path(
                    text,
                    format!(
                        "{part} is hardened: hardened derivation needs the private key, which no party holds"
                    ),
                ));
            }
            let canonical = !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && (part == "0" || !part.starts_with('0'));
            if !canonical {
                return Err(bad_path(
                    text,
                    format!("{part:?} is not an index (decimal digits, no leading zeros)"),
                ));
            }
            let index: u32 = part
                .parse()
                .map_err(|_| bad_path(text, format!("{part} is out of range")))?;
            indices.push(index);
            if indices.len() > MAX_DEPTH {
                break;
            }
        }
        Self::from_indices(&indices).map_err(|e| match e {
            MpcError::InvalidDerivationPath { reason, .. } => bad_path(text, reason),
            other => other,
        })
    }
}

impl Serialize for DerivationPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DerivationPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The chain code of a key generated without one: SHA-256 of a domain
/// separator and the compressed public key (see the module documentation
/// for why, and what it costs).
pub fn legacy_chain_code(public_key: &[u8; 33]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LEGACY_CHAIN_CODE_DOMAIN);
    h.update(public_key);
    h.finalize().into()
}

/// The chain code the signers generated with the share's key, if any.
pub fn share_chain_code(share: &KeyShare) -> Option<[u8; 32]> {
    share.chain_code
}

/// An extended public key: a compressed secp256k1 public key and its chain
/// code. Not secret, but it links every derived address to the others.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ExtendedPublicKey {
    public_key: [u8; 33],
    chain_code: [u8; 32],
}

impl fmt::Debug for ExtendedPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The chain code is left out of logs: it is what links addresses.
        f.debug_struct("ExtendedPublicKey")
            .field("public_key", &hex::encode(self.public_key))
            .field("chain_code", &"<redacted>")
            .finish()
    }
}

impl ExtendedPublicKey {
    /// From a compressed public key and its chain code.
    pub fn new(public_key: &[u8], chain_code: [u8; 32]) -> Result<Self, MpcError> {
        let public_key: [u8; 33] = public_key.try_into().map_err(|_| {
            MpcError::InvalidInput(format!(
                "public key: expected 33 bytes (compressed SEC1), got {}",
                public_key.len()
            ))
        })?;
        point(&public_key)?;
        Ok(Self {
            public_key,
            chain_code,
        })
    }

    /// A wallet key's extended public key: its own chain code, or for a
    /// key generated without one [`legacy_chain_code`].
    pub fn of_key(public_key: &[u8], chain_code: Option<[u8; 32]>) -> Result<Self, MpcError> {
        let pk: [u8; 33] = public_key.try_into().map_err(|_| {
            MpcError::InvalidInput(format!(
                "public key: expected 33 bytes (compressed SEC1), got {}",
                public_key.len()
            ))
        })?;
        Self::new(&pk, chain_code.unwrap_or_else(|| legacy_chain_code(&pk)))
    }

    /// The extended public key of a key share (as [`Self::of_key`]).
    pub fn of_share(share: &KeyShare) -> Result<Self, MpcError> {
        Self::of_key(&crate::protocol::public_key(share), share_chain_code(share))
    }

    /// The compressed public key.
    pub fn public_key(&self) -> [u8; 33] {
        self.public_key
    }

    /// The chain code.
    pub fn chain_code(&self) -> [u8; 32] {
        self.chain_code
    }

    fn to_crate(self) -> Result<hd_wallet::ExtendedPublicKey<Secp256k1>, MpcError> {
        Ok(hd_wallet::ExtendedPublicKey {
            public_key: point(&self.public_key)?,
            chain_code: self.chain_code,
        })
    }

    /// The extended public key at `path` below this one.
    pub fn derive(&self, path: &DerivationPath) -> Result<Self, MpcError> {
        let mut epub = self.to_crate()?;
        for index in path.non_hardened()? {
            epub =
                <Slip10 as hd_wallet::HdWallet<Secp256k1>>::derive_child_public_key(&epub, index);
        }
        let mut public_key = [0u8; 33];
        public_key.copy_from_slice(epub.public_key.to_bytes(true).as_bytes());
        Ok(Self {
            public_key,
            chain_code: epub.chain_code,
        })
    }
}

impl ExtendedPublicKey {
    /// The child at `path` and the scalar `I_L` summed over its levels: the
    /// child's public key is this key's plus that shift times `G`, so a
    /// holder of a share of this key's secret holds a share of the child's
    /// by adding the shift (the threshold schemes that derive shares
    /// themselves use it: [`crate::frost::hd`]).
    pub(crate) fn derive_with_shift(
        &self,
        path: &DerivationPath,
    ) -> Result<(Self, Scalar<Secp256k1>), MpcError> {
        let mut epub = self.to_crate()?;
        let mut shift = Scalar::<Secp256k1>::zero();
        for index in path.non_hardened()? {
            let step =
                <Slip10 as hd_wallet::DeriveShift<Secp256k1>>::derive_public_shift(&epub, index);
            shift += step.shift;
            epub = step.child_public_key;
        }
        let mut public_key = [0u8; 33];
        public_key.copy_from_slice(epub.public_key.to_bytes(true).as_bytes());
        Ok((
            Self {
                public_key,
                chain_code: epub.chain_code,
            },
            shift,
        ))
    }
}

pub(crate) fn point(sec1: &[u8]) -> Result<Point<Secp256k1>, MpcError> {
    let p = Point::<Secp256k1>::from_bytes(sec1)
        .map_err(|_| MpcError::InvalidInput("public key is not a secp256k1 point".into()))?;
    NonZero::from_point(p)
        .map(|p| *p)
        .ok_or_else(|| MpcError::InvalidInput("public key is the point at infinity".into()))
}

/// Issues this signer's partial signature from a presignature of the
/// master key `master`, for the child key at `path` (consuming the
/// presignature). Every signer must use the same `master` and `path`, or
/// the partials do not combine into a signature valid under the child key.
pub fn issue_partial_derived(
    presignature: Presignature,
    master: &ExtendedPublicKey,
    path: &DerivationPath,
    digest: &[u8; 32],
) -> Result<PartialSignature, MpcError> {
    let shifted = if path.is_master() {
        presignature
    } else {
        presignature
            .set_derivation_path(master.to_crate()?, path.non_hardened()?)
            .map_err(|_| bad_path(&path.to_string(), "index out of range"))?
    };
    Ok(shifted.issue_partial_signature(data_to_sign(digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_have_one_text_form() {
        for (text, indices) in [
            ("m", &[][..]),
            ("m/0", &[0][..]),
            ("m/0/5", &[0, 5][..]),
            ("m/2147483647", &[2_147_483_647][..]),
        ] {
            let p: DerivationPath = text.parse().unwrap();
            assert_eq!(p.indices(), indices);
            assert_eq!(p.to_string(), text);
            assert_eq!(DerivationPath::from_indices(indices).unwrap(), p);
        }
        for bad in [
            "",
            "0/1",
            "M/0",
            "m/",
            "m//1",
            "m/01",
            "m/+1",
            "m/ 1",
            "m/1 ",
            "m/-1",
            "m/1'",
            "m/1h",
            "m/1H",
            "m/2147483648",
            "m/4294967296",
            "m/x",
        ] {
            let e = bad.parse::<DerivationPath>().unwrap_err();
            assert!(
                matches!(e, MpcError::InvalidDerivationPath { .. }),
                "{bad}: {e}"
            );
        }
        let deep = format!("m{}", "/1".repeat(MAX_DEPTH + 1));
        assert!(deep.parse::<DerivationPath>().is_err());
        assert!(DerivationPath::from_indices(&[1 << 31]).is_err());
        let json = serde_json::to_string(&DerivationPath::from_indices(&[3, 4]).unwrap()).unwrap();
        assert_eq!(json, "\"m/3/4\"");
        assert!(serde_json::from_str::<DerivationPath>("\"m/3'\"").is_err());
    }

    /// BIP32 test vector 1 (seed 000102...0f): m/0H's extended public key
    /// `xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCdrfp1bgwQ9xv5ski8PX9rL2dZXvgGDnw`,
    /// and its non-hardened child m/0H/1
    /// `xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq527Hqck2AxYysAA7xmALppuCkwQ`.
    #[test]
    fn bip32_vector_one() {
        let parent = ExtendedPublicKey::new(
            &hex::decode("035a784662a4a20a65bf6aab9ae98a6c068a81c52e4b032c0fb5400c706cfccc56")
                .unwrap(),
            hex::decode("47fdacbd0f1097043b78c63c20c34ef4ed9a111d980047ad16282c7ae6236141")
                .unwrap()
                .try_into()
                .unwrap(),
        )
        .unwrap();
        let child = parent
            .derive(&DerivationPath::from_indices(&[1]).unwrap())
            .unwrap();
        assert_eq!(
            hex::encode(child.public_key()),
            "03501e454bf00751f24b1b489aa925215d66af2234e3891c3b21a52bedb3cd711c"
        );
        assert_eq!(
            hex::encode(child.chain_code()),
            "2a7857631386ba23dacac34180dd1983734e444fdbf774041578e9b6adb37c19"
        );
        assert_eq!(parent.derive(&DerivationPath::master()).unwrap(), parent);
    }

    #[test]
    fn legacy_chain_code_is_deterministic_and_bound_to_the_key() {
        let g = Point::<Secp256k1>::generator().to_point();
        let mut a = [0u8; 33];
        a.copy_from_slice(g.to_bytes(true).as_bytes());
        let mut b = [0u8; 33];
        b.copy_from_slice((g + g).to_bytes(true).as_bytes());
        assert_eq!(legacy_chain_code(&a), legacy_chain_code(&a));
        assert_ne!(legacy_chain_code(&a), legacy_chain_code(&b));
        let x = ExtendedPublicKey::of_key(&a, None).unwrap();
        assert_eq!(x.chain_code(), legacy_chain_code(&a));
        let y = ExtendedPublicKey::of_key(&a, Some([7; 32])).unwrap();
        assert_eq!(y.chain_code(), [7; 32]);
        assert!(!format!("{y:?}").contains("0707"));
        assert!(ExtendedPublicKey::of_key(&[0u8; 33], None).is_err());
        assert!(ExtendedPublicKey::of_key(&a[..32], None).is_err());
    }
}

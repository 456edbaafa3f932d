//! Passkey (WebAuthn) approvals.
//!
//! An approver whose credential is in the policy document may approve with a
//! passkey instead of an Ed25519 key: the browser (or any authenticator) signs
//! a WebAuthn assertion whose `challenge` is [`passkey_challenge`], SHA-256 of
//! the statement's signing message for the verdict. So a passkey approval binds
//! exactly what an Ed25519 approval binds (withdrawal, transaction digest,
//! amount, policy, rule, expiry and verdict), and every checker rebuilds the
//! challenge from its own statement: an assertion over another statement does
//! not verify.
//!
//! [`verify_passkey_assertion`] is the whole check, pure: the relying party
//! (RP ID and allowed origins) comes from the admin-signed policy document,
//! never from whoever forwards the assertion. It follows the WebAuthn Level 2
//! assertion verification steps that apply to a server without sessions:
//! client data type, challenge, origin, not cross-origin, RP ID hash, user
//! present and user verified flags, signature, and the sign counter (which must
//! grow, unless the authenticator does not keep one and reports 0 twice).
//!
//! Design: the sign counter needs state; this module only compares it. The
//! policy crate's quorum check verifies assertions as if no counter had been
//! seen; callers with storage (every signer, the coordinator) then compare each
//! credential's counter with the last one they recorded, with
//! [`check_sign_counter`].
//!
//! [`PasskeyAssertion`]'s fields are base64url, the encoding of
//! `PublicKeyCredential.toJSON()` in browsers (`id`, `response.authenticatorData`,
//! `response.clientDataJSON`, `response.signature`), so a browser's
//! `navigator.credentials.get()` output plugs straight in.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{PolicyError, Result};
use crate::statement::{ApprovalStatement, Verdict};

/// Prefix of a passkey approval's bytes in the audit log's `signature` field
/// (an Ed25519 approval logs its 64 signature bytes).
pub const PASSKEY_LOG_MAGIC: &[u8] = b"custos.webauthn-assertion.v1\x00";

/// Longest base64url field accepted in an assertion (authenticator data and
/// client data are a few hundred bytes in practice).
const MAX_FIELD_CHARS: usize = 8192;

/// Flag bits of the authenticator data.
const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;

/// base64url, padding optional (browsers omit it, some libraries add it).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A WebAuthn assertion, as a browser returns it from `navigator.credentials.get()`
/// (every field base64url, as in `PublicKeyCredential.toJSON()`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeyAssertion {
    /// The credential's id (`rawId`).
    pub credential_id: String,
    /// `response.authenticatorData`.
    pub authenticator_data: String,
    /// `response.clientDataJSON`.
    pub client_data_json: String,
    /// `response.signature`: DER ECDSA (ES256) or raw Ed25519 (EdDSA).
    pub signature: String,
}

/// Decoded assertion bytes.
struct RawAssertion {
    credential_id: Vec<u8>,
    authenticator_data: Vec<u8>,
    client_data_json: Vec<u8>,
    signature: Vec<u8>,
}

fn decode_field(field: &'static str, s: &str) -> std::result::Result<Vec<u8>, PasskeyCheck> {
    if s.is_empty() || s.len() > MAX_FIELD_CHARS {
        return Err(PasskeyCheck::Malformed {
            field,
            reason: format!("must be 1..={MAX_FIELD_CHARS} base64url characters"),
        });
    }
    B64URL.decode(s).map_err(|e| PasskeyCheck::Malformed {
        field,
        reason: format!("not base64url: {e}"),
    })
}

impl PasskeyAssertion {
    /// Builds an assertion from raw bytes (encodes them base64url).
    pub fn from_bytes(
        credential_id: &[u8],
        authenticator_data: &[u8],
        client_data_json: &[u8],
        signature: &[u8],
    ) -> Self {
        Self {
            credential_id: URL_SAFE_NO_PAD.encode(credential_id),
            authenticator_data: URL_SAFE_NO_PAD.encode(authenticator_data),
            client_data_json: URL_SAFE_NO_PAD.encode(client_data_json),
            signature: URL_SAFE_NO_PAD.encode(signature),
        }
    }

    fn raw(&self) -> std::result::Result<RawAssertion, PasskeyCheck> {
        let raw = RawAssertion {
            credential_id: decode_field("credential_id", &self.credential_id)?,
            authenticator_data: decode_field("authenticator_data", &self.authenticator_data)?,
            client_data_json: decode_field("client_data_json", &self.client_data_json)?,
            signature: decode_field("signature", &self.signature)?,
        };
        if raw.authenticator_data.len() < 37 {
            return Err(PasskeyCheck::Malformed {
                field: "authenticator_data",
                reason: format!(
                    "{} bytes, at least 37 expected (rpIdHash, flags, signCount)",
                    raw.authenticator_data.len()
                ),
            });
        }
        Ok(raw)
    }

    /// The credential id, decoded.
    pub fn credential_id_bytes(&self) -> Result<Vec<u8>> {
        decode_field("credential_id", &self.credential_id).map_err(PolicyError::Passkey)
    }

    /// The sign counter the authenticator reported (not verified: call
    /// after [`verify_passkey_assertion`] or a quorum check accepted it).
    pub fn sign_counter(&self) -> Result<u32> {
        let raw = self.raw().map_err(PolicyError::Passkey)?;
        Ok(counter_of(&raw.authenticator_data))
    }

    /// SHA-256 over the decoded authenticator data, client data and
    /// signature: identifies this exact assertion (a signer seeing the same
    /// assertion again is re-verifying, not a replay).
    pub fn digest(&self) -> Result<[u8; 32]> {
        let raw = self.raw().map_err(PolicyError::Passkey)?;
        let mut h = Sha256::new();
        for part in [
            &raw.authenticator_data,
            &raw.client_data_json,
            &raw.signature,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        Ok(h.finalize().into())
    }

    /// The bytes an audit log entry carries: [`PASSKEY_LOG_MAGIC`] then this
    /// assertion as JSON.
    pub fn to_log_bytes(&self) -> Vec<u8> {
        let mut out = PASSKEY_LOG_MAGIC.to_vec();
        // Serialising four strings cannot fail.
        out.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// Reads [`to_log_bytes`](Self::to_log_bytes) output; `None` when `bytes`
    /// do not start with [`PASSKEY_LOG_MAGIC`] (an Ed25519 signature).
    pub fn from_log_bytes(bytes: &[u8]) -> Option<Result<Self>> {
        let json = bytes.strip_prefix(PASSKEY_LOG_MAGIC)?;
        Some(serde_json::from_slice(json).map_err(|e| {
            PolicyError::Passkey(PasskeyCheck::Malformed {
                field: "log entry",
                reason: e.to_string(),
            })
        }))
    }
}

fn counter_of(auth_data: &[u8]) -> u32 {
    let mut c = [0u8; 4];
    if let Some(b) = auth_data.get(33..37) {
        c.copy_from_slice(b);
    }
    u32::from_be_bytes(c)
}

/// A passkey's public key.
#[derive(Clone, PartialEq, Eq)]
pub enum PasskeyKey {
    /// ECDSA P-256 with SHA-256 (COSE alg -7).
    Es256(p256::ecdsa::VerifyingKey),
    /// Ed25519 (COSE alg -8).
    EdDsa(ed25519_dalek::VerifyingKey),
}

impl fmt::Debug for PasskeyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasskeyKey::Es256(k) => write!(
                f,
                "Es256({})",
                hex::encode(k.to_encoded_point(true).as_bytes())
            ),
            PasskeyKey::EdDsa(k) => write!(f, "EdDsa({})", hex::encode(k.as_bytes())),
        }
    }
}

/// Which algorithm a credential field of the policy document holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasskeyAlg {
    /// `webauthn_p256`.
    Es256,
    /// `webauthn_ed25519`.
    EdDsa,
}

const COSE_KTY: i128 = 1;
const COSE_ALG: i128 = 3;
const COSE_CRV: i128 = -1;
const COSE_X: i128 = -2;
const COSE_Y: i128 = -3;

impl PasskeyKey {
    /// Parses a public key given as hex: a COSE_Key (CBOR map, as in the
    /// credential's attested data; `AuthenticatorAttestationResponse.getPublicKey()`
    /// is SPKI and is not accepted), or for ES256 a SEC1 point (33 or 65 bytes),
    /// for EdDSA the 32 raw key bytes. The key must be of `alg`.
    pub fn parse(alg: PasskeyAlg, hex_key: &str) -> Result<Self> {
        let bytes = hex::decode(hex_key)
            .map_err(|e| PolicyError::Key(format!("public_key must be hex: {e}")))?;
        match bytes.first() {
            Some(b) if b >> 5 == 5 => Self::from_cose(alg, &bytes),
            _ => Self::from_raw(alg, &bytes),
        }
    }

    fn from_raw(alg: PasskeyAlg, bytes: &[u8]) -> Result<Self> {
        match alg {
            PasskeyAlg::Es256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
                .map(PasskeyKey::Es256)
                .map_err(|_| {
                    PolicyError::Key(
                        "public_key is neither a COSE key nor a valid SEC1 P-256 point".into(),
                    )
                }),
            PasskeyAlg::EdDsa => {
                let arr: [u8; 32] = bytes.try_into().map_err(|_| {
                    PolicyError::Key(
                        "public_key is neither a COSE key nor 32 Ed25519 key bytes".into(),
                    )
                })?;
                let k = ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| {
                    PolicyError::Key("public_key is not a valid Ed25519 point".into())
                })?;
                if k.is_weak() {
                    return Err(PolicyError::Key("public_key has small order".into()));
                }
                Ok(PasskeyKey::EdDsa(k))
            }
        }
    }

    fn from_cose(alg: PasskeyAlg, bytes: &[u8]) -> Result<Self> {
        let bad = |m: &str| PolicyError::Key(format!("COSE public key: {m}"));
        let value: ciborium::Value =
            ciborium::from_reader(bytes).map_err(|e| bad(&format!("not CBOR: {e}")))?;
        let map = value.as_map().ok_or_else(|| bad("not a CBOR map"))?;
        let get = |label: i128| {
            map.iter().find_map(|(k, v)| {
                k.as_integer()
                    .filter(|i| i128::from(*i) == label)
                    .map(|_| v)
            })
        };
        let int = |label: i128, name: &str| -> Result<i128> {
            get(label)
                .and_then(|v| v.as_integer())
                .map(i128::from)
                .ok_or_else(|| bad(&format!("{name} missing or not an integer")))
        };
        let bytes_of = |label: i128, name: &str| -> Result<&Vec<u8>> {
            get(label)
                .and_then(|v| v.as_bytes())
                .ok_or_else(|| bad(&format!("{name} missing or not a byte string")))
        };
        let (kty, cose_alg, crv) = (
            int(COSE_KTY, "kty")?,
            int(COSE_ALG, "alg")?,
            int(COSE_CRV, "crv")?,
        );
        match alg {
            PasskeyAlg::Es256 => {
                if (kty, cose_alg, crv) != (2, -7, 1) {
                    return Err(bad(&format!(
                        "kty {kty}, alg {cose_alg}, crv {crv}; webauthn_p256 needs EC2 (2), ES256 (-7), P-256 (1)"
                    )));
                }
                let (x, y) = (bytes_of(COSE_X, "x")?, bytes_of(COSE_Y, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(bad("x and y must be 32 bytes each"));
                }
                let mut sec1 = vec![4u8];
                sec1.extend_from_slice(x);
                sec1.extend_from_slice(y);
                Self::from_raw(alg, &sec1)
            }
            PasskeyAlg::EdDsa => {
                if (kty, cose_alg, crv) != (1, -8, 6) {
                    return Err(bad(&format!(
                        "kty {kty}, alg {cose_alg}, crv {crv}; webauthn_ed25519 needs OKP (1), EdDSA (-8), Ed25519 (6)"
                    )));
                }
                Self::from_raw(alg, bytes_of(COSE_X, "x")?)
            }
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PasskeyKey::Es256(k) => {
                use p256::ecdsa::signature::Verifier;
                let Ok(sig) = p256::ecdsa::Signature::from_der(signature) else {
                    return false;
                };
                // WebAuthn does not require low-S and browsers' authenticators
                // produce both: (r, s) and (r, n - s) are equally valid.
                let sig = sig.normalize_s().unwrap_or(sig);
                k.verify(message, &sig).is_ok()
            }
            PasskeyKey::EdDsa(k) => {
                let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
                    return false;
                };
                k.verify_strict(message, &sig).is_ok()
            }
        }
    }
}

/// An approver's registered passkey: credential id and public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyCredentialKey {
    /// The credential id (raw bytes).
    pub id: Vec<u8>,
    /// Its public key.
    pub key: PasskeyKey,
}

/// The relying party signers verify assertions for (from the policy document).
#[derive(Debug, Clone, Copy)]
pub struct RelyingParty<'a> {
    /// RP ID (a domain, for example `custos.test`).
    pub rp_id: &'a str,
    /// Allowed origins, exactly as browsers report them (`https://custos.test`).
    pub origins: &'a [String],
}

/// Which check of [`verify_passkey_assertion`] refused an assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PasskeyCheck {
    /// A field is not well-formed (base64url, lengths, JSON).
    Malformed {
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The assertion names another credential than the approver's.
    UnknownCredential,
    /// `clientDataJSON.type` is not `webauthn.get`.
    WrongType {
        /// The type found.
        got: String,
    },
    /// `clientDataJSON.challenge` is not the statement's challenge.
    WrongChallenge,
    /// `clientDataJSON.origin` is not an allowed origin.
    OriginNotAllowed {
        /// The origin found.
        got: String,
    },
    /// `clientDataJSON.crossOrigin` is true.
    CrossOrigin,
    /// `rpIdHash` is not SHA-256 of the configured RP ID.
    WrongRpId,
    /// The user-present flag is clear.
    UserNotPresent,
    /// The user-verified flag is clear.
    UserNotVerified,
    /// The signature does not verify under the credential's key.
    BadSignature,
    /// The sign counter did not grow (a cloned authenticator or a replay).
    CounterNotIncreased {
        /// The last counter seen for the credential.
        last: u32,
        /// The counter in this assertion.
        got: u32,
    },
}

impl fmt::Display for PasskeyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { field, reason } => write!(f, "assertion {field} malformed: {reason}"),
            Self::UnknownCredential => {
                f.write_str("assertion credential id is not the approver's registered passkey")
            }
            Self::WrongType { got } => {
                write!(f, "clientDataJSON type is {got:?}, expected \"webauthn.get\"")
            }
            Self::WrongChallenge => f.write_str(
                "clientDataJSON challenge is not this statement's (signed for another withdrawal, transaction, amount, policy or verdict?)",
            ),
            Self::OriginNotAllowed { got } => {
                write!(f, "clientDataJSON origin {got:?} is not an allowed origin")
            }
            Self::CrossOrigin => f.write_str("clientDataJSON crossOrigin is true"),
            Self::WrongRpId => {
                f.write_str("authenticatorData rpIdHash is not SHA-256 of the policy's RP ID")
            }
            Self::UserNotPresent => f.write_str("authenticatorData user-present (UP) flag is clear"),
            Self::UserNotVerified => {
                f.write_str("authenticatorData user-verified (UV) flag is clear")
            }
            Self::BadSignature => {
                f.write_str("assertion signature does not verify under the passkey's public key")
            }
            Self::CounterNotIncreased { last, got } => write!(
                f,
                "sign counter {got} is not above the last one seen ({last}): replayed or cloned authenticator"
            ),
        }
    }
}

impl std::error::Error for PasskeyCheck {}

/// The challenge a passkey signs for `verdict` on `statement`: SHA-256 of
/// the statement's signing message (domain, verdict, canonical statement).
pub fn passkey_challenge(statement: &ApprovalStatement, verdict: Verdict) -> Result<[u8; 32]> {
    Ok(Sha256::digest(statement.signing_message(verdict)?).into())
}

/// The counter rule: a counter must be strictly above the last one seen,
/// unless the authenticator keeps none (both are 0).
pub fn check_sign_counter(last: u32, got: u32) -> std::result::Result<(), PasskeyCheck> {
    if got > last || (got == 0 && last == 0) {
        Ok(())
    } else {
        Err(PasskeyCheck::CounterNotIncreased { last, got })
    }
}

#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    kind: String,
    challenge: String,
    origin: String,
    #[serde(rename = "crossOrigin", default)]
    cross_origin: Option<bool>,
}

/// Verifies a passkey assertion for `credential` over `challenge` (see
/// [`passkey_challenge`]) for relying party `rp`, and returns its sign counter.
///
/// `last_counter` is the last counter seen for this credential (0 when none).
/// The first check that fails is returned, naming it.
pub fn verify_passkey_assertion(
    credential: &PasskeyCredentialKey,
    rp: RelyingParty<'_>,
    challenge: &[u8],
    last_counter: u32,
    assertion: &PasskeyAssertion,
) -> std::result::Result<u32, PasskeyCheck> {
    let raw = assertion.raw()?;
    if raw.credential_id != credential.id {
        return Err(PasskeyCheck::UnknownCredential);
    }
    let client: ClientData =
        serde_json::from_slice(&raw.client_data_json).map_err(|e| PasskeyCheck::Malformed {
            field: "client_data_json",
            reason: e.to_string(),
        })?;
    if client.kind != "webauthn.get" {
        return Err(PasskeyCheck::WrongType { got: client.kind });
    }
    match URL_SAFE_NO_PAD.decode(&client.challenge) {
        Ok(c) if c == challenge => {}
        _ => return Err(PasskeyCheck::WrongChallenge),
    }
    if !rp.origins.contains(&client.origin) {
        return Err(PasskeyCheck::OriginNotAllowed { got: client.origin });
    }
    if client.cross_origin == Some(true) {
        return Err(PasskeyCheck::CrossOrigin);
    }
    let ad = &raw.authenticator_data;
    if ad[..32] != Sha256::digest(rp.rp_id.as_bytes())[..] {
        return Err(PasskeyCheck::WrongRpId);
    }
    if ad[32] & FLAG_UP == 0 {
        return Err(PasskeyCheck::UserNotPresent);
    }
    if ad[32] & FLAG_UV == 0 {
        return Err(PasskeyCheck::UserNotVerified);
    }
    let mut signed = ad.clone();
    signed.extend_from_slice(&Sha256::digest(&raw.client_data_json));
    if !credential.key.verify(&signed, &raw.signature) {
        return Err(PasskeyCheck::BadSignature);
    }
    let counter = counter_of(ad);
    check_sign_counter(last_counter, counter)?;
    Ok(counter)
}

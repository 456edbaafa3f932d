//! Signed withdrawal requests.
//!
//! An API client (a custodial backend) signs what it asks for with a request
//! key registered in the admin-signed policy (`[[request_keys]]`). The
//! coordinator forwards the signature and every signer checks it against the
//! withdrawal it is asked to sign, so the initiator the policy evaluates
//! (initiator rules, per-initiator velocity, `exclude_initiator`) is the
//! client that signed, not a name the coordinator chose. The withdrawal id is
//! derived from the client and its idempotency key, so one signed request
//! can become one withdrawal only.

use sha2::{Digest, Sha256};

use crate::address::check_address;
use crate::error::{PolicyError, Result};
use crate::eval::Withdrawal;
use crate::keys::SecretKey;
use crate::policy::Policy;

/// Domain separator of a request signature.
pub const REQUEST_SIGN_DOMAIN: &[u8] = b"custos-withdrawal-request-v1\n";

/// What an API client signs when it requests a withdrawal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestStatement {
    /// The client (its API identity; the withdrawal's initiator).
    pub client: String,
    /// The client's idempotency key for this request.
    pub idempotency_key: String,
    /// Source wallet.
    pub wallet: String,
    /// Asset symbol.
    pub asset: String,
    /// Destination in its canonical form for the wallet's chain (EIP-55 for
    /// EVM, lowercase bech32; see [`canonical_destination`]).
    pub destination: String,
    /// Amount in base units.
    pub amount: u128,
}

/// `destination`'s canonical form on `chain`, or `destination` unchanged
/// where the chain is not one this crate knows.
pub fn canonical_destination(chain: &str, destination: &str) -> String {
    check_address(chain, destination)
        .map(|c| c.canonical)
        .unwrap_or_else(|_| destination.to_owned())
}

/// The withdrawal id of a signed request: `wd-` and 20 hex digits of
/// SHA-256 over the client and its idempotency key. The coordinator gives a
/// signed request this id and signers require it, so one signature can back
/// one withdrawal only (a withdrawal is signed once).
pub fn request_withdrawal_id(client: &str, idempotency_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"custos-withdrawal-id-v1\n");
    h.update((client.len() as u64).to_be_bytes());
    h.update(client.as_bytes());
    h.update((idempotency_key.len() as u64).to_be_bytes());
    h.update(idempotency_key.as_bytes());
    format!("wd-{}", hex::encode(&h.finalize()[..10]))
}

impl RequestStatement {
    /// The statement a signed request for `w` must carry.
    pub fn for_withdrawal(w: &Withdrawal, idempotency_key: &str) -> Self {
        Self {
            client: w.initiator.clone(),
            idempotency_key: idempotency_key.to_owned(),
            wallet: w.wallet.clone(),
            asset: w.asset.clone(),
            destination: canonical_destination(&w.chain, &w.destination),
            amount: w.amount.0,
        }
    }

    /// The signed bytes: the domain, then each field length-prefixed (u32,
    /// big-endian) in declaration order, the amount as decimal digits.
    pub fn signing_message(&self) -> Vec<u8> {
        let amount = self.amount.to_string();
        let fields = [
            self.client.as_bytes(),
            self.idempotency_key.as_bytes(),
            self.wallet.as_bytes(),
            self.asset.as_bytes(),
            self.destination.as_bytes(),
            amount.as_bytes(),
        ];
        let mut m = REQUEST_SIGN_DOMAIN.to_vec();
        for f in fields {
            m.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
            m.extend_from_slice(f);
        }
        m
    }

    /// The client's signature, hex.
    pub fn sign(&self, key: &SecretKey) -> String {
        hex::encode(key.sign(&self.signing_message()))
    }
}

impl Policy {
    /// True when the policy registers request keys: then every withdrawal
    /// needs its initiator's signed request.
    pub fn requires_signed_requests(&self) -> bool {
        !self.document().request_keys.is_empty()
    }

    /// Checks `signature` (hex) over `statement` with the request key the
    /// policy registers for `statement.client`; the error names what failed.
    pub fn verify_request(&self, statement: &RequestStatement, signature: &str) -> Result<()> {
        let client = &statement.client;
        let key = self.request_keys.get(client).ok_or_else(|| {
            PolicyError::Refused(format!(
                "initiator {client:?} has no active request key in the policy: its requests cannot be proven"
            ))
        })?;
        if signature.is_empty() {
            return Err(PolicyError::Refused(format!(
                "the request of initiator {client:?} carries no request signature"
            )));
        }
        let sig = hex::decode(signature).map_err(|_| {
            PolicyError::Refused(format!(
                "the request signature of initiator {client:?} is not hex"
            ))
        })?;
        if !key.verify(&statement.signing_message(), &sig) {
            return Err(PolicyError::Refused(format!(
                "the request signature does not verify with initiator {client:?}'s request key over this request (idempotency key {:?}, wallet {}, asset {}, destination {}, amount {}): it was signed by another key or for another request",
                statement.idempotency_key,
                statement.wallet,
                statement.asset,
                statement.destination,
                statement.amount
            )));
        }
        Ok(())
    }
}

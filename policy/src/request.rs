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

/// Domain separator of a request that spends from a derived address: the
/// v1 fields, then the source path. Requests from the wallet's own address
/// keep v1 byte for byte, so existing clients' signatures still verify.
pub const REQUEST_SIGN_DOMAIN_V2: &[u8] = b"custos-withdrawal-request-v2\n";

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
    /// The derivation path of the address it spends from (`m/0/5`, the
    /// canonical form), or empty for the wallet's own address. Signed, so a
    /// coordinator cannot move the spend to another of the wallet's
    /// addresses than the client asked for.
    pub source_path: String,
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
            source_path: w
                .source
                .as_ref()
                .map(|s| s.path.clone())
                .unwrap_or_default(),
        }
    }

    /// The signed bytes: the domain, then each field length-prefixed (u32,
    /// big-endian) in declaration order, the amount as decimal digits. An
    /// empty source path is left out (v1); any other is the last field (v2).
    pub fn signing_message(&self) -> Vec<u8> {
        let amount = self.amount.to_string();
        let mut fields = vec![
            self.client.as_bytes(),
            self.idempotency_key.as_bytes(),
            self.wallet.as_bytes(),
            self.asset.as_bytes(),
            self.destination.as_bytes(),
            amount.as_bytes(),
        ];
        let domain = if self.source_path.is_empty() {
            REQUEST_SIGN_DOMAIN
        } else {
            fields.push(self.source_path.as_bytes());
            REQUEST_SIGN_DOMAIN_V2
        };
        let mut m = domain.to_vec();
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
                "the request signature does not verify with initiator {client:?}'s request key over this request (idempotency key {:?}, wallet {}, asset {}, destination {}, amount {}, source {}): it was signed by another key or for another request",
                statement.idempotency_key,
                statement.wallet,
                statement.asset,
                statement.destination,
                statement.amount,
                if statement.source_path.is_empty() {
                    "the wallet's own address"
                } else {
                    statement.source_path.as_str()
                }
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn statement(source_path: &str) -> RequestStatement {
        RequestStatement {
            client: "payments-backend".into(),
            idempotency_key: "k-1".into(),
            wallet: "w-hd".into(),
            asset: "ETH".into(),
            destination: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
            amount: 100,
            source_path: source_path.into(),
        }
    }

    /// The wallet's own address keeps the v1 bytes (clients that predate
    /// derived sources keep working); a derived source switches to v2 and
    /// ends with the path, so a signature over one source is no signature
    /// over another.
    #[test]
    fn the_source_path_is_signed_and_v1_is_unchanged() {
        let own = statement("").signing_message();
        let mut v1 = b"custos-withdrawal-request-v1\n".to_vec();
        for f in [
            &b"payments-backend"[..],
            b"k-1",
            b"w-hd",
            b"ETH",
            b"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            b"100",
        ] {
            v1.extend_from_slice(&(f.len() as u32).to_be_bytes());
            v1.extend_from_slice(f);
        }
        assert_eq!(own, v1);
        let derived = statement("m/0/7").signing_message();
        let mut v2 = REQUEST_SIGN_DOMAIN_V2.to_vec();
        v2.extend_from_slice(&v1[REQUEST_SIGN_DOMAIN.len()..]);
        v2.extend_from_slice(&5u32.to_be_bytes());
        v2.extend_from_slice(b"m/0/7");
        assert_eq!(derived, v2);

        let key = SecretKey::from_seed(&Zeroizing::new([7; 32]));
        let sig = hex::decode(statement("m/0/7").sign(&key)).unwrap();
        let public = key.public().0;
        let verify = |m: &[u8]| crate::keys::verify(&public, m, &sig);
        assert!(verify(&derived));
        assert!(!verify(&own), "no longer the wallet's own address");
        assert!(!verify(&statement("m/0/8").signing_message()));
    }
}

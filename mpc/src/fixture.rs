//! Aux-info fixtures for development and test clusters.
//!
//! Why: the aux-info ceremony (Paillier keys with their Π-mod, Π-fac and
//! Π-prm proofs) costs tens of seconds per party on 2 cores, and every
//! fresh test cluster used to run it. Test clusters already take their
//! safe primes from the public fixture `mpc/tests/fixtures/test-primes.json`,
//! so their Paillier keys are public anyway: the aux info a ceremony derives
//! from those primes can be generated once and checked in
//! (`mpc/tests/fixtures/aux-info-<n>.json`) without disclosing anything a
//! dev cluster keeps secret. A production node generates its own primes and
//! never loads such a file (the signer refuses the setting outside a dev
//! cluster).
//!
//! The file holds every party's aux info for one group, in party order,
//! with the node ids it was made for. Each entry is validated on load (the
//! crate's `Valid<AuxInfo>`); the parties must agree on the public part and
//! each party's own primes must match its public modulus.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::MpcError;
use crate::protocol::{AuxInfo, Primes};

/// Format version of the fixture file.
pub const FORMAT: u32 = 1;

/// A signer group's aux info made from public test primes.
#[derive(Serialize, Deserialize)]
pub struct AuxFixture {
    /// [`FORMAT`].
    pub format: u32,
    /// Node ids of the group, in party order.
    pub participants: Vec<String>,
    /// `parties[i]` is the aux info of `participants[i]`.
    pub parties: Vec<AuxInfo>,
}

impl AuxFixture {
    /// Builds a fixture from a completed ceremony's outputs.
    pub fn new(participants: Vec<String>, parties: Vec<AuxInfo>) -> Result<Self, MpcError> {
        let f = AuxFixture {
            format: FORMAT,
            participants,
            parties,
        };
        f.check()?;
        Ok(f)
    }

    /// Parses and checks a fixture file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, MpcError> {
        let f: AuxFixture = serde_json::from_slice(bytes)
            .map_err(|e| MpcError::InvalidInput(format!("aux-info fixture: {e}")))?;
        f.check()?;
        Ok(f)
    }

    /// The fixture as JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, MpcError> {
        serde_json::to_vec(self).map_err(|e| MpcError::InvalidState(e.to_string()))
    }

    fn check(&self) -> Result<(), MpcError> {
        let bad = |m: String| Err(MpcError::InvalidInput(format!("aux-info fixture: {m}")));
        if self.format != FORMAT {
            return bad(format!("format {} (expected {FORMAT})", self.format));
        }
        let n = self.participants.len();
        if n < 2 || self.parties.len() != n {
            return bad(format!(
                "{} participants and {} parties",
                n,
                self.parties.len()
            ));
        }
        let public = self.public_json(0)?;
        for (i, aux) in self.parties.iter().enumerate() {
            if aux.parties.len() != n {
                return bad(format!("party {i} knows {} parties", aux.parties.len()));
            }
            if self.public_json(i)? != public {
                return bad(format!("party {i} disagrees on the group's public data"));
            }
            let own = aux
                .parties
                .get(i)
                .ok_or_else(|| MpcError::InvalidInput(format!("party {i} missing")))?;
            if aux.p.clone() * &aux.q != own.N {
                return bad(format!("party {i}'s primes do not match its modulus"));
            }
        }
        Ok(())
    }

    fn public_json(&self, i: usize) -> Result<Vec<u8>, MpcError> {
        let aux = self
            .parties
            .get(i)
            .ok_or_else(|| MpcError::InvalidInput(format!("party {i} missing")))?;
        let public: Vec<(&_, &_, &_)> = aux.parties.iter().map(|p| (&p.N, &p.s, &p.t)).collect();
        serde_json::to_vec(&public).map_err(|e| MpcError::InvalidState(e.to_string()))
    }

    /// The group id every signer and the coordinator derive for this
    /// fixture: `fixture-<n>-<first 12 hex digits of SHA-256 over the public data>`.
    pub fn group_id(&self) -> Result<String, MpcError> {
        let digest = Sha256::digest(self.public_json(0)?);
        Ok(format!(
            "fixture-{}-{}",
            self.participants.len(),
            &hex::encode(digest)[..12]
        ))
    }

    /// Party index of `node_id`.
    pub fn index_of(&self, node_id: &str) -> Result<usize, MpcError> {
        self.participants
            .iter()
            .position(|p| p == node_id)
            .ok_or_else(|| {
                MpcError::InvalidInput(format!(
                    "aux-info fixture has no party {node_id} (it is for {})",
                    self.participants.join(", ")
                ))
            })
    }

    /// The aux info of party `index`, after checking that it was made from
    /// `primes` (the node's own, public test primes).
    pub fn party_for(&self, index: usize, primes: &Primes) -> Result<&AuxInfo, MpcError> {
        let aux = self
            .parties
            .get(index)
            .ok_or_else(|| MpcError::InvalidInput(format!("no party {index}")))?;
        // PregeneratedPrimes keeps p and q private: compare their encodings.
        let primes_json =
            serde_json::to_value(primes).map_err(|e| MpcError::InvalidState(e.to_string()))?;
        let own = serde_json::json!({ "p": aux.p, "q": aux.q });
        if primes_json.get("p") != own.get("p") || primes_json.get("q") != own.get("q") {
            return Err(MpcError::InvalidInput(format!(
                "aux-info fixture party {index} was not made from this node's primes"
            )));
        }
        Ok(aux)
    }
}

/// The checked-in aux info of an `n`-party group
/// (`mpc/tests/fixtures/aux-info-<n>.json`, made from the public test
/// primes), checked, in party order: for this crate's tests and benchmarks,
/// whose subject is not the ceremony.
pub fn checked_in_aux(n: usize) -> Result<Vec<AuxInfo>, MpcError> {
    let path = format!(
        "{}/tests/fixtures/aux-info-{n}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path)
        .map_err(|e| MpcError::InvalidInput(format!("aux-info fixture {path}: {e}")))?;
    Ok(AuxFixture::parse(&bytes)?.parties)
}

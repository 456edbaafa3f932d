//! Shamir's secret sharing of a passphrase over GF(2^8), for the unseal
//! ceremony: `k` of `n` operators each hold one share, and no `k - 1` of
//! them learn anything about the passphrase.
//!
//! Each byte of the secret is the constant term of its own random
//! polynomial of degree `k - 1`; share `x` (1..=n) holds the polynomials'
//! values at `x`. Field arithmetic is branch-free and table-free (no
//! secret-dependent memory access or timing).
//!
//! A share travels as text an operator can paste:
//! `custos-share1-<k>-<x>-<set>-<hex value>-<check>`, where `set` is a random
//! 8-byte id of the split (so shares of two different splits are never
//! combined into garbage) and `check` the first 4 bytes of SHA-256 over the
//! rest (so a typo is caught before any combination is tried).

use std::fmt;

use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{HsmError, Secret};

const PREFIX: &str = "custos-share1";
/// Longest secret that can be split, bytes.
pub const MAX_SECRET_LEN: usize = 1024;

/// One share of a split secret. `Debug` does not show its value.
#[derive(Clone)]
pub struct Share {
    /// Shares needed to recover the secret.
    pub threshold: u8,
    /// This share's x coordinate (1..=255).
    pub index: u8,
    /// The split it belongs to.
    pub set: [u8; 8],
    value: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("threshold", &self.threshold)
            .field("index", &self.index)
            .field("set", &hex::encode(self.set))
            .finish_non_exhaustive()
    }
}

fn invalid(why: impl Into<String>) -> HsmError {
    HsmError::InvalidShare(why.into())
}

/// Multiplication in GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1,
/// in constant time.
fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    for _ in 0..8 {
        p ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    p
}

/// The inverse of a non-zero element (a^254), in constant time.
fn inv(a: u8) -> u8 {
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u8;
    for _ in 0..8 {
        let m = mul(result, base);
        let take = 0u8.wrapping_sub(e & 1);
        result = (m & take) | (result & !take);
        base = mul(base, base);
        e >>= 1;
    }
    result
}

/// Splits `secret` into `shares` shares, any `threshold` of which recover it.
pub fn split(secret: &[u8], threshold: u8, shares: u8) -> Result<Vec<Share>, HsmError> {
    if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
        return Err(invalid(format!(
            "the secret must be 1 to {MAX_SECRET_LEN} bytes, got {}",
            secret.len()
        )));
    }
    if threshold < 2 || threshold > shares {
        return Err(invalid(format!(
            "threshold {threshold} of {shares} shares: need 2 <= threshold <= shares"
        )));
    }
    let mut set = [0u8; 8];
    OsRng.fill_bytes(&mut set);
    // coefficients[j][i]: coefficient of x^(i+1) for byte j.
    let degree = usize::from(threshold - 1);
    let mut coefficients = Zeroizing::new(vec![0u8; secret.len() * degree]);
    OsRng.fill_bytes(&mut coefficients);
    Ok((1..=shares)
        .map(|x| {
            let value = secret
                .iter()
                .enumerate()
                .map(|(j, &s)| {
                    // Horner: ((c_d x + c_{d-1}) x + ... + c_1) x + s
                    let c = &coefficients[j * degree..(j + 1) * degree];
                    let mut y = 0u8;
                    for &cj in c.iter().rev() {
                        y = mul(y, x) ^ cj;
                    }
                    mul(y, x) ^ s
                })
                .collect();
            Share {
                threshold,
                index: x,
                set,
                value: Zeroizing::new(value),
            }
        })
        .collect())
}

/// Recovers the secret from `threshold` (or more) distinct shares of one split.
pub fn combine(shares: &[Share]) -> Result<Secret, HsmError> {
    let first = shares.first().ok_or_else(|| invalid("no shares"))?;
    let k = usize::from(first.threshold);
    for s in shares {
        if s.set != first.set || s.threshold != first.threshold {
            return Err(invalid(format!(
                "share {} belongs to split {} (threshold {}), share {} to split {} (threshold {})",
                first.index,
                hex::encode(first.set),
                first.threshold,
                s.index,
                hex::encode(s.set),
                s.threshold
            )));
        }
        if s.value.len() != first.value.len() {
            return Err(invalid("shares of different lengths"));
        }
    }
    let mut used: Vec<&Share> = Vec::with_capacity(k);
    for s in shares {
        if !used.iter().any(|u| u.index == s.index) {
            used.push(s);
        }
    }
    if used.len() < k {
        return Err(invalid(format!(
            "{} distinct share(s) of {k} needed",
            used.len()
        )));
    }
    used.truncate(k);
    // Lagrange interpolation at 0: sum_i y_i * prod_{j != i} x_j / (x_j - x_i);
    // subtraction is XOR in GF(2^8).
    let weights: Vec<u8> = used
        .iter()
        .map(|si| {
            used.iter()
                .filter(|sj| sj.index != si.index)
                .fold(1u8, |w, sj| mul(w, mul(sj.index, inv(sj.index ^ si.index))))
        })
        .collect();
    let mut secret = Zeroizing::new(vec![0u8; first.value.len()]);
    for (s, &w) in used.iter().zip(&weights) {
        for (out, &y) in secret.iter_mut().zip(s.value.iter()) {
            *out ^= mul(y, w);
        }
    }
    Ok(Secret::new(std::mem::take(&mut *secret)))
}

fn check_value(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..4])
}

impl Share {
    /// The share as text to hand to its holder. The text is a secret.
    pub fn to_text(&self) -> Zeroizing<String> {
        let body = Zeroizing::new(format!(
            "{PREFIX}-{}-{}-{}-{}",
            self.threshold,
            self.index,
            hex::encode(self.set),
            hex::encode(&*self.value)
        ));
        Zeroizing::new(format!("{}-{}", &*body, check_value(&body)))
    }

    /// Parses a share's text (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Share, HsmError> {
        let text = text.trim();
        if !text.starts_with(PREFIX) {
            return Err(invalid(format!("a share starts with {PREFIX}-")));
        }
        let (body, check) = text
            .rsplit_once('-')
            .ok_or_else(|| invalid("no check value"))?;
        if check_value(body) != check {
            return Err(invalid(
                "check value does not match: the share was mistyped or truncated",
            ));
        }
        let parts: Vec<&str> = body[PREFIX.len()..].split('-').collect();
        let [_, threshold, index, set, value] = parts.as_slice() else {
            return Err(invalid("expected threshold, index, split id and value"));
        };
        let number = |s: &str, what: &str| {
            s.parse::<u8>()
                .map_err(|_| invalid(format!("{what} {s:?} is not a number 1..255")))
        };
        let threshold = number(threshold, "threshold")?;
        let index = number(index, "index")?;
        if threshold < 2 || index == 0 {
            return Err(invalid("threshold below 2 or index 0"));
        }
        let mut set_bytes = [0u8; 8];
        hex::decode_to_slice(set, &mut set_bytes)
            .map_err(|_| invalid("split id is not 8 bytes of hex"))?;
        let value = Zeroizing::new(hex::decode(value).map_err(|_| invalid("value is not hex"))?);
        if value.is_empty() || value.len() > MAX_SECRET_LEN {
            return Err(invalid("value length"));
        }
        Ok(Share {
            threshold,
            index,
            set: set_bytes,
            value,
        })
    }

    /// The split's id as hex.
    pub fn set_id(&self) -> String {
        hex::encode(self.set)
    }
}

/// Whether `text` looks like a share rather than a passphrase.
pub fn is_share_text(text: &str) -> bool {
    text.trim_start().starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn field_inverse() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
        }
        assert_eq!(mul(0x57, 0x83), 0xc1); // FIPS-197 example
    }

    #[test]
    fn any_k_recover_and_fewer_do_not() {
        let secret = b"correct horse battery staple";
        let shares = split(secret, 3, 5).unwrap();
        for a in 0..5 {
            for b in 0..5 {
                for c in 0..5 {
                    if a == b || b == c || a == c {
                        continue;
                    }
                    let got = combine(&[shares[a].clone(), shares[b].clone(), shares[c].clone()])
                        .unwrap();
                    assert_eq!(got.expose(), secret);
                }
            }
        }
        let err = combine(&shares[..2]).unwrap_err().to_string();
        assert!(err.contains("2 distinct share(s) of 3 needed"), "{err}");
        let dup = combine(&[shares[0].clone(), shares[0].clone(), shares[1].clone()]);
        assert!(dup.is_err());
    }

    #[test]
    fn text_round_trip_and_typos() {
        let shares = split(b"pass", 2, 3).unwrap();
        let text = shares[1].to_text();
        assert!(is_share_text(&text));
        let back = Share::parse(&format!("  {}\n", &*text)).unwrap();
        assert_eq!(
            (back.threshold, back.index, back.set),
            (2, 2, shares[1].set)
        );
        let mut typo = text.to_string();
        let i = typo.len() - 12;
        let c = if &typo[i..=i] == "0" { "1" } else { "0" };
        typo.replace_range(i..=i, c);
        let err = Share::parse(&typo).unwrap_err().to_string();
        assert!(err.contains("mistyped"), "{err}");
        assert!(!format!("{back:?}").contains(&hex::encode(&*back.value)));
    }

    #[test]
    fn shares_of_two_splits_are_not_combined() {
        let a = split(b"one", 2, 2).unwrap();
        let b = split(b"two", 2, 2).unwrap();
        let err = combine(&[a[0].clone(), b[1].clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("belongs to split"), "{err}");
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(split(b"x", 1, 3).is_err());
        assert!(split(b"x", 4, 3).is_err());
        assert!(split(b"", 2, 3).is_err());
    }

    proptest! {
        #[test]
        fn recovers_random_secrets(secret in proptest::collection::vec(any::<u8>(), 1..64), k in 2u8..6, extra in 0u8..4) {
            let n = k + extra;
            let shares = split(&secret, k, n).unwrap();
            let picked: Vec<Share> = shares.iter().rev().take(k as usize).cloned().collect();
            let got = combine(&picked).unwrap();
            prop_assert_eq!(got.expose(), &secret[..]);
        }
    }
}

//! Assembling a signed EIP-1559 transaction from an ECDSA signature.
//!
//! Signed wire form (what `eth_sendRawTransaction` takes):
//! `0x02 || rlp([chain_id, nonce, max_priority_fee_per_gas, max_fee_per_gas,
//! gas_limit, to, value, data, access_list, y_parity, r, s])`; the
//! transaction hash is `keccak256` of these bytes.
//!
//! Threshold ECDSA (and HSMs) may return a high `s`; Ethereum only accepts
//! `s <= n/2` (EIP-2), so `s` is replaced by `n - s` and the y-parity flipped.
//! The result is then decoded back and its sender recovered: it must be the
//! wallet, or nothing is returned.

use alloy_consensus::transaction::RlpEcdsaDecodableTx;
use alloy_consensus::{SignableTransaction, Signed, TxEip1559};
use alloy_primitives::{Address, B256, Signature, U256, keccak256};

use crate::error::{ChainError, Result};
use crate::evm::tx::codec::{UnsignedTx, check_type_byte};

/// Largest signed transaction [`decode_signed`] accepts, in bytes.
pub const MAX_SIGNED_TX_LEN: usize = crate::evm::tx::MAX_UNSIGNED_TX_LEN + 128;

/// secp256k1 group order n.
const SECP256K1_N: U256 = U256::from_be_bytes([
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
]);

/// A signed transaction ready to broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    /// `0x02`-prefixed signed bytes for `eth_sendRawTransaction`.
    pub raw: Vec<u8>,
    /// The transaction hash, `keccak256(raw)`.
    pub hash: B256,
    /// The sender recovered from `raw` (equal to the wallet).
    pub sender: Address,
    /// The low-s signature in the transaction.
    pub signature: Signature,
}

/// The recovery id (0 or 1) with which `(r, s)` over `digest` recovers
/// `public_key` (SEC1), `None` if neither does (the signature is not the key's).
pub fn recovery_id(public_key: &[u8], digest: &[u8; 32], r: &[u8; 32], s: &[u8; 32]) -> Option<u8> {
    let mut rs = [0u8; 64];
    rs[..32].copy_from_slice(r);
    rs[32..].copy_from_slice(s);
    let sig = k256::ecdsa::Signature::from_slice(&rs).ok()?;
    let expected = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).ok()?;
    (0u8..2).find(|v| {
        k256::ecdsa::RecoveryId::from_byte(*v)
            .and_then(|id| k256::ecdsa::VerifyingKey::recover_from_prehash(digest, &sig, id).ok())
            .is_some_and(|k| k == expected)
    })
}

/// Signs `unsigned` with `(r, s, recovery_id)` (big-endian scalars; recovery
/// id 0 or 1 = y-parity of R), normalising to low s, and checks that the
/// result recovers to `wallet`.
pub fn assemble_signed(
    unsigned: &UnsignedTx,
    r: [u8; 32],
    s: [u8; 32],
    recovery_id: u8,
    wallet: Address,
) -> Result<SignedTx> {
    let y_parity = match recovery_id {
        0 => false,
        1 => true,
        2 | 3 => {
            return Err(ChainError::InvalidSignature(
                "recovery id 2 or 3 (x-reduced R) cannot be encoded in a transaction".to_owned(),
            ));
        }
        other => {
            return Err(ChainError::InvalidSignature(format!(
                "recovery id {other}, expected 0 or 1"
            )));
        }
    };
    let signature = checked_signature(r, s, y_parity)?;
    let signed = encode_signed(unsigned, signature)?;
    if signed.sender != wallet {
        return Err(ChainError::WrongSigner {
            expected: wallet,
            recovered: signed.sender,
        });
    }
    Ok(signed)
}

/// Like [`assemble_signed`] for signers that return `(r, s)` without a
/// recovery id (as threshold ECDSA protocols do): the y-parity that recovers
/// to `wallet` is chosen; if neither does, the signature is refused.
pub fn assemble_signed_any_parity(
    unsigned: &UnsignedTx,
    r: [u8; 32],
    s: [u8; 32],
    wallet: Address,
) -> Result<SignedTx> {
    let mut last = None;
    for recovery_id in [0u8, 1] {
        match assemble_signed(unsigned, r, s, recovery_id, wallet) {
            Ok(signed) => return Ok(signed),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ChainError::InvalidSignature("no recovery id fits".to_owned())))
}

fn checked_signature(r: [u8; 32], s: [u8; 32], y_parity: bool) -> Result<Signature> {
    let r = U256::from_be_bytes(r);
    let s = U256::from_be_bytes(s);
    if r.is_zero() || r >= SECP256K1_N {
        return Err(ChainError::InvalidSignature("r out of range".to_owned()));
    }
    if s.is_zero() || s >= SECP256K1_N {
        return Err(ChainError::InvalidSignature("s out of range".to_owned()));
    }
    Ok(Signature::new(r, s, y_parity).normalized_s())
}

fn encode_signed(unsigned: &UnsignedTx, signature: Signature) -> Result<SignedTx> {
    let signed: Signed<TxEip1559> = unsigned.as_eip1559().clone().into_signed(signature);
    let mut raw = Vec::with_capacity(signed.eip2718_encoded_length());
    signed.eip2718_encode(&mut raw);
    // What is returned is what was re-parsed and recovered, not what was meant.
    let (decoded, sender, hash) = decode_signed(&raw)?;
    if decoded != *unsigned {
        return Err(ChainError::InvalidSignature(
            "signed transaction does not decode to the unsigned one".to_owned(),
        ));
    }
    Ok(SignedTx {
        raw,
        hash,
        sender,
        signature,
    })
}

/// Parses signed EIP-1559 bytes strictly (type 0x02, canonical, no trailing
/// bytes, low s, same rules as [`crate::evm::tx::decode_unsigned`]) and
/// recovers the sender. Returns the unsigned transaction, the sender and the
/// transaction hash.
pub fn decode_signed(raw: &[u8]) -> Result<(UnsignedTx, Address, B256)> {
    if raw.len() > MAX_SIGNED_TX_LEN {
        return Err(ChainError::MalformedTx(format!(
            "{} bytes, above the {MAX_SIGNED_TX_LEN}-byte limit",
            raw.len()
        )));
    }
    let (&ty, mut rest) = raw
        .split_first()
        .ok_or_else(|| ChainError::MalformedTx("empty input".to_owned()))?;
    check_type_byte(ty)?;
    let (tx, signature) = TxEip1559::rlp_decode_with_signature(&mut rest)
        .map_err(|e| ChainError::MalformedTx(format!("RLP: {e}")))?;
    if !rest.is_empty() {
        return Err(ChainError::MalformedTx(format!(
            "{} trailing bytes after the transaction",
            rest.len()
        )));
    }
    if signature.normalize_s().is_some() {
        return Err(ChainError::InvalidSignature("high s (EIP-2)".to_owned()));
    }
    let unsigned = UnsignedTx::from_eip1559(tx)?;
    let signed = unsigned.as_eip1559().clone().into_signed(signature);
    let mut canonical = Vec::with_capacity(raw.len());
    signed.eip2718_encode(&mut canonical);
    if canonical != raw {
        return Err(ChainError::MalformedTx("non-canonical encoding".to_owned()));
    }
    let sender = signed
        .recover_signer()
        .map_err(|e| ChainError::InvalidSignature(format!("recovery failed: {e}")))?;
    Ok((unsigned, sender, keccak256(raw)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::tx::{UnsignedTx, signing_digest};
    use alloy_primitives::{Bytes, TxKind};
    use k256::ecdsa::SigningKey;

    #[test]
    fn recovery_id_finds_the_parity_that_recovers_the_key() {
        let key = SigningKey::from_slice(&[5u8; 32]).unwrap();
        let pk = key.verifying_key().to_sec1_bytes();
        for i in 0u8..8 {
            let digest = [i; 32];
            let (sig, recid) = key.sign_prehash_recoverable(&digest).unwrap();
            let (r, s) = sig.split_bytes();
            assert_eq!(
                recovery_id(&pk, &digest, &r.into(), &s.into()),
                Some(recid.to_byte())
            );
        }
        let other = SigningKey::from_slice(&[6u8; 32]).unwrap();
        let (sig, _) = other.sign_prehash_recoverable(&[1u8; 32]).unwrap();
        let (r, s) = sig.split_bytes();
        assert_eq!(recovery_id(&pk, &[1u8; 32], &r.into(), &s.into()), None);
    }

    fn unsigned() -> UnsignedTx {
        UnsignedTx::from_eip1559(TxEip1559 {
            chain_id: 31337,
            nonce: 0,
            gas_limit: 21_000,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to: TxKind::Call(Address::repeat_byte(0x22)),
            value: U256::from(1u64),
            access_list: Default::default(),
            input: Bytes::new(),
        })
        .unwrap()
    }

    fn key() -> SigningKey {
        SigningKey::from_slice(&[0x42; 32]).unwrap()
    }

    fn sign(tx: &UnsignedTx) -> ([u8; 32], [u8; 32], u8) {
        let (sig, recid) = key().sign_prehash_recoverable(&signing_digest(tx)).unwrap();
        let (r, s) = sig.split_bytes();
        (r.into(), s.into(), recid.to_byte())
    }

    #[test]
    fn low_and_high_s_both_produce_the_same_valid_tx() {
        let tx = unsigned();
        let wallet = Address::from_private_key(&key());
        let (r, s, v) = sign(&tx);
        let low = assemble_signed(&tx, r, s, v, wallet).unwrap();
        assert_eq!(low.sender, wallet);
        assert_eq!(low.hash, keccak256(&low.raw));
        assert_eq!(low.raw[0], 0x02);

        // The same signature with s' = n - s and the parity flipped.
        let high_s = (SECP256K1_N - U256::from_be_bytes(s)).to_be_bytes::<32>();
        let high = assemble_signed(&tx, r, high_s, v ^ 1, wallet).unwrap();
        assert_eq!(high, low);

        let any = assemble_signed_any_parity(&tx, r, high_s, wallet).unwrap();
        assert_eq!(any, low);
        assert_eq!(decode_signed(&low.raw).unwrap(), (tx, wallet, low.hash));
    }

    #[test]
    fn wrong_wallet_or_parity_refused() {
        let tx = unsigned();
        let wallet = Address::from_private_key(&key());
        let (r, s, v) = sign(&tx);
        assert!(matches!(
            assemble_signed(&tx, r, s, v ^ 1, wallet),
            Err(ChainError::WrongSigner { .. }) | Err(ChainError::InvalidSignature(_))
        ));
        assert!(matches!(
            assemble_signed(&tx, r, s, v, Address::repeat_byte(1)),
            Err(ChainError::WrongSigner { .. })
        ));
        assert!(assemble_signed_any_parity(&tx, r, s, Address::repeat_byte(1)).is_err());
        assert!(assemble_signed(&tx, r, s, 2, wallet).is_err());
        assert!(assemble_signed(&tx, r, s, 27, wallet).is_err());
        assert!(assemble_signed(&tx, [0; 32], s, v, wallet).is_err());
        assert!(assemble_signed(&tx, r, [0; 32], v, wallet).is_err());
        assert!(assemble_signed(&tx, r, SECP256K1_N.to_be_bytes::<32>(), v, wallet).is_err());
    }

    #[test]
    fn decode_signed_rejects_high_s_and_trailing() {
        let tx = unsigned();
        let wallet = Address::from_private_key(&key());
        let (r, s, v) = sign(&tx);
        let ok = assemble_signed(&tx, r, s, v, wallet).unwrap();
        let mut trailing = ok.raw.clone();
        trailing.push(0);
        assert!(decode_signed(&trailing).is_err());
        let sig = ok.signature;
        let high = Signature::new(sig.r(), SECP256K1_N - sig.s(), !sig.v());
        let mut raw = Vec::new();
        tx.as_eip1559()
            .clone()
            .into_signed(high)
            .eip2718_encode(&mut raw);
        assert!(decode_signed(&raw).is_err());
    }
}

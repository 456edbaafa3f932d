//! The unsigned EIP-1559 transaction, its canonical bytes and signing digest.
//!
//! Wire form (what a signer receives and parses):
//! `0x02 || rlp([chain_id, nonce, max_priority_fee_per_gas, max_fee_per_gas,
//! gas_limit, to, value, data, access_list])`; the digest signed is
//! `keccak256` of exactly these bytes.
//!
//! [`decode_unsigned`] is strict: one encoding per transaction. It refuses
//! empty or oversize input (above [`MAX_UNSIGNED_TX_LEN`]), any type byte but
//! `0x02` (legacy, EIP-2930, EIP-4844, EIP-7702...), non-canonical RLP,
//! trailing bytes, contract creation, a non-empty access list and a priority
//! fee above the max fee. What it accepts re-encodes to the same bytes.

use alloy_consensus::transaction::RlpEcdsaDecodableTx;
use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_primitives::{Address, TxKind, keccak256};

use crate::error::{ChainError, Result};

/// EIP-2718 type byte of EIP-1559 transactions.
pub const EIP1559_TX_TYPE: u8 = 0x02;

/// Largest unsigned transaction [`decode_unsigned`] accepts, in bytes. A
/// transfer is under 200 bytes; the bound keeps hostile input cheap.
pub const MAX_UNSIGNED_TX_LEN: usize = 16 * 1024;

/// An unsigned EIP-1559 call transaction (not a contract creation) with an
/// empty access list and `max_priority_fee_per_gas <= max_fee_per_gas`.
///
/// Built by [`crate::evm::tx::build_unsigned`] or [`decode_unsigned`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsignedTx {
    tx: TxEip1559,
    to: Address,
}

impl UnsignedTx {
    /// Checks the invariants above on an alloy transaction.
    pub fn from_eip1559(tx: TxEip1559) -> Result<Self> {
        let to = match tx.to {
            TxKind::Call(to) => to,
            TxKind::Create => {
                return Err(ChainError::MalformedTx(
                    "contract creation is not supported".to_owned(),
                ));
            }
        };
        if !tx.access_list.0.is_empty() {
            return Err(ChainError::MalformedTx(
                "non-empty access list is not supported".to_owned(),
            ));
        }
        if tx.max_priority_fee_per_gas > tx.max_fee_per_gas {
            return Err(ChainError::MalformedTx(
                "max_priority_fee_per_gas above max_fee_per_gas".to_owned(),
            ));
        }
        Ok(Self { tx, to })
    }

    /// The alloy transaction.
    pub fn as_eip1559(&self) -> &TxEip1559 {
        &self.tx
    }

    /// The call target (recipient of a native transfer, token contract of an
    /// ERC-20 transfer).
    pub fn to(&self) -> Address {
        self.to
    }
}

/// The canonical unsigned bytes `0x02 || rlp(fields)`.
pub fn encode_unsigned(unsigned: &UnsignedTx) -> Vec<u8> {
    let mut out = Vec::with_capacity(unsigned.tx.payload_len_for_signature());
    unsigned.tx.encode_for_signing(&mut out);
    out
}

/// The 32-byte digest an ECDSA signer signs: `keccak256(encode_unsigned(tx))`.
pub fn signing_digest(unsigned: &UnsignedTx) -> [u8; 32] {
    keccak256(encode_unsigned(unsigned)).0
}

/// Parses canonical unsigned EIP-1559 bytes (see the module documentation for
/// everything refused).
pub fn decode_unsigned(bytes: &[u8]) -> Result<UnsignedTx> {
    if bytes.len() > MAX_UNSIGNED_TX_LEN {
        return Err(ChainError::MalformedTx(format!(
            "{} bytes, above the {MAX_UNSIGNED_TX_LEN}-byte limit",
            bytes.len()
        )));
    }
    let (&ty, mut rest) = bytes
        .split_first()
        .ok_or_else(|| ChainError::MalformedTx("empty input".to_owned()))?;
    check_type_byte(ty)?;
    let tx = TxEip1559::rlp_decode(&mut rest)
        .map_err(|e| ChainError::MalformedTx(format!("RLP: {e}")))?;
    if !rest.is_empty() {
        return Err(ChainError::MalformedTx(format!(
            "{} trailing bytes after the transaction",
            rest.len()
        )));
    }
    let unsigned = UnsignedTx::from_eip1559(tx)?;
    if encode_unsigned(&unsigned) != bytes {
        return Err(ChainError::MalformedTx("non-canonical encoding".to_owned()));
    }
    Ok(unsigned)
}

/// Refuses every EIP-2718 type byte but EIP-1559's, naming what it is.
pub(crate) fn check_type_byte(ty: u8) -> Result<()> {
    match ty {
        EIP1559_TX_TYPE => Ok(()),
        0xc0..=0xff => Err(ChainError::MalformedTx(
            "legacy (untyped) transaction is not supported".to_owned(),
        )),
        0x01 => Err(ChainError::MalformedTx(
            "EIP-2930 (type 0x01) transaction is not supported".to_owned(),
        )),
        0x03 => Err(ChainError::MalformedTx(
            "EIP-4844 (type 0x03) transaction is not supported".to_owned(),
        )),
        0x04 => Err(ChainError::MalformedTx(
            "EIP-7702 (type 0x04) transaction is not supported".to_owned(),
        )),
        other => Err(ChainError::MalformedTx(format!(
            "unsupported transaction type 0x{other:02x}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Bytes, U256};

    fn sample() -> TxEip1559 {
        TxEip1559 {
            chain_id: 1,
            nonce: 7,
            gas_limit: 21_000,
            max_fee_per_gas: 30_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to: TxKind::Call(Address::repeat_byte(0x11)),
            value: U256::from(10u64).pow(U256::from(18u64)),
            access_list: Default::default(),
            input: Bytes::new(),
        }
    }

    #[test]
    fn round_trip_and_digest() {
        let u = UnsignedTx::from_eip1559(sample()).unwrap();
        let bytes = encode_unsigned(&u);
        assert_eq!(bytes[0], 0x02);
        assert_eq!(decode_unsigned(&bytes).unwrap(), u);
        assert_eq!(signing_digest(&u), keccak256(&bytes).0);
        assert_eq!(signing_digest(&u), u.as_eip1559().signature_hash().0);
    }

    #[test]
    fn strictness() {
        let u = UnsignedTx::from_eip1559(sample()).unwrap();
        let bytes = encode_unsigned(&u);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_unsigned(&trailing).is_err());
        let mut other_type = bytes.clone();
        other_type[0] = 0x01;
        assert!(decode_unsigned(&other_type).is_err());
        assert!(decode_unsigned(&bytes[1..]).is_err());
        assert!(decode_unsigned(&[]).is_err());
        assert!(decode_unsigned(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_unsigned(&vec![0x02; MAX_UNSIGNED_TX_LEN + 1]).is_err());

        let mut create = sample();
        create.to = TxKind::Create;
        assert!(UnsignedTx::from_eip1559(create.clone()).is_err());
        let mut enc = Vec::new();
        create.encode_for_signing(&mut enc);
        assert!(decode_unsigned(&enc).is_err());

        let mut tip = sample();
        tip.max_priority_fee_per_gas = tip.max_fee_per_gas + 1;
        assert!(UnsignedTx::from_eip1559(tip).is_err());
    }

    #[test]
    fn non_canonical_integer_rejected() {
        // nonce 7 encoded as the 2-byte string 0x81 0x07 instead of 0x07
        let u = UnsignedTx::from_eip1559(sample()).unwrap();
        let bytes = encode_unsigned(&u);
        // list header: 0x02, 0xf8?, len ... find the nonce right after chain id 0x01
        let pos = bytes.iter().position(|&b| b == 0x07).unwrap();
        let mut nc = bytes[..pos].to_vec();
        nc.extend_from_slice(&[0x81, 0x07]);
        nc.extend_from_slice(&bytes[pos + 1..]);
        // fix up the list length (short list header at byte 1 when payload < 56)
        let hdr = nc[1];
        if (0xc0..=0xf7).contains(&hdr) {
            nc[1] = hdr + 1;
        } else {
            nc[2] += 1;
        }
        assert!(decode_unsigned(&nc).is_err());
    }
}

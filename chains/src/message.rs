//! The chain-neutral `message` chain: a withdrawal whose "transfer" is a
//! message for the wallet key to sign (an off-chain statement, a login
//! challenge, a transaction of a chain Custos has no adapter for).
//!
//! # Format
//!
//! - **Chain**: [`MESSAGE_CHAIN`] (`message`), native asset `MSG`.
//! - **Destination**: the message itself, lowercase hex, 1 to
//!   [`MAX_MESSAGE_BYTES`] bytes (the approval statement's destination field
//!   holds at most 256 characters). Approvals bind the destination, so an
//!   approver signs exactly the bytes that will be signed.
//! - **Unsigned "transaction"**: the message bytes. A signer decodes the
//!   approved destination itself and refuses any other bytes.
//! - **Digest** (the signing session's log entry, the audit replay): SHA-256
//!   of the message ([`message_digest`]).
//! - **What the key signs**: the message itself, as its scheme signs a
//!   message: Ed25519 (RFC 8032) and BIP340 over the raw bytes; an ECDSA key
//!   signs only a 32-byte message (a digest made by the client).
//!
//! Nothing is broadcast: the withdrawal ends `signed`, with the signature.

use bitcoin::hashes::{Hash, sha256};

use crate::adapter::{ApprovedTransfer, ChainAdapter, CheckedDetail, CheckedTransaction, only_one};
use crate::error::{ChainError, Result};
use crate::family::{ChainFamily, CheckedAddress};

/// The name of the message chain.
pub const MESSAGE_CHAIN: &str = "message";

/// The symbol of its one asset.
pub const MESSAGE_ASSET: &str = "MSG";

/// Longest message, bytes (its hex fills the statement's 256-character
/// destination field).
pub const MAX_MESSAGE_BYTES: usize = 128;

/// The message a destination names: lowercase or uppercase hex of 1 to
/// [`MAX_MESSAGE_BYTES`] bytes.
pub fn parse_message(destination: &str) -> Result<Vec<u8>> {
    let bad = |why: String| ChainError::InvalidAddress(format!("message: {why}"));
    if destination.is_empty() || !destination.len().is_multiple_of(2) {
        return Err(bad(format!(
            "an even number of hex digits is expected, got {}",
            destination.len()
        )));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let bytes = destination
        .as_bytes()
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => Ok((h << 4) | l),
            _ => Err(bad(format!("not a hex digit at position {}", 2 * i))),
        })
        .collect::<Result<Vec<u8>>>()?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(bad(format!(
            "{} bytes, at most {MAX_MESSAGE_BYTES} are signed",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// The canonical destination of `message`: lowercase hex.
pub fn canonical(message: &[u8]) -> String {
    message.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of a message (its signing session's log entry).
pub fn message_digest(message: &[u8]) -> [u8; 32] {
    sha256::Hash::hash(message).to_byte_array()
}

/// Checks a destination and returns its canonical form.
pub fn check_message_address(destination: &str) -> Result<CheckedAddress> {
    Ok(CheckedAddress {
        canonical: canonical(&parse_message(destination)?),
        unchecksummed: false,
    })
}

/// The message chain as a signer configures it (`[cosigner] chains`: a
/// signer that does not list it signs no message withdrawal).
#[derive(Clone, Debug, Default)]
pub struct MessageAdapter;

impl ChainAdapter for MessageAdapter {
    fn name(&self) -> &str {
        MESSAGE_CHAIN
    }

    fn family(&self) -> ChainFamily {
        ChainFamily::Message
    }

    fn wallet_address(&self, public_key: &[u8]) -> Result<String> {
        Ok(canonical(public_key))
    }

    fn check_unsigned(
        &self,
        unsigned: &[u8],
        approved: &[ApprovedTransfer<'_>],
        _public_key: &[u8],
    ) -> Result<CheckedTransaction> {
        let w = only_one(approved, "a message withdrawal signs one message")?;
        if w.asset != MESSAGE_ASSET {
            return Err(ChainError::InvalidAsset(format!(
                "asset {} on {MESSAGE_CHAIN}: only {MESSAGE_ASSET} is signed",
                w.asset
            )));
        }
        let message = parse_message(w.destination)?;
        if unsigned != message.as_slice() {
            return Err(ChainError::InvalidRequest {
                field: "unsigned_tx",
                reason: format!(
                    "the message to sign ({} bytes, SHA-256 {}) is not the approved message ({} bytes, SHA-256 {})",
                    unsigned.len(),
                    canonical(&message_digest(unsigned)),
                    message.len(),
                    canonical(&message_digest(&message)),
                ),
            });
        }
        Ok(CheckedTransaction {
            digests: vec![message_digest(&message)],
            detail: CheckedDetail::Message(message),
        })
    }

    fn check_replacement(&self, _: &CheckedTransaction, _: &CheckedTransaction) -> Result<()> {
        Err(ChainError::InvalidRequest {
            field: "unsigned_tx",
            reason: "a signed message is never replaced".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approved<'a>(destination: &'a str) -> ApprovedTransfer<'a> {
        ApprovedTransfer {
            withdrawal_id: "w-msg",
            asset: MESSAGE_ASSET,
            destination,
            amount: 1,
            fee_cap: 0,
        }
    }

    #[test]
    fn messages_are_hex_of_bounded_length() {
        assert_eq!(parse_message("00FFab").unwrap(), vec![0, 255, 171]);
        assert_eq!(check_message_address("00FFab").unwrap().canonical, "00ffab");
        for bad in ["", "0", "zz", "0g", &"00".repeat(MAX_MESSAGE_BYTES + 1)] {
            assert!(parse_message(bad).is_err(), "{bad}");
        }
        assert!(parse_message(&"ab".repeat(MAX_MESSAGE_BYTES)).is_ok());
        // The digest is SHA-256 of the bytes ("abc", FIPS 180-2).
        assert_eq!(
            canonical(&message_digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// A signer checks the bytes it is asked to sign against the approved
    /// destination and names the difference; the digest is its own.
    #[test]
    fn the_adapter_signs_only_the_approved_message() {
        let a = MessageAdapter;
        let text = canonical(b"hello custos");
        let checked = a
            .check_unsigned(b"hello custos", &[approved(&text)], &[])
            .unwrap();
        assert_eq!(checked.digests, vec![message_digest(b"hello custos")]);
        assert_eq!(checked.message(0), b"hello custos".to_vec());
        let e = a
            .check_unsigned(b"hello custoz", &[approved(&text)], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the approved message"), "{e}");
        let mut other = approved(&text);
        other.asset = "ETH";
        assert!(a.check_unsigned(b"hello custos", &[other], &[]).is_err());
        assert!(
            a.check_unsigned(b"hello custos", &[approved(&text), approved(&text)], &[])
                .is_err()
        );
        assert!(a.check_replacement(&checked, &checked).is_err());
    }
}

//! The frame a protocol message travels in between signers.
//!
//! ```text
//! version u8 (=1) | execution id [32] | sender u16 BE | recipient u16 BE (0xFFFF = broadcast)
//! | payload length u32 BE | payload (JSON of the cggmp21 round message)
//! ```
//! Decoding checks every length before it allocates, so a malformed or
//! oversized frame is an error, never a panic.

use crate::eid::ExecutionId;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 32 + 2 + 2 + 4;
const BROADCAST: u16 = u16::MAX;
/// Largest payload accepted (aux-info rounds carry big proofs, well below this).
pub const MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Session the message belongs to.
    pub eid: ExecutionId,
    /// Session-local index the sender claims.
    pub sender: u16,
    /// `None` for broadcast, else the session-local recipient.
    pub recipient: Option<u16>,
    /// Serialised round message.
    pub payload: Vec<u8>,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its header or than its declared payload.
    #[error("frame truncated: {0} bytes")]
    Truncated(usize),
    /// Unknown format version.
    #[error("unsupported frame version {0}")]
    Version(u8),
    /// Declared payload larger than [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// Bytes after the declared payload.
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
}

impl Frame {
    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.push(VERSION);
        out.extend_from_slice(&self.eid.0);
        out.extend_from_slice(&self.sender.to_be_bytes());
        out.extend_from_slice(&self.recipient.unwrap_or(BROADCAST).to_be_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes and length-checks a frame.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        if bytes.len() < HEADER_LEN {
            return Err(FrameError::Truncated(bytes.len()));
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        if header[0] != VERSION {
            return Err(FrameError::Version(header[0]));
        }
        let mut eid = [0u8; 32];
        eid.copy_from_slice(&header[1..33]);
        let sender = u16::from_be_bytes([header[33], header[34]]);
        let recipient = u16::from_be_bytes([header[35], header[36]]);
        let len = u32::from_be_bytes([header[37], header[38], header[39], header[40]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        if rest.len() < len {
            return Err(FrameError::Truncated(bytes.len()));
        }
        if rest.len() > len {
            return Err(FrameError::Trailing(rest.len() - len));
        }
        Ok(Frame {
            eid: ExecutionId(eid),
            sender,
            recipient: (recipient != BROADCAST).then_some(recipient),
            payload: rest.to_vec(),
        })
    }

    /// Reads only the execution id, for routing a frame to its session.
    pub fn peek_eid(bytes: &[u8]) -> Option<ExecutionId> {
        if bytes.len() < HEADER_LEN || bytes[0] != VERSION {
            return None;
        }
        let mut eid = [0u8; 32];
        eid.copy_from_slice(&bytes[1..33]);
        Some(ExecutionId(eid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let f = Frame {
            eid: ExecutionId([7; 32]),
            sender: 2,
            recipient: Some(1),
            payload: b"{}".to_vec(),
        };
        assert_eq!(Frame::decode(&f.encode()), Ok(f.clone()));
        let b = Frame {
            recipient: None,
            ..f
        };
        assert_eq!(Frame::decode(&b.encode()), Ok(b));
    }

    #[test]
    fn rejects_bad_lengths() {
        let f = Frame {
            eid: ExecutionId([7; 32]),
            sender: 0,
            recipient: None,
            payload: vec![1, 2, 3],
        };
        let enc = f.encode();
        assert!(matches!(
            Frame::decode(&enc[..enc.len() - 1]),
            Err(FrameError::Truncated(_))
        ));
        let mut long = enc.clone();
        long.push(0);
        assert_eq!(Frame::decode(&long), Err(FrameError::Trailing(1)));
        let mut huge = enc.clone();
        huge[37..41].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Frame::decode(&huge), Err(FrameError::TooLarge(_))));
        let mut v = enc;
        v[0] = 9;
        assert_eq!(Frame::decode(&v), Err(FrameError::Version(9)));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha, ..ProptestConfig::default() })]
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Frame::decode(&bytes);
            let _ = Frame::peek_eid(&bytes);
        }
    }
}

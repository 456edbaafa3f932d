//! Wire codec for `/custos/mpc/1`.
//!
//! Request: a 4-byte big-endian length followed by exactly that many payload
//! bytes. Response: a single status byte ([`Ack`]). One request per substream.
//!
//! The length is checked against the configured limit *before* any payload is
//! read, and the payload buffer grows with the bytes actually received rather
//! than being sized from the (untrusted) header, so a peer claiming a huge
//! message cannot make us allocate it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// Protocol name negotiated on every substream.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/custos/mpc/1");

/// Size of the length prefix in bytes.
const LEN_PREFIX: usize = 4;

/// Initial buffer capacity: large enough for typical round messages, small
/// enough that a lying length header costs nothing.
const INITIAL_CAPACITY: usize = 64 * 1024;

/// Status byte sent back for every request that was read completely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// The message was handed to the local receiver.
    Accepted,
    /// The receiver's inbound queue for this peer is full; the message was
    /// not delivered and may be retried later.
    Busy,
}

impl Ack {
    fn to_byte(self) -> u8 {
        match self {
            Ack::Accepted => 0x00,
            Ack::Busy => 0x01,
        }
    }

    fn from_byte(b: u8) -> io::Result<Self> {
        match b {
            0x00 => Ok(Ack::Accepted),
            0x01 => Ok(Ack::Busy),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown acknowledgement byte 0x{other:02x}"),
            )),
        }
    }
}

/// Length-prefixed raw bytes codec with a hard size limit on reads.
#[derive(Debug, Clone)]
pub struct BytesCodec {
    max_message_bytes: usize,
    /// Inbound requests dropped because they were oversized or malformed.
    /// libp2p only logs such read failures, so the codec counts them itself.
    rejected: Arc<AtomicU64>,
}

impl BytesCodec {
    /// A codec refusing requests larger than `max_message_bytes`; every
    /// rejected inbound request increments `rejected`.
    pub fn new(max_message_bytes: usize, rejected: Arc<AtomicU64>) -> Self {
        Self {
            max_message_bytes,
            rejected,
        }
    }

    async fn read_frame<T>(&self, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut len_buf = [0u8; LEN_PREFIX];
        io.read_exact(&mut len_buf).await?;
        let claimed = u32::from_be_bytes(len_buf);
        let len = usize::try_from(claimed).map_err(|_| too_large(u64::from(claimed)))?;
        if len > self.max_message_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "message of {len} bytes exceeds the limit of {} bytes",
                    self.max_message_bytes
                ),
            ));
        }
        let mut buf = Vec::with_capacity(len.min(INITIAL_CAPACITY));
        // `take` bounds the read to the claimed length; `read_to_end` grows
        // the buffer only as data really arrives.
        let read = io.take(claimed.into()).read_to_end(&mut buf).await?;
        if read != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended after {read} of {len} announced bytes"),
            ));
        }
        Ok(buf)
    }
}

fn too_large(len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("message of {len} bytes is too large for this platform"),
    )
}

impl libp2p::request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Ack;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let res = self.read_frame(io).await;
        if let Err(e) = &res {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            // Size and error only: payloads are never logged.
            tracing::warn!(error = %e, "rejected inbound p2p message");
        }
        res
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Ack>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        Ack::from_byte(b[0])
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let len = u32::try_from(req.len()).map_err(|_| too_large(req.len() as u64))?;
        // Header and payload in one write for small messages: one yamux frame,
        // one syscall. Large payloads are written in place to avoid a copy.
        if req.len() <= INITIAL_CAPACITY {
            let mut frame = Vec::with_capacity(LEN_PREFIX + req.len());
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&req);
            io.write_all(&frame).await?;
        } else {
            io.write_all(&len.to_be_bytes()).await?;
            io.write_all(&req).await?;
        }
        io.flush().await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        res: Ack,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[res.to_byte()]).await?;
        io.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    fn codec(max: usize) -> (BytesCodec, Arc<AtomicU64>) {
        let rejected = Arc::new(AtomicU64::new(0));
        (BytesCodec::new(max, rejected.clone()), rejected)
    }

    #[tokio::test]
    async fn round_trip() {
        let (mut c, _) = codec(1024);
        let mut out = Vec::new();
        c.write_request(&PROTOCOL, &mut out, b"hello".to_vec())
            .await
            .unwrap();
        assert_eq!(&out[..4], &[0, 0, 0, 5]);
        let got = c
            .read_request(&PROTOCOL, &mut Cursor::new(out))
            .await
            .unwrap();
        assert_eq!(got, b"hello");
    }

    #[tokio::test]
    async fn oversized_header_rejected_before_payload() {
        let (mut c, rejected) = codec(1024);
        // Claims 4 GiB - 1 but carries 3 bytes: must fail on the header alone.
        let frame = vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let err = c
            .read_request(&PROTOCOL, &mut Cursor::new(frame))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        assert_eq!(rejected.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn truncated_payload_rejected() {
        let (mut c, rejected) = codec(1024);
        let frame = vec![0, 0, 0, 10, 1, 2, 3];
        let err = c
            .read_request(&PROTOCOL, &mut Cursor::new(frame))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(rejected.load(Ordering::Relaxed), 1);
        // Truncated header too.
        let err = c
            .read_request(&PROTOCOL, &mut Cursor::new(vec![0, 0]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn empty_and_limit_sized_messages() {
        let (mut c, _) = codec(8);
        for payload in [Vec::new(), vec![7u8; 8]] {
            let mut out = Vec::new();
            c.write_request(&PROTOCOL, &mut out, payload.clone())
                .await
                .unwrap();
            let got = c
                .read_request(&PROTOCOL, &mut Cursor::new(out))
                .await
                .unwrap();
            assert_eq!(got, payload);
        }
    }

    #[tokio::test]
    async fn random_inputs_never_panic() {
        // Cheap deterministic fuzzing: random headers and bodies, some with
        // plausible lengths, must decode or fail cleanly.
        let (mut c, _) = codec(4096);
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 && bytes.len() >= 4 {
                let claimed = (next() % 80) as u32;
                bytes[..4].copy_from_slice(&claimed.to_be_bytes());
            }
            let res = c
                .read_request(&PROTOCOL, &mut Cursor::new(bytes.clone()))
                .await;
            if let Ok(payload) = res {
                assert!(payload.len() + 4 <= bytes.len());
            }
            let _ = c.read_response(&PROTOCOL, &mut Cursor::new(bytes)).await;
        }
    }

    #[tokio::test]
    async fn ack_bytes() {
        let (mut c, _) = codec(8);
        for ack in [Ack::Accepted, Ack::Busy] {
            let mut out = Vec::new();
            c.write_response(&PROTOCOL, &mut out, ack).await.unwrap();
            let got = c
                .read_response(&PROTOCOL, &mut Cursor::new(out))
                .await
                .unwrap();
            assert_eq!(got, ack);
        }
        let err = c
            .read_response(&PROTOCOL, &mut Cursor::new(vec![9]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}

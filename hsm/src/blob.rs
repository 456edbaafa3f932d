//! The sealed-blob format shared by all backends (version 1).
//!
//! ```text
//! offset  size  field
//! 0       7     magic "CSTSEAL"
//! 7       1     format version (1)
//! 8       1     AEAD algorithm: 1 = XChaCha20-Poly1305, 2 = AES-256-GCM
//!         1+n   backend name (u8 length, ASCII), e.g. "software", "pkcs11"
//!         1+n   KEK id (u8 length, ASCII), as returned by `Sealer::kek_id`
//!         2+n   backend parameters (u16 BE length, ASCII), e.g. "argon2id;m=65536;t=3;p=1"
//!         2+n   node id   (u16 BE length, UTF-8)
//!         2+n   key id    (u16 BE length, UTF-8)
//!         2+n   share id  (u16 BE length, UTF-8)
//!         1+n   nonce (u8 length; 24 for XChaCha20-Poly1305, 12 for AES-GCM)
//!         rest  ciphertext || 16-byte tag
//! ```
//!
//! The associated data of the AEAD is the whole header (everything before the
//! ciphertext), so the backend, KEK, parameters, context and nonce are all
//! authenticated: changing any bit makes the blob fail to unseal. The context
//! is stored in clear so tools (re-seal, inspection) can read what a blob is
//! bound to; it is not secret.

use crate::{HsmError, SealContext};

/// The magic bytes every sealed blob starts with.
pub const MAGIC: &[u8; 7] = b"CSTSEAL";
/// The current format version.
pub const VERSION: u8 = 1;
/// Longest accepted node, key or share id, in bytes.
pub const MAX_ID_LEN: usize = 1024;
/// Length of the authentication tag appended to the ciphertext.
pub const TAG_LEN: usize = 16;

/// The AEAD algorithm of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Aead {
    /// XChaCha20-Poly1305 (software backend), 24-byte nonce.
    XChaCha20Poly1305,
    /// AES-256-GCM with a 128-bit tag (PKCS#11 backend, computed inside the HSM), 12-byte nonce.
    Aes256Gcm,
}

impl Aead {
    fn code(self) -> u8 {
        match self {
            Aead::XChaCha20Poly1305 => 1,
            Aead::Aes256Gcm => 2,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Aead::XChaCha20Poly1305),
            2 => Some(Aead::Aes256Gcm),
            _ => None,
        }
    }

    /// The nonce length this algorithm uses.
    pub fn nonce_len(self) -> usize {
        match self {
            Aead::XChaCha20Poly1305 => 24,
            Aead::Aes256Gcm => 12,
        }
    }
}

/// What a blob's header says, owned (for tools: re-seal, inspection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Format version.
    pub version: u8,
    /// AEAD algorithm.
    pub aead: Aead,
    /// Backend that sealed it.
    pub backend: String,
    /// KEK id it was sealed under.
    pub kek_id: String,
    /// Backend parameters.
    pub params: String,
    /// Node id it is bound to.
    pub node_id: String,
    /// Key id it is bound to.
    pub key_id: String,
    /// Share id it is bound to.
    pub share_id: String,
}

impl BlobInfo {
    /// The context this blob is bound to.
    pub fn context(&self) -> SealContext<'_> {
        SealContext {
            node_id: &self.node_id,
            key_id: &self.key_id,
            share_id: &self.share_id,
        }
    }
}

/// Reads the header of a sealed blob without unsealing it.
pub fn inspect(sealed: &[u8]) -> Result<BlobInfo, HsmError> {
    let p = parse(sealed)?;
    Ok(BlobInfo {
        version: VERSION,
        aead: p.aead,
        backend: p.backend.to_owned(),
        kek_id: p.kek_id.to_owned(),
        params: p.params.to_owned(),
        node_id: p.node_id.to_owned(),
        key_id: p.key_id.to_owned(),
        share_id: p.share_id.to_owned(),
    })
}

/// Checks that a context can be written into a header.
pub(crate) fn check_context(ctx: &SealContext<'_>) -> Result<(), HsmError> {
    for (name, v) in [
        ("node_id", ctx.node_id),
        ("key_id", ctx.key_id),
        ("share_id", ctx.share_id),
    ] {
        if v.is_empty() || v.len() > MAX_ID_LEN {
            return Err(HsmError::Config(format!(
                "{name} must be 1..={MAX_ID_LEN} bytes, got {}",
                v.len()
            )));
        }
    }
    Ok(())
}

/// Encodes a header; the result is also the AEAD associated data.
pub(crate) fn encode_header(
    aead: Aead,
    backend: &str,
    kek_id: &str,
    params: &str,
    ctx: &SealContext<'_>,
    nonce: &[u8],
) -> Result<Vec<u8>, HsmError> {
    check_context(ctx)?;
    let too_long = |what: &str| HsmError::Config(format!("{what} too long for the blob header"));
    let mut h = Vec::with_capacity(64 + kek_id.len() + params.len());
    h.extend_from_slice(MAGIC);
    h.push(VERSION);
    h.push(aead.code());
    for (what, v) in [("backend", backend), ("kek id", kek_id)] {
        h.push(u8::try_from(v.len()).map_err(|_| too_long(what))?);
        h.extend_from_slice(v.as_bytes());
    }
    for (what, v) in [
        ("params", params),
        ("node id", ctx.node_id),
        ("key id", ctx.key_id),
        ("share id", ctx.share_id),
    ] {
        h.extend_from_slice(
            &u16::try_from(v.len())
                .map_err(|_| too_long(what))?
                .to_be_bytes(),
        );
        h.extend_from_slice(v.as_bytes());
    }
    if nonce.len() != aead.nonce_len() {
        return Err(HsmError::Crypto(
            "nonce length does not match the algorithm".into(),
        ));
    }
    h.push(u8::try_from(nonce.len()).map_err(|_| too_long("nonce"))?);
    h.extend_from_slice(nonce);
    Ok(h)
}

/// A parsed blob borrowing from the input.
pub(crate) struct Parsed<'a> {
    pub aead: Aead,
    pub backend: &'a str,
    pub kek_id: &'a str,
    pub params: &'a str,
    pub node_id: &'a str,
    pub key_id: &'a str,
    pub share_id: &'a str,
    pub nonce: &'a [u8],
    /// Everything before the ciphertext: the associated data.
    pub header: &'a [u8],
    /// Ciphertext with the tag appended.
    pub ciphertext: &'a [u8],
}

fn invalid(reason: &str) -> HsmError {
    HsmError::SealedBlobInvalid(reason.to_owned())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HsmError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| invalid("truncated header"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, HsmError> {
        Ok(self.take(1)?[0])
    }

    fn str8(&mut self, what: &str) -> Result<&'a str, HsmError> {
        let n = usize::from(self.u8()?);
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| invalid(&format!("{what} is not UTF-8")))
    }

    fn str16(&mut self, what: &str) -> Result<&'a str, HsmError> {
        let b = self.take(2)?;
        let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| invalid(&format!("{what} is not UTF-8")))
    }
}

/// Parses a blob's structure (no cryptographic check).
pub(crate) fn parse(sealed: &[u8]) -> Result<Parsed<'_>, HsmError> {
    let mut r = Reader {
        buf: sealed,
        pos: 0,
    };
    if r.take(MAGIC.len())
        .map_err(|_| invalid("not a sealed blob (too short)"))?
        != MAGIC
    {
        return Err(invalid("not a sealed blob (bad magic)"));
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(invalid(&format!("unsupported format version {version}")));
    }
    let aead = Aead::from_code(r.u8()?).ok_or_else(|| invalid("unknown AEAD algorithm"))?;
    let backend = r.str8("backend")?;
    let kek_id = r.str8("kek id")?;
    let params = r.str16("params")?;
    let node_id = r.str16("node id")?;
    let key_id = r.str16("key id")?;
    let share_id = r.str16("share id")?;
    let nonce_len = usize::from(r.u8()?);
    if nonce_len != aead.nonce_len() {
        return Err(invalid("nonce length does not match the algorithm"));
    }
    let nonce = r.take(nonce_len)?;
    let header = &sealed[..r.pos];
    let ciphertext = &sealed[r.pos..];
    if ciphertext.len() < TAG_LEN {
        return Err(invalid("truncated ciphertext"));
    }
    Ok(Parsed {
        aead,
        backend,
        kek_id,
        params,
        node_id,
        key_id,
        share_id,
        nonce,
        header,
        ciphertext,
    })
}

/// Parses and checks that a blob was sealed by this backend and KEK for `ctx`.
pub(crate) fn parse_for<'a>(
    sealed: &'a [u8],
    aead: Aead,
    backend: &str,
    kek_id: &str,
    ctx: &SealContext<'_>,
) -> Result<Parsed<'a>, HsmError> {
    let p = parse(sealed)?;
    if p.backend != backend {
        return Err(HsmError::SealedBlobInvalid(format!(
            "sealed by backend {:?}, this sealer is {backend:?}",
            p.backend
        )));
    }
    if p.aead != aead {
        return Err(invalid("algorithm does not match the backend"));
    }
    if p.kek_id != kek_id {
        return Err(HsmError::SealedBlobInvalid(format!(
            "sealed under KEK {:?}, this sealer holds KEK {kek_id:?}",
            p.kek_id
        )));
    }
    for (name, got, want) in [
        ("node", p.node_id, ctx.node_id),
        ("key", p.key_id, ctx.key_id),
        ("share", p.share_id, ctx.share_id),
    ] {
        if got != want {
            return Err(HsmError::SealedBlobInvalid(format!(
                "bound to {name} {got:?}, expected {want:?}"
            )));
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: SealContext<'static> = SealContext {
        node_id: "node-a",
        key_id: "key-1",
        share_id: "share",
    };

    #[test]
    fn header_round_trips() {
        let h = encode_header(Aead::Aes256Gcm, "pkcs11", "kek", "gcm", &CTX, &[7; 12]).unwrap();
        let mut blob = h.clone();
        blob.extend_from_slice(&[0u8; 20]);
        let p = parse(&blob).unwrap();
        assert_eq!(p.header, &h[..]);
        assert_eq!(p.ciphertext.len(), 20);
        let info = inspect(&blob).unwrap();
        assert_eq!(info.context(), CTX);
        assert_eq!(info.kek_id, "kek");
        assert_eq!(info.params, "gcm");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut blob = encode_header(
            Aead::XChaCha20Poly1305,
            "software",
            "k",
            "p",
            &CTX,
            &[1; 24],
        )
        .unwrap();
        blob.extend_from_slice(&[0u8; TAG_LEN]);
        for n in 0..blob.len() {
            assert!(
                matches!(parse(&blob[..n]), Err(HsmError::SealedBlobInvalid(_))),
                "{n}"
            );
        }
        assert!(parse(&blob).is_ok());
    }

    #[test]
    fn empty_or_huge_ids_are_refused() {
        let bad = SealContext { node_id: "", ..CTX };
        assert!(matches!(check_context(&bad), Err(HsmError::Config(_))));
        let long = "x".repeat(MAX_ID_LEN + 1);
        let bad = SealContext {
            key_id: &long,
            ..CTX
        };
        assert!(matches!(check_context(&bad), Err(HsmError::Config(_))));
    }
}

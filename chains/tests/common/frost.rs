//! FROST 2-of-3 (secp256k1-tr) in process, standing in for the threshold
//! Schnorr signers: key generation and one signature per digest.

use custos_mpc::frost::{self, FrostKeyShare, FrostTaproot, Secp256k1Tr};
use custos_mpc::sim;

pub type Share = FrostKeyShare<Secp256k1Tr>;

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// A 2-of-3 taproot key: every party's share.
pub async fn keygen_async() -> Vec<Share> {
    sim::keygen_with::<FrostTaproot>(2, vec![(); 3], None)
        .await
        .unwrap()
}

/// BIP340 signatures of `signers` (keygen indices) over each digest, one
/// pool item per digest, combined and verified by the library.
pub async fn sign_async(shares: &[Share], signers: &[u16], digests: &[[u8; 32]]) -> Vec<[u8; 64]> {
    let mut out = Vec::new();
    for d in digests {
        let sig = sim::sign_with::<FrostTaproot>(shares, signers, d)
            .await
            .unwrap();
        out.push(frost::signature_bytes(&sig).try_into().unwrap());
    }
    out
}

/// [`keygen_async`] outside a runtime.
pub fn keygen() -> Vec<Share> {
    block_on(keygen_async())
}

/// [`sign_async`] outside a runtime.
pub fn sign(shares: &[Share], signers: &[u16], digests: &[[u8; 32]]) -> Vec<[u8; 64]> {
    block_on(sign_async(shares, signers, digests))
}

/// The key's BIP341 internal key (x-only), what its P2TR address commits to.
pub fn internal_key(shares: &[Share]) -> Vec<u8> {
    shares[0].public().dkg_key_bytes()
}

/// The key signatures verify under (x-only), the taproot output key.
pub fn output_key(shares: &[Share]) -> Vec<u8> {
    shares[0].public().key_bytes()
}

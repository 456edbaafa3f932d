//! Round-trip latency of `P2pHandle::send` between two nodes on loopback.
//!
//! `cargo bench -p custos-signer-node --bench p2p` prints p50/p99 of
//! send → acknowledgement for 64 B and 256 KiB payloads on an established
//! connection (the dial is excluded by a warm-up).

use std::time::{Duration, Instant};

use custos_signer_node::p2p::{self, P2pConfig, PinnedPeer};
use libp2p::identity::Keypair;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let loopback: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
    // B pins A with a real address (B never dials it in this benchmark):
    // pick a port that is free now for A to listen on.
    let addr_a: libp2p::Multiaddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("/ip4/127.0.0.1/tcp/{}", l.local_addr()?.port()).parse()?
    };

    let (hb, mut rx_b, task_b) = p2p::start(P2pConfig::new(
        kb.clone(),
        vec![loopback],
        vec![PinnedPeer {
            node_id: "bench-a".into(),
            peer_id: ka.public().to_peer_id(),
            addr: addr_a.clone(),
        }],
    ))
    .await?;
    let addr_b = hb
        .listen_addrs()
        .await
        .into_iter()
        .next()
        .ok_or("B not listening")?;
    let (ha, _rx_a, task_a) = p2p::start(P2pConfig::new(
        ka,
        vec![addr_a],
        vec![PinnedPeer {
            node_id: "bench-b".into(),
            peer_id: kb.public().to_peer_id(),
            addr: addr_b,
        }],
    ))
    .await?;
    let drain = tokio::spawn(async move { while rx_b.recv().await.is_some() {} });
    let pb = hb.local_peer_id();

    let t = Instant::now();
    ha.send(pb, vec![0u8; 64]).await?;
    println!(
        "p2p first send incl. dial (TCP + Noise + Yamux): {:.1?}",
        t.elapsed()
    );

    println!("p2p send round trip (send -> ack), loopback, established connection");
    for (label, size, iters) in [("64 B", 64usize, 5000usize), ("256 KiB", 256 * 1024, 500)] {
        let payload = vec![0xA5u8; size];
        for _ in 0..iters / 10 {
            ha.send(pb, payload.clone()).await?;
        }
        let mut samples = Vec::with_capacity(iters);
        for _ in 0..iters {
            let msg = payload.clone();
            let t = Instant::now();
            ha.send(pb, msg).await?;
            samples.push(t.elapsed());
        }
        samples.sort();
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        println!(
            "  {label:>8}: n={iters:<5} p50={:>9.1?} p99={:>9.1?} mean={:>9.1?} max={:>9.1?}",
            percentile(&samples, 0.50),
            percentile(&samples, 0.99),
            mean,
            samples[samples.len() - 1],
        );
    }
    task_a.shutdown().await;
    task_b.shutdown().await;
    drain.abort();
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Two workers: what a signer daemon gets on a small host.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}

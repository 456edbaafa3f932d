//! Writes pregenerated safe-prime pairs as JSON, for test fixtures:
//! `cargo run --release -p custos-mpc --example gen_primes -- 5 out.json`.
//! Test primes are not secret; production primes never leave a signer unsealed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().ok_or("usage: gen_primes N OUT")?.parse()?;
    let out = args.next().ok_or("usage: gen_primes N OUT")?;
    let primes: Vec<custos_mpc::Primes> = (0..n)
        .map(|i| {
            eprintln!("generating safe primes for party {i}...");
            custos_mpc::primes::generate()
        })
        .collect();
    std::fs::write(out, serde_json::to_vec_pretty(&primes)?)?;
    Ok(())
}

//! Safe-prime generation, the slow part of aux info (seconds per party).

use rand_core::OsRng;

use crate::protocol::Primes;

/// Generates a fresh pair of safe primes for one party's Paillier key.
/// CPU-bound for several seconds: call it from a blocking thread.
pub fn generate() -> Primes {
    Primes::generate(&mut OsRng)
}

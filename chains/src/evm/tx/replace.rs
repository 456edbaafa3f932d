//! Replacing a stuck transaction: the same transfer at the same nonce, with
//! higher fees, never above the approved fee cap.
//!
//! Every replacement of a transaction shares its nonce, so at most one of
//! them can ever be mined: signing several cannot move the funds twice. That
//! is why a signer may sign a replacement without new approvals as long as
//! [`check_replacement`] holds and the fee stays within the approved cap
//! (which [`crate::evm::tx::check_against`] enforces on every version).

use std::fmt;

use alloy_primitives::U256;

use crate::error::Result;
use crate::evm::tx::codec::UnsignedTx;
use crate::evm::tx::transfer::DecodedTransfer;

/// The fees of a replacement transaction (wei per gas).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplacementFees {
    /// EIP-1559 max fee per gas.
    pub max_fee_per_gas: u128,
    /// EIP-1559 max priority fee per gas.
    pub max_priority_fee_per_gas: u128,
}

fn raised(fee: u128, percent: u32) -> u128 {
    // Rounded up, and at least 1 wei more, so a bump is always a bump.
    let add = fee.saturating_mul(u128::from(percent)).div_ceil(100).max(1);
    fee.saturating_add(add)
}

/// The fees for replacing `prev`: each fee raised by at least `bump_percent`
/// (nodes refuse a replacement that is not at least ~10 % dearer) and at
/// least the current estimate, with `gas_limit * max_fee_per_gas` kept within
/// `fee_cap_wei`. `None` when the cap leaves no room for a valid bump.
pub fn bumped_fees(
    prev: &DecodedTransfer,
    estimate: ReplacementFees,
    bump_percent: u32,
    fee_cap_wei: U256,
) -> Option<ReplacementFees> {
    let ceiling = if prev.gas_limit == 0 {
        0
    } else {
        u128::try_from(fee_cap_wei / U256::from(prev.gas_limit)).unwrap_or(u128::MAX)
    };
    let min_fee = raised(prev.max_fee_per_gas, bump_percent);
    let min_tip = raised(prev.max_priority_fee_per_gas, bump_percent);
    if min_fee > ceiling || min_tip > ceiling {
        return None;
    }
    let max_fee = min_fee.max(estimate.max_fee_per_gas).min(ceiling);
    let tip = min_tip.max(estimate.max_priority_fee_per_gas).min(max_fee);
    Some(ReplacementFees {
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
    })
}

/// `unsigned` with other fees: same chain, nonce, gas limit, destination,
/// value and calldata.
pub fn with_fees(unsigned: &UnsignedTx, fees: ReplacementFees) -> Result<UnsignedTx> {
    let mut tx = unsigned.as_eip1559().clone();
    tx.max_fee_per_gas = fees.max_fee_per_gas;
    tx.max_priority_fee_per_gas = fees.max_priority_fee_per_gas;
    UnsignedTx::from_eip1559(tx)
}

/// Why a transaction is not a valid replacement of another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplacementMismatch {
    /// The transfer (chain, destination, value, token, recipient or amount) changed.
    Transfer(&'static str),
    /// Another nonce: both could be mined.
    Nonce {
        /// The replaced transaction's nonce.
        previous: u64,
        /// The replacement's.
        actual: u64,
    },
    /// Another gas limit.
    GasLimit {
        /// The replaced transaction's.
        previous: u64,
        /// The replacement's.
        actual: u64,
    },
    /// Fees not raised: the max fee must rise and the tip must not fall.
    FeesNotRaised {
        /// Previous (max fee, tip).
        previous: (u128, u128),
        /// Replacement's (max fee, tip).
        actual: (u128, u128),
    },
}

impl ReplacementMismatch {
    /// The field's stable name.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Transfer(f) => f,
            Self::Nonce { .. } => "nonce",
            Self::GasLimit { .. } => "gas_limit",
            Self::FeesNotRaised { .. } => "max_fee_per_gas",
        }
    }
}

impl fmt::Display for ReplacementMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a replacement of the signed transaction: ")?;
        match self {
            Self::Transfer(field) => write!(f, "{field} differs"),
            Self::Nonce { previous, actual } => {
                write!(f, "nonce {actual}, the signed transaction has {previous}")
            }
            Self::GasLimit { previous, actual } => write!(
                f,
                "gas limit {actual}, the signed transaction has {previous}"
            ),
            Self::FeesNotRaised { previous, actual } => write!(
                f,
                "fees (max {}, tip {}) wei/gas do not raise the signed (max {}, tip {})",
                actual.0, actual.1, previous.0, previous.1
            ),
        }
    }
}

/// Checks that `next` replaces `prev`: the same transfer, nonce and gas
/// limit, a higher max fee and a tip no lower. (The approved fee cap is
/// checked separately, against the approval.)
pub fn check_replacement(
    prev: &DecodedTransfer,
    next: &DecodedTransfer,
) -> std::result::Result<(), ReplacementMismatch> {
    let same: [(&'static str, bool); 6] = [
        ("chain_id", prev.chain_id == next.chain_id),
        ("to", prev.to == next.to),
        ("value", prev.value == next.value),
        ("asset", prev.token == next.token),
        ("recipient", prev.recipient == next.recipient),
        ("amount", prev.amount == next.amount),
    ];
    if let Some((field, _)) = same.iter().find(|(_, ok)| !ok) {
        return Err(ReplacementMismatch::Transfer(field));
    }
    if prev.nonce != next.nonce {
        return Err(ReplacementMismatch::Nonce {
            previous: prev.nonce,
            actual: next.nonce,
        });
    }
    if prev.gas_limit != next.gas_limit {
        return Err(ReplacementMismatch::GasLimit {
            previous: prev.gas_limit,
            actual: next.gas_limit,
        });
    }
    if next.max_fee_per_gas <= prev.max_fee_per_gas
        || next.max_priority_fee_per_gas < prev.max_priority_fee_per_gas
    {
        return Err(ReplacementMismatch::FeesNotRaised {
            previous: (prev.max_fee_per_gas, prev.max_priority_fee_per_gas),
            actual: (next.max_fee_per_gas, next.max_priority_fee_per_gas),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::evm::asset::Asset;
    use crate::evm::tx::request::{TransferRequest, build_unsigned};
    use crate::evm::tx::transfer::decode_transfer;
    use alloy_primitives::Address;
    use proptest::prelude::*;

    fn request(max_fee: u128, tip: u128) -> TransferRequest {
        TransferRequest {
            chain_id: 31337,
            from: Address::repeat_byte(1),
            recipient: Address::repeat_byte(2),
            asset: Asset::eth(),
            amount: U256::from(10u64).pow(U256::from(18u64)),
            nonce: 7,
            gas_limit: 21_000,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
        }
    }

    fn decoded(max_fee: u128, tip: u128) -> DecodedTransfer {
        decode_transfer(&build_unsigned(&request(max_fee, tip)).unwrap()).unwrap()
    }

    fn est(max: u128, tip: u128) -> ReplacementFees {
        ReplacementFees {
            max_fee_per_gas: max,
            max_priority_fee_per_gas: tip,
        }
    }

    #[test]
    fn bump_raises_both_fees_by_the_percentage_at_least() {
        let prev = decoded(1_000, 100);
        let cap = U256::from(21_000u64 * 10_000);
        let f = bumped_fees(&prev, est(500, 50), 20, cap).unwrap();
        assert_eq!(f, est(1_200, 120));
        // A higher estimate wins.
        let f = bumped_fees(&prev, est(5_000, 300), 20, cap).unwrap();
        assert_eq!(f, est(5_000, 300));
        // The estimate is clamped to the cap, but the bump still fits.
        let f = bumped_fees(&prev, est(50_000, 300), 20, cap).unwrap();
        assert_eq!(f, est(10_000, 300));
    }

    #[test]
    fn bump_is_refused_when_the_cap_leaves_no_room() {
        let prev = decoded(1_000, 100);
        assert_eq!(
            bumped_fees(&prev, est(0, 0), 20, U256::from(21_000u64 * 1_199)),
            None
        );
        assert!(bumped_fees(&prev, est(0, 0), 20, U256::from(21_000u64 * 1_200)).is_some());
        // A tiny fee and a zero tip still move by at least one wei.
        let tiny = decoded(1, 0);
        assert_eq!(
            bumped_fees(&tiny, est(0, 0), 10, U256::from(21_000u64 * 5)),
            Some(est(2, 1))
        );
    }

    #[test]
    fn replacement_must_keep_transfer_nonce_and_gas() {
        let prev = decoded(1_000, 100);
        let next = with_fees(
            &build_unsigned(&request(1_000, 100)).unwrap(),
            est(1_200, 120),
        )
        .unwrap();
        let next = decode_transfer(&next).unwrap();
        assert_eq!(check_replacement(&prev, &next), Ok(()));

        let mut other = next.clone();
        other.nonce = 8;
        assert_eq!(
            check_replacement(&prev, &other).unwrap_err().field(),
            "nonce"
        );
        let mut other = next.clone();
        other.amount += U256::from(1u8);
        assert_eq!(
            check_replacement(&prev, &other).unwrap_err().field(),
            "amount"
        );
        let mut other = next.clone();
        other.recipient = Address::repeat_byte(9);
        assert_eq!(
            check_replacement(&prev, &other).unwrap_err().field(),
            "recipient"
        );
        let mut other = next.clone();
        other.gas_limit = 30_000;
        assert_eq!(
            check_replacement(&prev, &other).unwrap_err().field(),
            "gas_limit"
        );
        // Same fees (a re-signature of the same transaction) or a lower tip.
        assert!(check_replacement(&prev, &prev).is_err());
        let mut other = next;
        other.max_priority_fee_per_gas = 99;
        let e = check_replacement(&prev, &other).unwrap_err();
        assert_eq!(e.field(), "max_fee_per_gas");
        assert!(e.to_string().contains("do not raise"), "{e}");
    }

    proptest! {
        #[test]
        fn bumped_fees_always_replace_and_stay_within_the_cap(
            fee in 1u128..1_000_000_000_000,
            tip_part in 0u128..=100,
            est_fee in 0u128..2_000_000_000_000,
            est_tip in 0u128..2_000_000_000_000,
            percent in 0u32..100,
            cap_per_gas in 0u128..3_000_000_000_000,
        ) {
            let tip = fee * tip_part / 100;
            let prev = decoded(fee, tip);
            let cap = U256::from(21_000u64) * U256::from(cap_per_gas);
            if let Some(f) = bumped_fees(&prev, est(est_fee, est_tip), percent, cap) {
                prop_assert!(U256::from(21_000u64) * U256::from(f.max_fee_per_gas) <= cap);
                prop_assert!(f.max_priority_fee_per_gas <= f.max_fee_per_gas);
                let next = with_fees(&build_unsigned(&request(fee, tip)).unwrap(), f).unwrap();
                let next = decode_transfer(&next).unwrap();
                prop_assert_eq!(check_replacement(&prev, &next), Ok(()));
                prop_assert!(f.max_fee_per_gas >= raised(fee, percent));
            } else {
                prop_assert!(raised(fee, percent) > cap_per_gas || raised(tip, percent) > cap_per_gas);
            }
        }
    }
}

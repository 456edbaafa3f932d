//! Deterministic numeric helpers: log2 of an amount, median and MAD.
//!
//! Only IEEE-754 basic operations are used (no `ln`/`log2` from the platform's libm),
//! so results are bit-identical on every platform.

/// 2^52 as an `f64`.
const TWO_POW_52: f64 = 4_503_599_627_370_496.0;

/// log2 of `amount` (amounts 0 and 1 give 0), accurate to about 2^-30.
///
/// Integer part from the bit length, fractional part bit by bit by repeated squaring
/// of the 53-bit mantissa.
pub(crate) fn log2_amount(amount: u128) -> f64 {
    if amount <= 1 {
        return 0.0;
    }
    let e = 127 - amount.leading_zeros(); // floor(log2(amount)), 1..=127
    let top = if e >= 52 {
        amount >> (e - 52)
    } else {
        amount << (52 - e)
    };
    // `top` is in [2^52, 2^53): exact as f64.
    let mut m = top as f64 / TWO_POW_52;
    let mut frac = 0.0;
    let mut bit = 0.5;
    for _ in 0..32 {
        m *= m;
        if m >= 2.0 {
            m *= 0.5;
            frac += bit;
        }
        bit *= 0.5;
    }
    f64::from(e) + frac
}

/// Median of an ascending slice (mean of the two middle values for even lengths).
pub(crate) fn median_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let hi = *sorted.get(n / 2)?;
    if n % 2 == 1 {
        Some(hi)
    } else {
        let lo = *sorted.get(n / 2 - 1)?;
        Some(lo + (hi - lo) / 2.0)
    }
}

/// Median absolute deviation from `median` of an ascending slice, in O(n/2) without
/// allocating: the deviations left and right of the median are each already sorted,
/// so the k-th smallest is found by merging them from the middle outwards.
pub(crate) fn mad_sorted(sorted: &[f64], median: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let split = sorted.partition_point(|&x| x < median);
    let mut left = split; // next left element is left - 1
    let mut right = split; // next right element is right
    let target = n / 2;
    let mut prev = 0.0;
    for k in 0..=target {
        let l = left
            .checked_sub(1)
            .and_then(|i| sorted.get(i))
            .map(|&x| median - x);
        let r = sorted.get(right).map(|&x| x - median);
        let d = match (l, r) {
            (Some(l), Some(r)) if l <= r => {
                left -= 1;
                l
            }
            (_, Some(r)) => {
                right += 1;
                r
            }
            (Some(l), None) => {
                left -= 1;
                l
            }
            (None, None) => return None,
        };
        if k == target {
            return Some(if n % 2 == 1 {
                d
            } else {
                prev + (d - prev) / 2.0
            });
        }
        prev = d;
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn log2_is_accurate() {
        for a in [
            2u128,
            3,
            10,
            1000,
            123_456_789,
            1 << 60,
            u128::MAX,
            10u128.pow(18) * 7,
        ] {
            let want = (a as f64).log2();
            let got = log2_amount(a);
            assert!((got - want).abs() < 1e-8, "{a}: {got} vs {want}");
        }
        assert_eq!(log2_amount(0), 0.0);
        assert_eq!(log2_amount(1), 0.0);
        assert_eq!(log2_amount(1024), 10.0);
    }

    fn naive_mad(v: &[f64]) -> (f64, f64) {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let m = median_sorted(&s).unwrap();
        let mut d: Vec<f64> = s.iter().map(|x| (x - m).abs()).collect();
        d.sort_by(f64::total_cmp);
        (m, median_sorted(&d).unwrap())
    }

    #[test]
    fn mad_matches_naive() {
        let cases: Vec<Vec<f64>> = vec![
            vec![1.0],
            vec![1.0, 2.0],
            vec![1.0, 1.0, 1.0, 1.0],
            vec![1.0, 2.0, 3.0, 4.0, 100.0],
            vec![-5.0, 0.0, 0.5, 0.5, 7.0, 9.0],
            (0..101).map(|i| f64::from(i * i % 37)).collect(),
            (0..64).map(|i| f64::from(i % 5) * 0.25).collect(),
        ];
        for c in cases {
            let (m, want) = naive_mad(&c);
            let mut s = c.clone();
            s.sort_by(f64::total_cmp);
            assert_eq!(median_sorted(&s).unwrap(), m);
            assert_eq!(mad_sorted(&s, m).unwrap(), want, "{c:?}");
        }
        assert_eq!(mad_sorted(&[], 0.0), None);
    }
}

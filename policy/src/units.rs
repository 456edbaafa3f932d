//! Amounts as a person reads them: whole units and base units side by side,
//! one formatting for the CLI, the coordinator and policy explanations.

/// Decimals of well-known assets, for explanations made without a chain
/// configuration (`None`: unknown, shown in base units only).
pub fn known_decimals(asset: &str) -> Option<u8> {
    match asset {
        "ETH" | "WETH" | "DAI" => Some(18),
        "BTC" | "LTC" => Some(8),
        "USDC" | "USDT" => Some(6),
        _ => None,
    }
}

/// `base` base units in whole units of `symbol` with `decimals`:
/// `1500000000000000000`, 18, `ETH` → `1.5 ETH`.
pub fn format_units(base: u128, decimals: u8, symbol: &str) -> String {
    let Some(scale) = 10u128.checked_pow(u32::from(decimals)) else {
        return format!("{base} base units of {symbol}");
    };
    let (whole, frac) = (base / scale, base % scale);
    if frac == 0 {
        return format!("{whole} {symbol}");
    }
    let frac = format!("{frac:0width$}", width = usize::from(decimals));
    format!("{whole}.{} {symbol}", frac.trim_end_matches('0'))
}

/// Both forms: `1.5 ETH (1500000000000000000 base units)`, or
/// `7 base units of XYZ` when the decimals are unknown.
pub fn describe_amount(base: u128, decimals: Option<u8>, symbol: &str) -> String {
    match decimals {
        Some(d) => format!("{} ({base} base units)", format_units(base, d, symbol)),
        None => format!("{base} base units of {symbol}"),
    }
}

/// Parses whole units (`1.5`) with `decimals` into base units; `None` for
/// anything but digits with at most `decimals` after one point, or overflow.
pub fn parse_units(text: &str, decimals: u8) -> Option<u128> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > usize::from(decimals)
    {
        return None;
    }
    let scale = 10u128.checked_pow(u32::from(decimals))?;
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac_units: u128 = if frac.is_empty() {
        0
    } else {
        let padded = format!("{frac:0<width$}", width = usize::from(decimals));
        padded.parse().ok()?
    };
    whole.checked_mul(scale)?.checked_add(frac_units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_show_units_and_base_units() {
        assert_eq!(
            format_units(1_500_000_000_000_000_000, 18, "ETH"),
            "1.5 ETH"
        );
        assert_eq!(format_units(1, 18, "ETH"), "0.000000000000000001 ETH");
        assert_eq!(format_units(2_000_000, 8, "BTC"), "0.02 BTC");
        assert_eq!(format_units(0, 18, "ETH"), "0 ETH");
        assert_eq!(
            describe_amount(5_000_000_000_000_000_000, known_decimals("ETH"), "ETH"),
            "5 ETH (5000000000000000000 base units)"
        );
        assert_eq!(
            describe_amount(7, known_decimals("XYZ"), "XYZ"),
            "7 base units of XYZ"
        );
    }

    #[test]
    fn whole_units_parse_back() {
        assert_eq!(parse_units("1.5", 18), Some(1_500_000_000_000_000_000));
        assert_eq!(parse_units(".5", 1), Some(5));
        assert_eq!(parse_units("2", 8), Some(200_000_000));
        for bad in ["", ".", "1.2.3", "-1", "1e3", "0.123456789"] {
            assert_eq!(parse_units(bad, 8), None, "{bad:?}");
        }
        assert_eq!(
            parse_units("340282366920938463463374607431768211456", 0),
            None
        );
    }
}

//! Sizes in options: `512MiB`, `4GiB`, `2G`, `1000000`. Parsing never panics on what a user
//! typed; a size is written back in the largest unit that states it exactly, so that the
//! command a run prints reads as a person would type it and parses to the same number.

/// Binary units: `K`, `M`, `G`, `T` mean the same as `KiB` ... `TiB`, as they do for memory
/// limits elsewhere (ulimit, the JVM's `-Xmx`, container runtimes).
const BINARY: [(&str, u64); 8] = [
    ("k", 1 << 10),
    ("kib", 1 << 10),
    ("m", 1 << 20),
    ("mib", 1 << 20),
    ("g", 1 << 30),
    ("gib", 1 << 30),
    ("t", 1 << 40),
    ("tib", 1 << 40),
];

/// SI units, powers of 1000.
const DECIMAL: [(&str, u64); 4] = [
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// The largest size accepted: 1 PiB, far past any machine's memory and well inside `u64`.
pub const SIZE_MAX_BYTES: u64 = 1 << 50;

/// Parses a number of bytes, more than zero: a bare integer (`1000000`), or a number with a
/// unit, case-insensitive (`512MiB`, `1.5GiB`, `2G`, `500MB`, `64B`); a fraction of a byte is
/// dropped.
pub fn parse_size_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let bad = || format!("{text:?} is not a size like 512MiB, 4GiB, 2G or 1000000 (bytes)");
    if number.is_empty() {
        return Err(bad());
    }
    let multiplier = match unit.as_str() {
        "" | "b" => 1,
        unit => BINARY
            .iter()
            .chain(DECIMAL.iter())
            .find(|(name, _)| *name == unit)
            .map(|&(_, multiplier)| multiplier)
            .ok_or_else(|| {
                format!(
                    "unknown unit {unit:?} in {text:?}: use B, KiB, MiB, GiB, TiB (or K, M, G, \
                     T, the same), or KB, MB, GB, TB (powers of 1000)"
                )
            })?,
    };
    let bytes = if let Ok(whole) = number.parse::<u64>() {
        whole.checked_mul(multiplier)
    } else {
        let value: f64 = number.parse().map_err(|_| bad())?;
        let bytes = value * multiplier as f64;
        (bytes.is_finite() && bytes < SIZE_MAX_BYTES as f64 * 2.0).then_some(bytes as u64)
    };
    match bytes {
        Some(0) => Err(format!(
            "{text:?} is no memory at all: give more than 0 bytes"
        )),
        Some(bytes) if bytes <= SIZE_MAX_BYTES => Ok(bytes),
        _ => Err(format!("{text:?} is out of range (at most 1 PiB)")),
    }
}

/// `bytes` in the largest binary unit that states it exactly: `4GiB`, `512MiB`, `1000000`.
pub fn format_size_bytes(bytes: u64) -> String {
    for (unit, multiplier) in [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)] {
        if bytes >= multiplier && bytes % multiplier == 0 {
            return format!("{}{unit}", bytes / multiplier);
        }
    }
    if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        return format!("{}KiB", bytes >> 10);
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_size_bytes("2g"), Ok(2 << 30));
        assert_eq!(parse_size_bytes("1000000"), Ok(1_000_000));
        assert_eq!(parse_size_bytes("64B"), Ok(64));
        assert_eq!(parse_size_bytes("500MB"), Ok(500_000_000));
        assert_eq!(parse_size_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size_bytes(" 8 KiB "), Ok(8 << 10));
        assert_eq!(parse_size_bytes("1TiB"), Ok(1 << 40));
    }

    #[test]
    fn nonsense_sizes_are_refused_with_a_reason() {
        for (text, reason) in [
            ("", "not a size"),
            ("lots", "not a size"),
            ("GiB", "not a size"),
            ("1.2.3G", "not a size"),
            ("-5G", "not a size"),
            ("4 gigs", "unknown unit"),
            ("4XB", "unknown unit"),
            ("0", "no memory at all"),
            ("0GiB", "no memory at all"),
            ("0.1B", "no memory at all"),
            ("2048TiB", "out of range"),
            ("99999999999999999999", "out of range"),
            ("1e400", "unknown unit"),
        ] {
            let error = parse_size_bytes(text).expect_err(text);
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }

    #[test]
    fn sizes_are_written_back_in_the_largest_exact_unit() {
        assert_eq!(format_size_bytes(4 << 30), "4GiB");
        assert_eq!(format_size_bytes(512 << 20), "512MiB");
        assert_eq!(format_size_bytes(1536 << 20), "1536MiB");
        assert_eq!(format_size_bytes(3 << 10), "3KiB");
        assert_eq!(format_size_bytes(1_000_000), "1000000");
        for bytes in [1, 1000, 1 << 20, 3 << 29, 1_000_000_000, 1 << 40] {
            assert_eq!(parse_size_bytes(&format_size_bytes(bytes)), Ok(bytes));
        }
    }
}

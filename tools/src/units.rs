//! Human units on the command line and in reports: sizes (`32KiB`, `1G`), durations (`5s`,
//! `250ms`) and their formatting.

use std::time::Duration;

/// Parse a byte count: a number with an optional suffix `K`/`KiB`/`KB`, `M`/`MiB`/`MB`, `G`/`GiB`/
/// `GB`, `T`/`TiB`/`TB` (all powers of 1024, case-insensitive) or `B`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a size (examples: 4096, 32KiB, 1G)"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: the number does not fit 64 bits"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "{text:?}: unknown size suffix {other:?} (use K, M, G or T, powers of 1024)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} does not fit 64 bits"))
}

/// Parse a duration: a number with `ms`, `s`, `m` or `h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (examples: 5s, 250ms, 2m)"))?;
    let secs = match suffix.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "{text:?}: unknown duration suffix {other:?} (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parse a fraction of a whole: `0.9` or `90%`, between 0 and 1 inclusive.
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 100.0),
        None => (t, 1.0),
    };
    let r = number
        .parse::<f64>()
        .map_err(|_| format!("{text:?} is not a ratio (examples: 0.9, 90%)"))?
        / scale;
    if !(0.0..=1.0).contains(&r) {
        return Err(format!("{text:?} is outside 0..=1 (0%..=100%)"));
    }
    Ok(r)
}

/// `1536` → `1.5 KiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Bytes per second as decimal `GB/s` or `MB/s` (the units storage people compare).
pub fn fmt_rate(bytes_per_sec: f64) -> String {
    if bytes_per_sec >= 1e9 {
        format!("{:.2} GB/s", bytes_per_sec / 1e9)
    } else {
        format!("{:.1} MB/s", bytes_per_sec / 1e6)
    }
}

/// Nanoseconds as a short latency (`850 ns`, `12.3 µs`, `4.56 ms`, `1.20 s`).
pub fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_parse_as_fractions_or_percentages() {
        assert_eq!(parse_ratio("0.9"), Ok(0.9));
        assert_eq!(parse_ratio("95%"), Ok(0.95));
        assert_eq!(parse_ratio(" 100 % "), Ok(1.0));
        assert_eq!(parse_ratio("0"), Ok(0.0));
        for bad in ["", "%", "1.5", "101%", "-0.1", "x", "NaN"] {
            let e = parse_ratio(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("32KiB"), Ok(32 * 1024));
        assert_eq!(parse_bytes("32k"), Ok(32 * 1024));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("1_000"), Ok(1000));
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_rate(2.5e9), "2.50 GB/s");
        assert_eq!(fmt_ns(12_345.0), "12.3 µs");
    }
}

//! Byte sizes (`8MiB`) and durations (`30s`) as people write them on the
//! command line and in the config file.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A number of bytes: a whole number with an optional unit, `B`, `KB`, `MB`,
/// `GB`, `TB` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of
/// 1024); a bare number is bytes, as in most tools' size settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub(crate) u64);

const BYTE_UNITS: &[(&str, u64)] = &[
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("B", 1),
];

/// `"8MiB"` -> `("8", "MiB")`.
fn split_number(text: &str) -> (&str, &str) {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(digits)
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (number, unit) = split_number(text);
        let unit = unit.trim();
        let scale = if unit.is_empty() {
            1
        } else {
            BYTE_UNITS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(unit))
                .map(|(_, scale)| *scale)
                .ok_or_else(|| format!("unknown unit {unit:?} in {text:?}: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"))?
        };
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .map(Self)
            .ok_or_else(|| format!("{text:?} is not a byte size such as 8MiB"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, scale) = BYTE_UNITS
            .iter()
            .filter(|(name, _)| name.contains('i'))
            .find(|(_, scale)| self.0 != 0 && self.0.is_multiple_of(*scale))
            .copied()
            .unwrap_or(("B", 1));
        write!(f, "{}{name}", self.0 / scale)
    }
}

/// A setting as a config file may give it: `part_size = 6291456` or
/// `part_size = "6MiB"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Number(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Self(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration: a whole number with a unit, `ms`, `s`, `m`, `h` or `d`. A
/// bare number is refused rather than guessed at: `30` is thirty seconds
/// to some tools and thirty milliseconds to others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span(pub(crate) Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (number, unit) = split_number(text);
        let invalid = || format!("{text:?} is not a duration such as 30s, 500ms, 2m, 1h or 7d");
        let number: u64 = number.parse().map_err(|_| invalid())?;
        if unit.trim().is_empty() {
            return Err(no_unit(number));
        }
        let millis = match unit.trim() {
            "ms" => Some(number),
            "s" => number.checked_mul(1000),
            "m" => number.checked_mul(60_000),
            "h" => number.checked_mul(3_600_000),
            "d" => number.checked_mul(86_400_000),
            _ => None,
        };
        millis
            .map(|ms| Self(Duration::from_millis(ms)))
            .ok_or_else(invalid)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            ms if ms != 0 && ms.is_multiple_of(86_400_000) => write!(f, "{}d", ms / 86_400_000),
            ms if ms != 0 && ms.is_multiple_of(3_600_000) => write!(f, "{}h", ms / 3_600_000),
            ms if ms != 0 && ms.is_multiple_of(60_000) => write!(f, "{}m", ms / 60_000),
            ms if ms.is_multiple_of(1000) => write!(f, "{}s", ms / 1000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

/// Why `30` is no duration, and what to write.
fn no_unit(number: u64) -> String {
    format!("{number:?} has no unit: write it with one of ms, s, m, h or d, such as {number}s")
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Raw::deserialize(deserializer)? {
            // `body_timeout = 30`: the same answer as the flag's.
            Raw::Number(n) => Err(serde::de::Error::custom(no_unit(n))),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_byte_sizes() {
        let cases = [
            ("0", 0, "0B"),
            ("1000", 1000, "1000B"),
            ("8MiB", 8 << 20, "8MiB"),
            ("8 mib", 8 << 20, "8MiB"),
            ("5GiB", 5 << 30, "5GiB"),
            ("2GB", 2_000_000_000, "1953125KiB"),
            ("1536KiB", 1536 << 10, "1536KiB"),
            ("1TiB", 1 << 40, "1TiB"),
        ];
        for (text, bytes, shown) in cases {
            let size: ByteSize = text.parse().unwrap();
            assert_eq!(size, ByteSize(bytes), "{text}");
            assert_eq!(size.to_string(), shown);
            assert_eq!(shown.parse::<ByteSize>().unwrap(), size);
        }
        for bad in ["", "MiB", "-1", "1.5GiB", "5 parsecs", "99999999999TiB"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn parses_and_prints_durations() {
        for (text, ms, shown) in [
            ("30s", 30_000, "30s"),
            ("500ms", 500, "500ms"),
            ("2m", 120_000, "2m"),
            ("90s", 90_000, "90s"),
            ("1h", 3_600_000, "1h"),
            ("48h", 172_800_000, "2d"),
            ("7d", 604_800_000, "7d"),
        ] {
            let span: Span = text.parse().unwrap();
            assert_eq!(span.0, Duration::from_millis(ms));
            assert_eq!(span.to_string(), shown);
        }
        for bad in ["", "30", "s", "1.5s", "3 days"] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?} parsed");
        }
        let error = "30".parse::<Span>().unwrap_err();
        assert!(
            error.contains("has no unit") && error.contains("30s"),
            "{error}"
        );
        #[derive(Debug, Deserialize)]
        struct File {
            #[allow(dead_code)]
            timeout: Span,
        }
        let error = toml::from_str::<File>("timeout = 30")
            .unwrap_err()
            .to_string();
        assert!(error.contains("has no unit"), "{error}");
    }
}

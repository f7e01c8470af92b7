//! The units an operator writes in the file: durations (`250ms`), sizes (`64KiB`) and
//! counts (`1024`), each a `TryFrom` newtype, plus the functions that print them back in
//! the same notation for `--check`.
//!
//! Invariant: every value of these types came through its check, so the rest of config
//! never re-checks a unit. The checks run inside the scalar's deserialization (see
//! [`super::raw::deserialize_str_via`]), which is what gives their errors a line:column.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::raw::deserialize_str_via;

/// The units a duration may carry, for error messages.
const DURATION_UNITS: &str = "ms, s, m, h";

/// The longest duration we accept. Far beyond any sensible setting; the bound keeps
/// `Instant + duration` and `retry:` milliseconds far from overflow everywhere downstream.
const MAX_DURATION: Duration = Duration::from_secs(8760 * 3600);

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

// === impl HumanDuration ===

/// A duration written with a unit: `250ms`, `3s`, `5m`, `1h`. Zero is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HumanDuration(pub(super) Duration);

impl TryFrom<&str> for HumanDuration {
    type Error = String;

    fn try_from(text: &str) -> Result<Self, String> {
        parse_duration(text).map(HumanDuration)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_str_via(deserializer, "a duration such as 250ms, 3s or 5m")
    }
}

/// A duration that must be greater than zero: a zero heartbeat, timeout, backoff or
/// deadline would spin or fail at once, so it is refused where it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct NonZeroDuration(pub(super) Duration);

impl TryFrom<&str> for NonZeroDuration {
    type Error = String;

    fn try_from(text: &str) -> Result<Self, String> {
        let duration = parse_duration(text)?;
        if duration.is_zero() {
            return Err(format!("duration must be greater than zero, got {text:?}"));
        }
        Ok(NonZeroDuration(duration))
    }
}

impl<'de> Deserialize<'de> for NonZeroDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_str_via(deserializer, "a duration such as 250ms, 3s or 5m")
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "invalid duration {text:?} (expected a whole number with a unit: {DURATION_UNITS}; e.g. 250ms, 3s, 5m)"
        ));
    }
    if unit.is_empty() {
        return Err(format!(
            "duration {text:?} has no unit (accepted units: {DURATION_UNITS}; e.g. {text}s)"
        ));
    }
    if unit.starts_with('.') {
        return Err(format!(
            "invalid duration {text:?}: fractions are not supported, use a smaller unit (e.g. 1500ms)"
        ));
    }
    let too_large = || format!("duration {text:?} is too large (at most 8760h)");
    let n: u64 = digits.parse().map_err(|_| too_large())?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_large)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_large)?),
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in duration {text:?} (accepted units: {DURATION_UNITS})"
            ))
        }
    };
    if duration > MAX_DURATION {
        return Err(too_large());
    }
    Ok(duration)
}

/// Prints a duration the way the file writes it, in the largest exact unit:
/// 250ms, 2s, 5m, 1h. Config durations are whole milliseconds; anything finer
/// (never produced by the parser) falls back to `Debug`.
pub(super) fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return format!("{duration:?}");
    }
    let ms = duration.as_millis();
    match ms {
        0 => "0s".to_owned(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

// === impl ByteSize ===

/// A size in bytes, at least 1: a plain integer (`65536`) or an integer with one of the
/// binary units `B`, `KiB`, `MiB`, `GiB`. Decimal units (`KB`, `MB`) are refused rather
/// than guessed at, so `64KB` never silently means 64000 or 65536.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ByteSize(pub(super) usize);

impl TryFrom<&str> for ByteSize {
    type Error = String;

    fn try_from(text: &str) -> Result<Self, String> {
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(digits_end);
        if digits.is_empty() {
            return Err(format!(
                "invalid size {text:?} (expected a number of bytes, optionally with a unit: B, KiB, MiB, GiB)"
            ));
        }
        let multiplier = match unit {
            "" | "B" => 1,
            "KiB" => KIB,
            "MiB" => MIB,
            "GiB" => GIB,
            _ => {
                return Err(format!(
                    "unknown unit {unit:?} in size {text:?} (accepted: a plain number of bytes, or B, KiB, MiB, GiB)"
                ))
            }
        };
        let too_large = || format!("size {text:?} is too large");
        let n: u64 = digits.parse().map_err(|_| too_large())?;
        let bytes = n.checked_mul(multiplier).ok_or_else(too_large)?;
        ByteSize::try_from(bytes)
    }
}

impl TryFrom<u64> for ByteSize {
    type Error = String;

    fn try_from(bytes: u64) -> Result<Self, String> {
        if bytes == 0 {
            return Err("size must be at least 1 byte".to_owned());
        }
        usize::try_from(bytes)
            .map(ByteSize)
            .map_err(|_| format!("size {bytes} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `deserialize_any`: a YAML integer arrives as u64, `64KiB` as a string.
        deserializer.deserialize_any(NumberOrText::<ByteSize>::new(
            "a size such as 65536 or 64KiB",
        ))
    }
}

/// Prints a size in the largest exact binary unit: 64KiB, 1MiB, 1000B.
pub(super) fn format_size(bytes: usize) -> String {
    let bytes = bytes as u64;
    match bytes {
        b if b != 0 && b % GIB == 0 => format!("{}GiB", b / GIB),
        b if b != 0 && b % MIB == 0 => format!("{}MiB", b / MIB),
        b if b != 0 && b % KIB == 0 => format!("{}KiB", b / KIB),
        b => format!("{b}B"),
    }
}

// === impl Count ===

/// A count of things (queued events, kept events): a whole number, at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Count(pub(super) usize);

impl TryFrom<&str> for Count {
    type Error = String;

    fn try_from(text: &str) -> Result<Self, String> {
        // A quoted "1024" is still clearly a count; anything else is not.
        match text.parse::<u64>() {
            Ok(n) => Count::try_from(n),
            Err(_) => Err(format!(
                "expected a whole number of at least 1, got {text:?}"
            )),
        }
    }
}

impl TryFrom<u64> for Count {
    type Error = String;

    fn try_from(n: u64) -> Result<Self, String> {
        if n == 0 {
            return Err("must be at least 1, got 0".to_owned());
        }
        usize::try_from(n)
            .map(Count)
            .map_err(|_| format!("{n} is too large"))
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumberOrText::<Count>::new("a whole number of at least 1"))
    }
}

// === impl Limit ===

/// A cap on a number of things (clients): a whole number, where `0` means no cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Limit(pub(super) Option<usize>);

impl TryFrom<&str> for Limit {
    type Error = String;

    fn try_from(text: &str) -> Result<Self, String> {
        match text.parse::<u64>() {
            Ok(n) => Limit::try_from(n),
            Err(_) => Err(format!(
                "expected a whole number (0 for no limit), got {text:?}"
            )),
        }
    }
}

impl TryFrom<u64> for Limit {
    type Error = String;

    fn try_from(n: u64) -> Result<Self, String> {
        if n == 0 {
            return Ok(Limit(None));
        }
        usize::try_from(n)
            .map(|n| Limit(Some(n)))
            .map_err(|_| format!("{n} is too large"))
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumberOrText::<Limit>::new(
            "a whole number (0 for no limit)",
        ))
    }
}

/// Visitor for values that may be written as a YAML integer or as text (sizes, counts).
/// Errors are raised inside the visit, so serde_norway attaches the scalar's position.
pub(super) struct NumberOrText<T> {
    expecting: &'static str,
    target: std::marker::PhantomData<T>,
}

impl<T> NumberOrText<T> {
    pub(super) fn new(expecting: &'static str) -> Self {
        NumberOrText {
            expecting,
            target: std::marker::PhantomData,
        }
    }
}

impl<'de, T> Visitor<'de> for NumberOrText<T>
where
    T: TryFrom<u64, Error = String> + for<'a> TryFrom<&'a str, Error = String>,
{
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        T::try_from(n).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        match u64::try_from(n) {
            Ok(n) => T::try_from(n).map_err(E::custom),
            Err(_) => Err(E::custom(format!(
                "must not be negative, got {n} (expected {})",
                self.expecting
            ))),
        }
    }

    fn visit_u128<E: de::Error>(self, n: u128) -> Result<T, E> {
        Err(E::custom(format!("{n} is too large")))
    }

    fn visit_i128<E: de::Error>(self, n: i128) -> Result<T, E> {
        Err(E::custom(format!("{n} is out of range")))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<T, E> {
        Err(E::custom(format!(
            "expected {}, got the fraction {n}",
            self.expecting
        )))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        T::try_from(text).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may unwrap; clippy.toml may not say so yet

    use super::*;

    #[test]
    fn durations_take_ms_s_m_h() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn duration_without_unit_names_the_accepted_units() {
        let err = parse_duration("15").unwrap_err();
        assert_eq!(
            err,
            "duration \"15\" has no unit (accepted units: ms, s, m, h; e.g. 15s)"
        );
    }

    #[test]
    fn duration_with_unknown_unit_names_the_accepted_units() {
        let err = parse_duration("5d").unwrap_err();
        assert_eq!(
            err,
            "unknown unit \"d\" in duration \"5d\" (accepted units: ms, s, m, h)"
        );
    }

    #[test]
    fn duration_rejects_fractions_signs_and_spaces() {
        assert!(parse_duration("1.5s").unwrap_err().contains("fractions"));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5 s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn duration_overflow_is_an_error_not_a_panic() {
        assert!(parse_duration("99999999999999999999999h").is_err());
        assert!(parse_duration("18446744073709551615h").is_err());
        assert!(parse_duration("8761h").is_err());
        assert_eq!(
            parse_duration("8760h"),
            Ok(Duration::from_secs(8760 * 3600))
        );
    }

    #[test]
    fn zero_is_refused_where_it_would_spin() {
        assert!(NonZeroDuration::try_from("0ms").is_err());
        assert_eq!(
            NonZeroDuration::try_from("1ms"),
            Ok(NonZeroDuration(Duration::from_millis(1)))
        );
    }

    #[test]
    fn durations_print_in_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn sizes_take_bare_bytes_and_binary_units_only() {
        assert_eq!(ByteSize::try_from("65536"), Ok(ByteSize(65536)));
        assert_eq!(ByteSize::try_from("10B"), Ok(ByteSize(10)));
        assert_eq!(ByteSize::try_from("64KiB"), Ok(ByteSize(65536)));
        assert_eq!(ByteSize::try_from("2MiB"), Ok(ByteSize(2 << 20)));
        assert_eq!(ByteSize::try_from("1GiB"), Ok(ByteSize(1 << 30)));
        let err = ByteSize::try_from("64KB").unwrap_err();
        assert_eq!(
            err,
            "unknown unit \"KB\" in size \"64KB\" (accepted: a plain number of bytes, or B, KiB, MiB, GiB)"
        );
        assert!(ByteSize::try_from("0").is_err());
        assert!(ByteSize::try_from("99999999999GiB").is_err());
    }

    #[test]
    fn sizes_print_in_the_largest_exact_unit() {
        assert_eq!(format_size(65536), "64KiB");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(3 << 20), "3MiB");
    }

    #[test]
    fn counts_are_at_least_one() {
        assert_eq!(Count::try_from(1u64), Ok(Count(1)));
        assert_eq!(Count::try_from("1024"), Ok(Count(1024)));
        assert_eq!(
            Count::try_from(0u64).unwrap_err(),
            "must be at least 1, got 0"
        );
        assert!(Count::try_from("ten").is_err());
    }
}

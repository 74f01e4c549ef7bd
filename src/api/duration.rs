//! A Go-style duration (`30s`, `5m`, `1h30m`) that keeps the text it was written as, so a
//! policy read and written back is unchanged, while Rewind works with the parsed value.
//!
//! Parsing uses integer arithmetic only and checks every step: a value Go's `time.Duration`
//! cannot hold (over 2562047h47m16.854775807s) is an error, never a panic. Reading one from an
//! object never fails either: the text is kept with the reason it is not usable, and whoever
//! uses the value ([`Policy`](crate::decide::Policy)'s conversion) reports it on that object.
//! One bad object must not fail the list of all of them (the watcher reads them as a list).

use std::{borrow::Cow, fmt, str::FromStr, time};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest duration: what Go's `time.Duration` (int64 nanoseconds) holds, so Rewind and
/// the API server's CEL `duration()` agree on what is a duration.
pub const MAX_NANOS: u128 = i64::MAX as u128;

/// A non-negative duration in Go's `time.ParseDuration` syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duration {
    text: String,
    value: Result<time::Duration, DurationError>,
}

/// Why a text is not a usable duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was written.
    #[error("\"\" is not a duration: write one such as 30s, 5m or 1h30m")]
    Empty,
    /// A sign: durations here are never negative.
    #[error("{0:?} is negative; durations here must be 0 or more")]
    Negative(String),
    /// Not the syntax of a duration.
    #[error("{text:?} is not a duration such as 30s, 5m or 1h30m: {problem}")]
    Syntax {
        /// What was written (at most 64 bytes of it).
        text: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Longer than any duration can be.
    #[error("{0:?} is longer than the longest duration (2562047h, about 292 years)")]
    OutOfRange(String),
}

impl Duration {
    /// The parsed value, or why the text is not a usable duration. Only a Duration read from
    /// an object can be unusable: [`str::parse`] and [`Duration::try_from`] never make one.
    pub fn value(&self) -> Result<time::Duration, DurationError> {
        self.value.clone()
    }

    /// The parsed value. An unusable Duration read from an object (see [`value`](Self::value),
    /// which code reading objects uses) gives [`time::Duration::MAX`], above every bound.
    pub fn get(&self) -> time::Duration {
        self.value.clone().unwrap_or(time::Duration::MAX)
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// At most 64 bytes of `s` (on a char boundary), for error messages about untrusted text.
fn shown(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() {
        format!("{}…", &s[..end])
    } else {
        s.to_owned()
    }
}

/// Nanoseconds per unit, for the units Go accepts.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        // U+00B5 micro sign and U+03BC Greek mu, as Go.
        "us" | "\u{00b5}s" | "\u{03bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Parse `s` as Go's `time.ParseDuration` does, without a sign: one or more `<digits>[.<digits>]<unit>`,
/// or a bare `0`. Integer arithmetic, every step checked.
fn parse(s: &str) -> Result<time::Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(shown(s)));
    }
    let syntax = |problem| DurationError::Syntax {
        text: shown(s),
        problem,
    };
    if s == "0" {
        return Ok(time::Duration::ZERO);
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int, after) = rest.split_at(int_len);
        let dot = after.strip_prefix('.');
        let (frac, after) = match dot {
            Some(a) => a.split_at(a.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", after),
        };
        if int.is_empty() {
            return Err(syntax(if dot.is_some() {
                "expected a digit before the '.'"
            } else {
                "expected a number"
            }));
        }
        if dot.is_some() && frac.is_empty() {
            return Err(syntax("expected a digit after the '.'"));
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, tail) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(syntax("missing unit: use ns, us, ms, s, m or h"));
        }
        let per =
            unit_nanos(unit).ok_or_else(|| syntax("unknown unit: use ns, us, ms, s, m or h"))?;
        let out_of_range = || DurationError::OutOfRange(shown(s));
        // The whole part: more than 39 digits cannot fit in a u128 at all.
        let whole: u128 = int.parse().map_err(|_| out_of_range())?;
        let mut nanos = whole.checked_mul(per).ok_or_else(out_of_range)?;
        // The fraction, to the nanosecond (further digits are below a nanosecond for every
        // unit but would overflow nothing: 18 digits times 3.6e12 fits in a u128).
        let frac = &frac[..frac.len().min(18)];
        if !frac.is_empty() {
            let digits: u128 = frac.parse().map_err(|_| out_of_range())?;
            let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| out_of_range())?);
            let part = digits.checked_mul(per).ok_or_else(out_of_range)? / scale;
            nanos = nanos.checked_add(part).ok_or_else(out_of_range)?;
        }
        total = total.checked_add(nanos).ok_or_else(out_of_range)?;
        if total > MAX_NANOS {
            return Err(out_of_range());
        }
        rest = tail;
    }
    let secs =
        u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::OutOfRange(shown(s)))?;
    let sub =
        u32::try_from(total % 1_000_000_000).map_err(|_| DurationError::OutOfRange(shown(s)))?;
    Ok(time::Duration::new(secs, sub))
}

/// `d` as Go's `time.Duration.String()` writes it (`1h30m0s`, `1.5s`, `250ms`, `0s`), which
/// [`parse`] reads back to the same value.
pub fn format(d: time::Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let fraction = |value: u128, per: u128| -> String {
        let (whole, rem) = (value / per, value % per);
        if rem == 0 {
            return whole.to_string();
        }
        let width = per.ilog10() as usize;
        let digits = format!("{rem:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}\u{00b5}s", fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos, 1_000_000));
    }
    let (h, rem) = (nanos / 3_600_000_000_000, nanos % 3_600_000_000_000);
    let (m, s) = (rem / 60_000_000_000, rem % 60_000_000_000);
    let secs = format!("{}s", fraction(s, 1_000_000_000));
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value = parse(s)?;
        Ok(Duration {
            text: s.to_owned(),
            value: Ok(value),
        })
    }
}

impl TryFrom<time::Duration> for Duration {
    type Error = DurationError;

    /// Written as Go writes it; longer than Go's longest duration is an error.
    fn try_from(value: time::Duration) -> Result<Self, Self::Error> {
        let text = format(value);
        if value.as_nanos() > MAX_NANOS {
            return Err(DurationError::OutOfRange(text));
        }
        Ok(Duration {
            text,
            value: Ok(value),
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    /// Any string is read: one that is not a usable duration keeps its text and the reason
    /// ([`Duration::value`]), so the object it is in can be reported instead of failing the
    /// whole list it came in.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let value = parse(&text);
        Ok(Duration { text, value })
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Not "format: duration": that means ISO 8601, which this is not.
        schemars::json_schema!({ "type": "string" })
    }
}

#[cfg(test)]
mod tests {
    use super::{Duration, DurationError, format};
    use std::time;

    #[test]
    fn parses_go_durations_and_keeps_their_text() {
        for (text, nanos) in [
            ("30s", 30_000_000_000u64),
            ("5m", 300_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("1.5s", 1_500_000_000),
            ("250ms", 250_000_000),
            ("1us", 1_000),
            ("1µs", 1_000),
            ("1.5ns", 1),
            ("0", 0),
            ("0s", 0),
            ("2562047h47m16.854775807s", i64::MAX as u64),
        ] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.get(), time::Duration::from_nanos(nanos), "{text}");
            assert_eq!(d.to_string(), text);
            assert_eq!(serde_json::to_value(&d).unwrap(), text);
        }
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for text in [
            "",
            "5",
            "five minutes",
            "-5m",
            "5d",
            "m",
            ".5s",
            "5.s",
            "5 s",
            "1h-1m",
            "+5m",
        ] {
            let err = text.parse::<Duration>().unwrap_err();
            assert!(err.to_string().contains(&format!("{text:?}")), "{err}");
        }
        assert_eq!("".parse::<Duration>().unwrap_err(), DurationError::Empty);
    }

    /// Issue 9, item 1: these passed the CRD's pattern and panicked inside the watcher
    /// (`cannot convert float seconds to Duration`), so the operator exited on every start.
    #[test]
    fn huge_values_are_an_error_not_a_panic() {
        for text in [
            "99999999999999999999h",
            "5124095576030432h",
            "2562048h",
            "2562047h47m16.854775808s",
            "9223372036854775808ns",
            "99999999999999999999999999999999999999999h",
            "1h1h1h1h1h1h1h1h1h1h1h1h1h1h2562047h",
        ] {
            assert!(
                matches!(text.parse::<Duration>(), Err(DurationError::OutOfRange(_))),
                "{text}"
            );
        }
    }

    /// What the watcher does with a stored policy: reading it never fails on a duration;
    /// the value says why it is not usable.
    #[test]
    fn a_policy_with_a_huge_cooldown_is_read_and_its_value_is_an_error() {
        let p: crate::api::RollbackPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "rewind.dev/v1alpha1", "kind": "RollbackPolicy",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"cooldown": "99999999999999999999h", "readiness": {"timeout": "soon"}}
        }))
        .expect("a policy with an unusable duration is still read");
        let cooldown = p.spec.cooldown.unwrap();
        assert_eq!(cooldown.as_str(), "99999999999999999999h");
        assert!(matches!(
            cooldown.value(),
            Err(DurationError::OutOfRange(_))
        ));
        assert_eq!(cooldown.get(), time::Duration::MAX);
        let timeout = p.spec.readiness.unwrap().timeout.unwrap();
        assert!(matches!(timeout.value(), Err(DurationError::Syntax { .. })));
        // Written back as it was read.
        assert_eq!(serde_json::to_value(&timeout).unwrap(), "soon");
    }

    #[test]
    fn formats_as_go_and_reads_back() {
        for (nanos, text) in [
            (0u64, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (250_000_000, "250ms"),
            (1_500_000_000, "1.5s"),
            (5_400_000_000_000, "1h30m0s"),
            (90_000_000_000, "1m30s"),
            (i64::MAX as u64, "2562047h47m16.854775807s"),
        ] {
            let d = time::Duration::from_nanos(nanos);
            assert_eq!(format(d), text);
            assert_eq!(Duration::try_from(d).unwrap().get(), d);
            assert_eq!(text.parse::<Duration>().unwrap().get(), d);
        }
        assert!(Duration::try_from(time::Duration::MAX).is_err());
    }
}

//! A Go-style duration (`30s`, `5m`, `1h30m`) that keeps the text it was written as, so a
//! policy read and written back is unchanged, while Rewind works with the parsed value.

use std::{borrow::Cow, fmt, str::FromStr, time};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A non-negative duration in Go's `time.ParseDuration` syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duration {
    text: String,
    value: time::Duration,
}

impl Duration {
    /// The parsed value.
    pub fn get(&self) -> time::Duration {
        self.value
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("\"\" is not a duration: write one such as 30s, 5m or 1h30m".into());
        }
        let parsed = kube::core::Duration::from_str(s)
            .map_err(|e| format!("{s:?} is not a duration such as 30s, 5m or 1h30m: {e}"))?;
        if parsed.is_negative() {
            return Err(format!(
                "{s:?} is negative; durations here must be 0 or more"
            ));
        }
        Ok(Duration {
            text: s.to_owned(),
            value: parsed.into(),
        })
    }
}

impl From<time::Duration> for Duration {
    fn from(value: time::Duration) -> Self {
        let text = kube::core::Duration::from(value).to_string();
        Duration { text, value }
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
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
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
    use super::Duration;
    use std::time;

    #[test]
    fn parses_go_durations_and_keeps_their_text() {
        for (text, secs) in [
            ("30s", 30.0),
            ("5m", 300.0),
            ("1h30m", 5400.0),
            ("1.5s", 1.5),
            ("250ms", 0.25),
        ] {
            let d: Duration = text.parse().unwrap();
            assert_eq!(d.get(), time::Duration::from_secs_f64(secs), "{text}");
            assert_eq!(d.to_string(), text);
            assert_eq!(serde_json::to_value(&d).unwrap(), text);
        }
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for text in ["", "5", "five minutes", "-5m", "5d"] {
            let err = text.parse::<Duration>().unwrap_err();
            assert!(err.contains(&format!("{text:?}")), "{err}");
        }
        assert!(serde_json::from_str::<Duration>("\"soon\"").is_err());
    }
}

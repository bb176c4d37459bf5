//! Scalar forms shared by every section: flags and durations, read the way
//! distribution's files and `REGISTRY_*` overrides write them.

use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A boolean key: `true`/`false`, or the strings `"true"`/`"false"` (as an
/// environment override or a quoted YAML value gives them). Absent or null
/// is `None`.
///
/// # Errors
/// Anything else, shown as the value found.
pub(super) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(b)),
        Value::String(s) if s == "true" || s == "false" => Ok(Some(s == "true")),
        other => Err(D::Error::custom(format!(
            "must be true or false, not {other}"
        ))),
    }
}

/// A duration key: Go's syntax (`1h30m`, `500ms`, `2.5s`, as distribution
/// reads `time.Duration` strings) or a whole number of seconds (`30`).
///
/// Negative and fractional numbers are refused rather than read as 0 s or
/// rounded: `draintimeout: -1` is a mistake, not "no drain".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fail = |m: String| D::Error::custom(m);
        match Value::deserialize(d)? {
            Value::String(s) => regstore_core::params::parse_duration(&s)
                .map(ConfigDuration)
                .map_err(fail),
            Value::Number(n) => match n.as_u64() {
                Some(secs) => Ok(ConfigDuration(Duration::from_secs(secs))),
                None if n.as_i64().is_some() || n.as_f64().is_some_and(|f| f < 0.0) => {
                    Err(fail(format!("must not be negative, got {n}")))
                }
                None => Err(fail(format!(
                    "must be a whole number of seconds or a duration such as 1m30s, not {n}"
                ))),
            },
            other => Err(fail(format!(
                "must be a duration such as 30s or 1h30m, not {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duration(v: Value) -> Result<Duration, String> {
        serde_json::from_value::<ConfigDuration>(v)
            .map(|d| d.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations_read_go_syntax_and_whole_seconds() {
        assert_eq!(
            duration(Value::from("1h30m")),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(
            duration(Value::from("500ms")),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(duration(Value::from(45)), Ok(Duration::from_secs(45)));
        let e = duration(Value::from(-1)).unwrap_err();
        assert!(e.contains("must not be negative"), "{e}");
        let e = duration(Value::from(1.5)).unwrap_err();
        assert!(e.contains("whole number of seconds"), "{e}");
        let e = duration(Value::from("-5s")).unwrap_err();
        assert!(e.contains("\"-5s\""), "{e}");
        let e = duration(Value::from(true)).unwrap_err();
        assert!(e.contains("not true"), "{e}");
    }

    #[test]
    fn flags_accept_booleans_and_their_strings() {
        let read = |v: Value| flag(v).map_err(|e: serde_json::Error| e.to_string());
        assert_eq!(read(Value::Bool(true)), Ok(Some(true)));
        assert_eq!(read(Value::from("false")), Ok(Some(false)));
        assert_eq!(read(Value::Null), Ok(None));
        let e = read(Value::from("sometimes")).unwrap_err();
        assert!(e.contains("must be true or false"), "{e}");
    }
}

//! Driver and middleware parameters: declared, checked, coerced.
//!
//! Each factory declares its parameters as [`ParamSpec`]s. [`resolve`] turns
//! what a user wrote — YAML values, environment strings, `--param k=v` — into
//! typed [`Params`], so a driver never parses a string itself:
//! - an unknown name is an error that suggests the nearest known one
//!   (distribution silently ignores typos);
//! - strings are accepted wherever a number, bool, size or duration is
//!   expected, because environment variables only carry strings;
//! - defaults are filled in, required parameters are checked.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};

/// Parameters as the user wrote them: name → YAML/JSON value or string.
pub type RawParams = BTreeMap<String, serde_json::Value>;

/// The type of a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Any string.
    String,
    /// A string that is never printed (keys, passwords).
    Secret,
    /// `true`/`false` (also `"true"`, `"yes"`, `"1"`, …).
    Bool,
    /// A whole number (also as a string).
    Integer,
    /// Bytes: `10485760`, `"10MiB"`, `"5 MB"` (KiB/MiB/GiB/TiB are powers of
    /// 1024; kB/KB/MB/GB/TB powers of 1000; `K`/`M`/`G`/`T` alone are 1024s).
    Size,
    /// A duration: Go-style (`"20m"`, `"1h30m"`, `"500ms"`) or whole seconds.
    Duration,
}

impl fmt::Display for ParamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamKind::String => "string",
            ParamKind::Secret => "secret",
            ParamKind::Bool => "bool",
            ParamKind::Integer => "integer",
            ParamKind::Size => "size",
            ParamKind::Duration => "duration",
        })
    }
}

/// Declaration of one parameter, shown by `regstore drivers`.
#[derive(Clone, Copy, Debug)]
pub struct ParamSpec {
    /// Name as written in config (`rootdirectory`).
    pub name: &'static str,
    /// Type the value must have.
    pub kind: ParamKind,
    /// Default, written as a user would write it; `None` = no default.
    pub default: Option<&'static str>,
    /// Must be given (no default makes sense).
    pub required: bool,
    /// One line: what it does.
    pub doc: &'static str,
}

impl ParamSpec {
    /// An optional parameter without default.
    pub const fn new(name: &'static str, kind: ParamKind, doc: &'static str) -> Self {
        ParamSpec {
            name,
            kind,
            default: None,
            required: false,
            doc,
        }
    }

    /// The same, with a default.
    pub const fn default(mut self, value: &'static str) -> Self {
        self.default = Some(value);
        self
    }

    /// The same, required.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

/// A checked parameter value.
#[derive(Clone, PartialEq)]
pub enum Value {
    /// `String` or `Secret`.
    String(String),
    /// `Bool`.
    Bool(bool),
    /// `Integer`.
    Integer(i64),
    /// `Size`, in bytes.
    Size(u64),
    /// `Duration`.
    Duration(Duration),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => fmt::Debug::fmt(s, f),
            Value::Bool(b) => fmt::Debug::fmt(b, f),
            Value::Integer(i) => fmt::Debug::fmt(i, f),
            Value::Size(s) => write!(f, "{s}B"),
            Value::Duration(d) => fmt::Debug::fmt(d, f),
        }
    }
}

/// Checked parameters of one driver or middleware, defaults filled in.
///
/// Accessors return `None` for a parameter that was not given and has no
/// default, and also when asked for a type other than the declared one.
#[derive(Clone, Default)]
pub struct Params {
    values: BTreeMap<&'static str, Value>,
    secrets: Vec<&'static str>,
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.values {
            if self.secrets.contains(k) {
                m.entry(k, &"<redacted>");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

impl Params {
    /// A string or secret parameter.
    pub fn string(&self, name: &str) -> Option<&str> {
        match self.values.get(name) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// A bool parameter.
    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.values.get(name) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// An integer parameter.
    pub fn integer(&self, name: &str) -> Option<i64> {
        match self.values.get(name) {
            Some(Value::Integer(i)) => Some(*i),
            _ => None,
        }
    }

    /// A size parameter, in bytes.
    pub fn size(&self, name: &str) -> Option<u64> {
        match self.values.get(name) {
            Some(Value::Size(s)) => Some(*s),
            _ => None,
        }
    }

    /// A duration parameter.
    pub fn duration(&self, name: &str) -> Option<Duration> {
        match self.values.get(name) {
            Some(Value::Duration(d)) => Some(*d),
            _ => None,
        }
    }

    /// A string parameter that must be present: given, or filled in from
    /// its declared default (the `require_*` accessors are how a driver
    /// reads a parameter with a default, so that the default is written
    /// only once, in its [`ParamSpec`]).
    ///
    /// # Errors
    /// `Config` naming the parameter when it is missing.
    pub fn require_string(&self, name: &str) -> Result<&str> {
        self.string(name).ok_or_else(|| missing(name))
    }

    /// A bool parameter that must be present (see [`Params::require_string`]).
    ///
    /// # Errors
    /// `Config` naming the parameter when it is missing.
    pub fn require_bool(&self, name: &str) -> Result<bool> {
        self.bool(name).ok_or_else(|| missing(name))
    }

    /// An integer parameter that must be present (see
    /// [`Params::require_string`]).
    ///
    /// # Errors
    /// `Config` naming the parameter when it is missing.
    pub fn require_integer(&self, name: &str) -> Result<i64> {
        self.integer(name).ok_or_else(|| missing(name))
    }

    /// A size parameter that must be present, in bytes (see
    /// [`Params::require_string`]).
    ///
    /// # Errors
    /// `Config` naming the parameter when it is missing.
    pub fn require_size(&self, name: &str) -> Result<u64> {
        self.size(name).ok_or_else(|| missing(name))
    }

    /// A duration parameter that must be present (see
    /// [`Params::require_string`]).
    ///
    /// # Errors
    /// `Config` naming the parameter when it is missing.
    pub fn require_duration(&self, name: &str) -> Result<Duration> {
        self.duration(name).ok_or_else(|| missing(name))
    }
}

fn missing(name: &str) -> Error {
    Error::config(format!("parameter {name:?} is required"))
}

/// The declared defaults of `specs`, typed, as [`resolve`] fills them in
/// when nothing is given: for code that builds a driver without parameters
/// and must not write a default a second time.
///
/// # Errors
/// `Config` (named `owner`) for a default that does not parse, or a
/// required parameter (which has no default).
pub fn defaults(owner: &'static str, specs: &[ParamSpec]) -> Result<Params> {
    resolve(owner, specs, &RawParams::new())
}

/// Checks `raw` against `specs` and produces typed [`Params`].
///
/// # Errors
/// `Config` (named `owner`) for an unknown parameter (with the nearest known
/// name), a value of the wrong type (saying what was expected), or a missing
/// required parameter.
pub fn resolve(owner: &'static str, specs: &[ParamSpec], raw: &RawParams) -> Result<Params> {
    let mut params = Params::default();
    for (name, value) in raw {
        let Some(spec) = specs.iter().find(|s| s.name == name.as_str()) else {
            let hint = match nearest(name, specs.iter().map(|s| s.name)) {
                Some(n) => format!(" (did you mean {n:?}?)"),
                None if specs.is_empty() => " (it takes no parameters)".to_owned(),
                None => format!(
                    " (known: {})",
                    specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                ),
            };
            return Err(Error::config(format!("unknown parameter {name:?}{hint}")).named(owner));
        };
        let v = coerce(spec, value).map_err(|msg| {
            Error::config(format!("parameter {:?}: {msg}", spec.name)).named(owner)
        })?;
        params.values.insert(spec.name, v);
    }
    for spec in specs {
        if spec.kind == ParamKind::Secret {
            params.secrets.push(spec.name);
        }
        if params.values.contains_key(spec.name) {
            continue;
        }
        if let Some(default) = spec.default {
            let v =
                coerce(spec, &serde_json::Value::String(default.to_owned())).map_err(|msg| {
                    Error::config(format!("default of {:?} is invalid: {msg}", spec.name))
                        .named(owner)
                })?;
            params.values.insert(spec.name, v);
        } else if spec.required {
            return Err(Error::config(format!(
                "parameter {:?} is required: {}",
                spec.name, spec.doc
            ))
            .named(owner));
        }
    }
    Ok(params)
}

/// Parses `k=v` pairs (as given with `--param`) into raw parameters.
///
/// # Errors
/// `Config` for a pair without `=`.
pub fn parse_pairs<I, S>(pairs: I) -> Result<RawParams>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut raw = RawParams::new();
    for pair in pairs {
        let pair = pair.as_ref();
        let Some((k, v)) = pair.split_once('=') else {
            return Err(Error::config(format!(
                "parameter {pair:?} must be written name=value"
            )));
        };
        raw.insert(k.trim().to_owned(), serde_json::Value::String(v.to_owned()));
    }
    Ok(raw)
}

fn coerce(spec: &ParamSpec, value: &serde_json::Value) -> std::result::Result<Value, String> {
    use serde_json::Value as J;
    let shown = || match value {
        J::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    match (spec.kind, value) {
        (ParamKind::String | ParamKind::Secret, J::String(s)) => Ok(Value::String(s.clone())),
        (ParamKind::String | ParamKind::Secret, J::Number(n)) => Ok(Value::String(n.to_string())),
        (ParamKind::String | ParamKind::Secret, J::Bool(b)) => Ok(Value::String(b.to_string())),
        (ParamKind::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
        (ParamKind::Bool, J::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "off" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got {}", shown())),
        },
        (ParamKind::Integer, J::Number(n)) => n
            .as_i64()
            .map(Value::Integer)
            .ok_or_else(|| format!("expected a whole number, got {n}")),
        (ParamKind::Integer, J::String(s)) => s
            .trim()
            .parse()
            .map(Value::Integer)
            .map_err(|_| format!("expected a whole number, got {}", shown())),
        (ParamKind::Size, J::Number(n)) => n
            .as_u64()
            .map(Value::Size)
            .ok_or_else(|| format!("expected a size in bytes, got {n}")),
        (ParamKind::Size, J::String(s)) => parse_size(s).map(Value::Size),
        (ParamKind::Duration, J::Number(n)) => n
            .as_u64()
            .map(|secs| Value::Duration(Duration::from_secs(secs)))
            .ok_or_else(|| format!("expected a duration, got {n}")),
        (ParamKind::Duration, J::String(s)) => parse_duration(s).map(Value::Duration),
        (kind, _) => Err(format!("expected a value of type {kind}, got {}", shown())),
    }
}

/// Parses a size such as `10485760`, `"10MiB"`, `"5 MB"`, `"64k"`.
///
/// # Errors
/// A message saying what was expected.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("expected a size such as 10485760 or \"10MiB\", got {s:?}");
    let mult: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "K" | "k" | "KiB" | "kiB" => 1 << 10,
        "M" | "m" | "MiB" => 1 << 20,
        "G" | "g" | "GiB" => 1 << 30,
        "T" | "t" | "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    if num.contains('.') {
        let f: f64 = num.parse().map_err(|_| bad())?;
        let bytes = f * mult as f64;
        if !(0.0..=u64::MAX as f64).contains(&bytes) {
            return Err(bad());
        }
        Ok(bytes as u64)
    } else {
        let n: u64 = num.parse().map_err(|_| bad())?;
        n.checked_mul(mult).ok_or_else(bad)
    }
}

/// Parses a Go-style duration (`"20m"`, `"1h30m"`, `"1.5s"`, `"250ms"`) or a
/// whole number of seconds.
///
/// # Errors
/// A message saying what was expected.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("expected a duration such as \"20m\", \"1h30m\" or \"500ms\", got {s:?}");
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..n_end].parse().map_err(|_| bad())?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * unit;
        rest = &rest[u_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// The candidate closest to `name` by edit distance, if close enough to be
/// a likely typo.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    let limit = (name.len() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| {
            // A shortened name ("rootdir") is as good a hint as a typo.
            let prefix = c.starts_with(name.as_str()) && name.len() >= 3;
            let d = edit_distance(&name, c);
            (if prefix { d.min(1) } else { d }, c)
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[ParamSpec] = &[
        ParamSpec::new("bucket", ParamKind::String, "bucket").required(),
        ParamSpec::new("chunksize", ParamKind::Size, "part size").default("10MiB"),
        ParamSpec::new("secure", ParamKind::Bool, "https").default("true"),
        ParamSpec::new("maxthreads", ParamKind::Integer, "limit").default("100"),
        ParamSpec::new("duration", ParamKind::Duration, "ttl").default("20m"),
        ParamSpec::new("secretkey", ParamKind::Secret, "key"),
    ];

    fn raw(pairs: &[&str]) -> RawParams {
        parse_pairs(pairs).unwrap()
    }

    #[test]
    fn strings_from_the_environment_become_typed_values() {
        let p = resolve(
            "s3",
            SPECS,
            &raw(&[
                "bucket=b",
                "chunksize=5MiB",
                "secure=false",
                "maxthreads=25",
                "duration=1h30m",
            ]),
        )
        .unwrap();
        assert_eq!(p.string("bucket"), Some("b"));
        assert_eq!(p.size("chunksize"), Some(5 << 20));
        assert_eq!(p.bool("secure"), Some(false));
        assert_eq!(p.integer("maxthreads"), Some(25));
        assert_eq!(p.duration("duration"), Some(Duration::from_secs(5400)));
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let p = resolve("s3", SPECS, &raw(&["bucket=b"])).unwrap();
        assert_eq!(p.size("chunksize"), Some(10 << 20));
        assert_eq!(p.bool("secure"), Some(true));
        assert_eq!(p.duration("duration"), Some(Duration::from_secs(1200)));
        assert_eq!(p.string("secretkey"), None);
    }

    #[test]
    fn declared_defaults_are_read_typed_without_repeating_them() {
        let p = resolve("s3", SPECS, &raw(&["bucket=b"])).unwrap();
        assert_eq!(p.require_size("chunksize").unwrap(), 10 << 20);
        assert!(p.require_bool("secure").unwrap());
        assert_eq!(p.require_integer("maxthreads").unwrap(), 100);
        assert_eq!(
            p.require_duration("duration").unwrap(),
            Duration::from_secs(1200)
        );
        let e = p.require_string("secretkey").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        assert!(e.to_string().contains(r#""secretkey" is required"#), "{e}");
        let d = defaults("s3", &SPECS[1..]).unwrap();
        assert_eq!(d.require_integer("maxthreads").unwrap(), 100);
        assert!(defaults("s3", SPECS).is_err(), "bucket is required");
    }

    #[test]
    fn unknown_parameter_suggests_the_nearest_name() {
        let e = resolve("s3", SPECS, &raw(&["bucktet=b"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"s3: unknown parameter "bucktet" (did you mean "bucket"?)"#
        );
    }

    #[test]
    fn wrong_types_say_what_was_expected() {
        let e = resolve("s3", SPECS, &raw(&["bucket=b", "secure=maybe"])).unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"parameter "secure": expected true or false, got "maybe""#),
            "{e}"
        );
        let e = resolve("s3", SPECS, &raw(&["bucket=b", "chunksize=ten"])).unwrap_err();
        assert!(e.to_string().contains("expected a size"), "{e}");
        let mut r = raw(&["bucket=b"]);
        r.insert("maxthreads".into(), serde_json::json!({"a": 1}));
        let e = resolve("s3", SPECS, &r).unwrap_err();
        assert!(
            e.to_string().ends_with(
                r#"parameter "maxthreads": expected a value of type integer, got {"a":1}"#
            ),
            "{e}"
        );
    }

    #[test]
    fn a_shortened_name_is_suggested_too() {
        let e = resolve("s3", SPECS, &raw(&["chunk=5MiB"])).unwrap_err();
        assert!(
            e.to_string().ends_with(r#"(did you mean "chunksize"?)"#),
            "{e}"
        );
        assert_eq!(nearest("zzz", ["bucket"]), None);
    }

    #[test]
    fn missing_required_parameter_is_named() {
        let e = resolve("s3", SPECS, &RawParams::new()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(r#"s3: parameter "bucket" is required"#),
            "{e}"
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let p = resolve("s3", SPECS, &raw(&["bucket=b", "secretkey=hunter2"])).unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        assert_eq!(p.string("secretkey"), Some("hunter2"));
    }

    #[test]
    fn sizes_and_durations_parse_as_documented() {
        assert_eq!(parse_size("10485760"), Ok(10 << 20));
        assert_eq!(parse_size("5 MB"), Ok(5_000_000));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}

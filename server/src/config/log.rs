//! `log` (and the old top-level `loglevel`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::value::flag;

/// `log`, as the binary sets up logging from it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogConfig {
    /// `log.level` (or the old top-level `loglevel`): `error`, `warn`,
    /// `info`, `debug`, or any `tracing` env-filter.
    pub level: Option<String>,
    /// `log.formatter`.
    pub format: LogFormat,
    /// `log.fields`: added to every line.
    pub fields: BTreeMap<String, Value>,
    /// Not `log.accesslog.disabled`: one line per request.
    pub access_log: bool,
}

/// `log.formatter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `text` (default): human-readable lines.
    #[default]
    Text,
    /// `json`, and `logstash` (distribution's logstash formatter writes the
    /// same JSON object per line, which logstash reads): one JSON object
    /// per line with `time`, `level`, `msg`, the event's fields and
    /// `log.fields`.
    #[serde(alias = "logstash")]
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Section {
    level: Option<String>,
    formatter: Option<LogFormat>,
    fields: BTreeMap<String, Value>,
    accesslog: AccessLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AccessLog {
    #[serde(deserialize_with = "flag")]
    disabled: Option<bool>,
}

impl Section {
    /// The log settings, with the old top-level `loglevel` as fallback.
    pub(super) fn resolve(self, loglevel: Option<String>) -> LogConfig {
        LogConfig {
            level: self.level.or(loglevel),
            format: self.formatter.unwrap_or_default(),
            fields: self.fields,
            access_log: !self.accesslog.disabled.unwrap_or(false),
        }
    }
}

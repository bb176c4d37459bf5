//! Logging to stderr as `log` in the config asks: level, format (text or
//! one JSON object per line) and the static `log.fields`.

use std::collections::BTreeMap;
use std::fmt;

use regstore_server::config::{LogConfig, LogFormat};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Sends `tracing` output to stderr: `REGSTORE_LOG` (an env-filter such as
/// `debug` or `regstore_core=trace`) if set, else `log.level` (default
/// `info`), as text or JSON lines with `log.fields` added.
///
/// Does nothing if a subscriber is already set (tests that call it twice).
pub fn init(log: &LogConfig) {
    let level = log.level.as_deref().unwrap_or("info");
    let filter = tracing_subscriber::EnvFilter::try_from_env("REGSTORE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder
            .event_format(JsonLines {
                fields: log.fields.clone(),
            })
            .try_init(),
        LogFormat::Text if log.fields.is_empty() => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(false)
            .event_format(WithFields {
                inner: tracing_subscriber::fmt::format(),
                suffix: text_suffix(&log.fields),
            })
            .try_init(),
    };
}

/// ` key=value …` for the text format (strings unquoted when they are one
/// word, as logrus's text formatter writes them).
fn text_suffix(fields: &BTreeMap<String, Value>) -> String {
    fields
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) if !s.is_empty() && !s.contains([' ', '"', '=']) => {
                format!(" {k}={s}")
            }
            other => format!(" {k}={other}"),
        })
        .collect()
}

/// The default text line with the static fields appended.
struct WithFields<F> {
    inner: F,
    suffix: String,
}

impl<S, N, F> FormatEvent<S, N> for WithFields<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writeln!(writer, "{}{}", line.trim_end_matches('\n'), self.suffix)
    }
}

/// One JSON object per event: `time` (RFC 3339, UTC), `level`, `msg`,
/// `target`, the event's fields, then `log.fields` (an event field of the
/// same name wins).
struct JsonLines {
    fields: BTreeMap<String, Value>,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut obj: Map<String, Value> = self
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let meta = event.metadata();
        obj.insert(
            "time".into(),
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        obj.insert(
            "level".into(),
            meta.level().as_str().to_ascii_lowercase().into(),
        );
        obj.insert("target".into(), meta.target().into());
        event.record(&mut JsonFields(&mut obj));
        writeln!(writer, "{}", Value::Object(obj))
    }
}

/// Collects an event's fields; `message` becomes `msg`.
struct JsonFields<'a>(&'a mut Map<String, Value>);

impl JsonFields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = match field.name() {
            "message" => "msg",
            other => other,
        };
        self.0.insert(name.to_owned(), value);
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_are_key_value_pairs() {
        let fields: BTreeMap<String, Value> = [
            ("service".to_owned(), Value::from("registry")),
            ("env".to_owned(), Value::from("two words")),
            ("n".to_owned(), Value::from(3)),
        ]
        .into();
        assert_eq!(
            text_suffix(&fields),
            " env=\"two words\" n=3 service=registry"
        );
    }
}

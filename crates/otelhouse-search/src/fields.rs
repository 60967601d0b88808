//! Which names a search may use, per signal: the table's columns by schema
//! name, friendly aliases, and the attribute keys seen in the data. A name
//! that is none of these is an error with a suggestion, never SQL.

use std::collections::BTreeSet;

use arrow::datatypes::DataType;
use otelhouse_schema::{Signal, Table};

use crate::ast::Field;

/// The fields of one signal's table, for parsing and autocomplete.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub signal: Signal,
    columns: Vec<(&'static str, bool)>,
    /// Attribute keys seen in the data (any of the signal's attribute maps).
    pub attribute_keys: BTreeSet<String>,
}

const LOG_ALIASES: &[(&str, &str)] = &[
    ("service", "ServiceName"),
    ("level", "SeverityText"),
    ("severity", "SeverityText"),
    ("body", "Body"),
    ("trace_id", "TraceId"),
    ("span_id", "SpanId"),
    ("timestamp", "Timestamp"),
];

const SPAN_ALIASES: &[(&str, &str)] = &[
    ("service", "ServiceName"),
    ("name", "SpanName"),
    ("body", "SpanName"),
    ("duration", "Duration"),
    ("status", "StatusCode"),
    ("kind", "SpanKind"),
    ("trace_id", "TraceId"),
    ("span_id", "SpanId"),
    ("parent_span_id", "ParentSpanId"),
    ("timestamp", "Timestamp"),
];

const METRIC_ALIASES: &[(&str, &str)] = &[
    ("service", "ServiceName"),
    ("name", "MetricName"),
    ("unit", "MetricUnit"),
    ("timestamp", "TimeUnix"),
];

/// The table whose columns a signal's searches use (for metrics, the
/// columns every metric table shares).
fn table_of(signal: Signal) -> Table {
    match signal {
        Signal::Logs => Table::Logs,
        Signal::Traces => Table::Traces,
        Signal::Metrics => Table::Gauge,
    }
}

impl Catalog {
    /// The catalogue of `signal` with the attribute keys seen.
    pub fn new(signal: Signal, attribute_keys: impl IntoIterator<Item = String>) -> Self {
        let schema = table_of(signal).schema();
        let shared = match signal {
            Signal::Metrics => otelhouse_schema::METRIC_COMMON_COLUMNS,
            _ => usize::MAX,
        };
        let columns = schema
            .fields()
            .iter()
            .take(shared)
            .filter(|f| !matches!(f.data_type(), DataType::Map(..) | DataType::List(..)))
            .map(|f| {
                let name: &'static str = static_name(f.name());
                (name, f.data_type().is_numeric())
            })
            .collect();
        Catalog {
            signal,
            columns,
            attribute_keys: attribute_keys.into_iter().collect(),
        }
    }

    /// The column a bare term searches.
    pub fn implicit_column(&self) -> &'static str {
        match self.signal {
            Signal::Traces => "SpanName",
            Signal::Logs => "Body",
            Signal::Metrics => "MetricName",
        }
    }

    /// Friendly names and the columns they stand for.
    pub fn aliases(&self) -> &'static [(&'static str, &'static str)] {
        match self.signal {
            Signal::Traces => SPAN_ALIASES,
            Signal::Logs => LOG_ALIASES,
            Signal::Metrics => METRIC_ALIASES,
        }
    }

    /// The maps a bare attribute key is looked up in, in order.
    pub fn attribute_maps(&self) -> Vec<&'static str> {
        match self.signal {
            Signal::Traces => vec!["SpanAttributes", "ResourceAttributes"],
            Signal::Logs => vec!["LogAttributes", "ResourceAttributes"],
            Signal::Metrics => vec!["Attributes", "ResourceAttributes"],
        }
    }

    /// A timestamp column (searched by the time range, not by terms).
    pub fn is_time(&self, name: &str) -> bool {
        table_of(self.signal)
            .schema()
            .field_with_name(name)
            .is_ok_and(|f| matches!(f.data_type(), DataType::Timestamp(..)))
    }

    /// The columns (schema name, numeric?) a search may name.
    pub fn columns(&self) -> &[(&'static str, bool)] {
        &self.columns
    }

    pub fn column(&self, name: &str) -> Option<Field> {
        self.columns
            .iter()
            .find(|(c, _)| *c == name)
            .map(|(c, numeric)| Field::Column {
                name: c,
                numeric: *numeric,
            })
    }

    /// Resolves a field name: a column, an alias, `LogAttributes.key`
    /// (and the other maps), or a seen attribute key.
    pub fn resolve(&self, name: &str) -> Result<Field, String> {
        if let Some(f) = self.column(name) {
            return Ok(f);
        }
        let lower = name.to_ascii_lowercase();
        if let Some((_, col)) = self.aliases().iter().find(|(a, _)| *a == lower) {
            return Ok(self.column(col).expect("aliases name real columns"));
        }
        for map in [
            "LogAttributes",
            "SpanAttributes",
            "ResourceAttributes",
            "ScopeAttributes",
            "Attributes",
        ] {
            if let Some(key) = name.strip_prefix(map).and_then(|r| r.strip_prefix('.'))
                && self.has_map(map)
                && !key.is_empty()
            {
                return Ok(Field::Attribute {
                    key: key.to_string(),
                    maps: vec![static_name(map)],
                });
            }
        }
        if self.attribute_keys.contains(name) {
            return Ok(Field::Attribute {
                key: name.to_string(),
                maps: self.attribute_maps(),
            });
        }
        let mut msg = format!("unknown field `{name}`");
        if let Some(s) = self.suggest(name) {
            msg += &format!("; did you mean `{s}`?");
        }
        Err(msg)
    }

    fn has_map(&self, map: &str) -> bool {
        table_of(self.signal).schema().field_with_name(map).is_ok()
    }

    /// Every name a user may type, for autocomplete and suggestions.
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = self.aliases().iter().map(|(a, _)| a.to_string()).collect();
        out.extend(self.columns.iter().map(|(c, _)| c.to_string()));
        out.extend(self.attribute_keys.iter().cloned());
        out
    }

    /// The closest known name, if close enough to be a typo.
    pub fn suggest(&self, name: &str) -> Option<String> {
        let lower = name.to_lowercase();
        self.names()
            .into_iter()
            .map(|n| (edit_distance(&lower, &n.to_lowercase()), n))
            .filter(|(d, n)| *d <= (n.chars().count() / 3).max(1))
            .min_by_key(|(d, _)| *d)
            .map(|(_, n)| n)
    }
}

/// Column names live as long as the program (the schema is static); this
/// maps a schema field's name to its `'static` spelling.
fn static_name(name: &str) -> &'static str {
    use std::sync::{LazyLock, Mutex};
    static NAMES: LazyLock<Mutex<BTreeSet<&'static str>>> = LazyLock::new(Default::default);
    let mut names = NAMES.lock().unwrap();
    if let Some(n) = names.get(name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Damerau–Levenshtein (optimal string alignment) distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_columns_aliases_prefixes_and_seen_attributes() {
        let c = Catalog::new(Signal::Logs, ["http.status_code".to_string()]);
        assert_eq!(
            c.resolve("ServiceName"),
            Ok(Field::Column {
                name: "ServiceName",
                numeric: false
            })
        );
        assert_eq!(
            c.resolve("level"),
            Ok(Field::Column {
                name: "SeverityText",
                numeric: false
            })
        );
        assert_eq!(
            c.resolve("SeverityNumber"),
            Ok(Field::Column {
                name: "SeverityNumber",
                numeric: true
            })
        );
        assert_eq!(
            c.resolve("http.status_code"),
            Ok(Field::Attribute {
                key: "http.status_code".into(),
                maps: vec!["LogAttributes", "ResourceAttributes"]
            })
        );
        assert_eq!(
            c.resolve("ResourceAttributes.host.name"),
            Ok(Field::Attribute {
                key: "host.name".into(),
                maps: vec!["ResourceAttributes"]
            })
        );
        assert_eq!(
            c.resolve("servce").unwrap_err(),
            "unknown field `servce`; did you mean `service`?"
        );
        assert_eq!(c.resolve("zzzzzz").unwrap_err(), "unknown field `zzzzzz`");
        assert!(
            c.resolve("SpanAttributes.x").is_err(),
            "logs have no SpanAttributes"
        );
        let t = Catalog::new(Signal::Traces, []);
        assert_eq!(
            t.resolve("duration"),
            Ok(Field::Column {
                name: "Duration",
                numeric: true
            })
        );
        assert_eq!(t.implicit_column(), "SpanName");
    }
}

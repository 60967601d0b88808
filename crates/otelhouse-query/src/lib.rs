//! What the query API means, for every front (HTTP API, CLI, UI) and every
//! backend: search text parsed against a field catalogue built from the
//! data, time ranges defaulted and bounded, cursors, and the chart-shaped
//! answers (histogram, facets, aggregates, services, metric series) built
//! from the few primitives a [`Storage`] implements.
//!
//! Invariant: every limit (query length and depth, rows, time range,
//! series, buckets, points) is checked here or in the parser before a
//! backend runs anything; backends only add the per-query timeout and
//! memory budget.

pub mod charts;
pub mod cursor;
pub mod interval;
pub mod measures;
pub mod metrics;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use otelhouse_schema::Signal;
use otelhouse_search::{Catalog, Condition, Field, ParseError, Query, Term};
use otelhouse_storage::{
    AttributeKey, QueryError, SearchQuery, Selected, Sort, SqlQuery, SqlResult, Storage, TimeRange,
};
use parking_lot::Mutex;
use serde::Serialize;

pub use charts::{Chart, Facet, FacetValue, Point, Series, ServiceStats};

/// Bounds on what one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most rows one page or SQL result returns.
    pub max_rows: usize,
    /// Widest time range one request may cover.
    pub max_range: Duration,
    /// The range when a request gives no `from`: this long before `to`.
    pub default_range: Duration,
    /// Most series in one chart.
    pub max_series: usize,
    /// Most time buckets in one chart.
    pub max_buckets: usize,
    /// Most metric points one metric query reads.
    pub max_points: usize,
    /// Rows sampled to list attribute keys.
    pub key_sample_rows: usize,
    /// How long a listing of attribute keys is reused.
    pub catalog_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rows: 10_000,
            max_range: Duration::from_secs(31 * 24 * 3600),
            default_range: Duration::from_secs(24 * 3600),
            max_series: 100,
            max_buckets: 2_000,
            max_points: 200_000,
            key_sample_rows: 100_000,
            catalog_ttl: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The search text does not parse; the position is 1-based.
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Query(#[from] QueryError),
}

pub fn bad(message: impl Into<String>) -> Error {
    Error::Query(QueryError::BadRequest(message.into()))
}

/// The latest time a request may name: 2200-01-01 (well inside i64
/// nanoseconds, so bucket arithmetic cannot overflow).
pub const LATEST: i64 = 7_258_118_400_000_000_000;

/// Most columns one search may select.
pub const MAX_COLUMNS: usize = 50;
/// Most unknown names one request may have looked up in the data.
const MAX_LOOKUPS: usize = 8;

pub fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Attribute keys known for one signal: a sampled listing refreshed every
/// `catalog_ttl`, plus keys confirmed (or refuted) by looking them up.
#[derive(Default)]
struct KnownKeys {
    listed_at: Option<Instant>,
    /// A refresh is running in the background.
    refreshing: bool,
    listed: Vec<AttributeKey>,
    looked_up: HashMap<String, (bool, Instant)>,
}

/// The query API over one store.
pub struct QueryService {
    storage: Arc<dyn Storage>,
    pub limits: Limits,
    known: Arc<Mutex<HashMap<Signal, KnownKeys>>>,
}

/// A page of rows and the cursor of the next one.
#[derive(Debug, Serialize)]
pub struct Page {
    /// The rows' keys in display order (JSON objects carry no order).
    pub columns: Vec<String>,
    pub rows: Vec<otelhouse_storage::Row>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// What the catalogue offers for a signal.
#[derive(Debug, Serialize)]
pub struct Fields {
    pub signal: &'static str,
    pub columns: Vec<ColumnInfo>,
    /// Attribute keys in a sample of recent rows, most common first.
    pub attributes: Vec<AttributeKey>,
    pub sampled_rows: usize,
}

#[derive(Debug, Serialize)]
pub struct ColumnInfo {
    pub name: &'static str,
    pub numeric: bool,
    pub aliases: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Explained {
    pub query: Query,
    pub explanation: String,
}

/// One search as a user states it (names and text, not yet resolved).
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub signal: Option<Signal>,
    pub q: String,
    pub range: TimeRange,
    pub columns: Option<Vec<String>>,
    pub sort: Option<String>,
    pub ascending: bool,
    pub cursor: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Serialize)]
pub struct Trace {
    pub spans: Vec<otelhouse_storage::Row>,
    /// Logs that carry the trace's id, oldest first.
    pub logs: Vec<otelhouse_storage::Row>,
}

impl QueryService {
    pub fn new(storage: Arc<dyn Storage>, limits: Limits) -> Self {
        QueryService {
            storage,
            limits,
            known: Arc::default(),
        }
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The range a request covers: `from` defaults to `default_range`
    /// before `to` (or now); the span may not exceed `max_range`.
    pub fn range(&self, from: Option<i64>, to: Option<i64>) -> Result<TimeRange, Error> {
        for (name, t) in [("from", from), ("to", to)] {
            if let Some(t) = t
                && !(0..=LATEST).contains(&t)
            {
                return Err(bad(format!(
                    "`{name}` must fall between 1970 and 2200, got {t}"
                )));
            }
        }
        let end = to.unwrap_or_else(now_nanos);
        let default = self.limits.default_range.min(self.limits.max_range);
        let from = from.unwrap_or(end.saturating_sub(default.as_nanos() as i64));
        if from > end {
            return Err(bad("`from` is after `to`"));
        }
        let span = end.saturating_sub(from) as u128;
        if span > self.limits.max_range.as_nanos() {
            return Err(bad(format!(
                "the time range covers {}; at most {} may be queried at once (--max-query-range)",
                humantime::format_duration(Duration::from_secs((span / 1_000_000_000) as u64)),
                humantime::format_duration(self.limits.max_range),
            )));
        }
        Ok(TimeRange {
            from: Some(from),
            to,
        })
    }

    /// Checks a requested row count against `max_rows`.
    pub fn rows(&self, limit: usize) -> Result<usize, Error> {
        if limit == 0 || limit > self.limits.max_rows {
            return Err(bad(format!(
                "`limit` must be from 1 to {}, got {limit}",
                self.limits.max_rows
            )));
        }
        Ok(limit)
    }

    /// The catalogue of a signal with the attribute keys known now. The
    /// first call lists keys (a sample of the default range); later calls
    /// use that listing and, once it is older than `catalog_ttl`, refresh
    /// it in the background: a key missing from a stale listing is looked
    /// up in the data anyway (`parse`), so no request waits for a refresh.
    pub async fn catalog(&self, signal: Signal) -> Result<Catalog, Error> {
        let (missing, stale) = {
            let mut known = self.known.lock();
            let k = known.entry(signal).or_default();
            let stale = k
                .listed_at
                .is_some_and(|t| t.elapsed() > self.limits.catalog_ttl)
                && !k.refreshing;
            if stale {
                k.refreshing = true;
            }
            (k.listed_at.is_none(), stale)
        };
        let range = self.range(None, None)?;
        if missing {
            let listed = self
                .storage
                .attribute_keys(signal, range, self.limits.key_sample_rows)
                .await?;
            let mut known = self.known.lock();
            let k = known.entry(signal).or_default();
            k.listed = listed;
            k.listed_at = Some(Instant::now());
        } else if stale {
            let (storage, known, rows) = (
                self.storage.clone(),
                self.known.clone(),
                self.limits.key_sample_rows,
            );
            tokio::spawn(async move {
                let listed = storage.attribute_keys(signal, range, rows).await;
                let mut known = known.lock();
                let k = known.entry(signal).or_default();
                k.refreshing = false;
                match listed {
                    Ok(listed) => {
                        k.listed = listed;
                        k.listed_at = Some(Instant::now());
                    }
                    Err(e) => tracing::warn!(error = %e, "refreshing the attribute keys failed"),
                }
            });
        }
        let known = self.known.lock();
        let k = &known[&signal];
        let lookup_maps = Catalog::new(signal, []).attribute_maps();
        let keys = k
            .listed
            .iter()
            .filter(|a| lookup_maps.contains(&a.map))
            .map(|a| a.key.clone())
            .chain(
                k.looked_up
                    .iter()
                    .filter(|(_, (found, _))| *found)
                    .map(|(key, _)| key.clone()),
            );
        Ok(Catalog::new(signal, keys))
    }

    /// Whether any row in `range` carries attribute `key` (in the maps a
    /// bare key is looked up in). Answers are remembered for the TTL.
    async fn attribute_exists(
        &self,
        signal: Signal,
        key: &str,
        range: TimeRange,
    ) -> Result<bool, Error> {
        if let Some((found, at)) = self
            .known
            .lock()
            .get(&signal)
            .and_then(|k| k.looked_up.get(key).copied())
            && at.elapsed() < self.limits.catalog_ttl
        {
            return Ok(found);
        }
        let catalog = Catalog::new(signal, []);
        let field = Field::Attribute {
            key: key.to_string(),
            maps: catalog.attribute_maps(),
        };
        let found = if signal == Signal::Metrics {
            false
        } else {
            let mut q = SearchQuery::newest(
                signal,
                Query::Term(Term {
                    field,
                    condition: Condition::Exists,
                }),
                range,
                1,
            );
            q.columns = Some(Vec::new());
            !self.storage.search(&q).await?.rows.is_empty()
        };
        let mut known = self.known.lock();
        let k = known.entry(signal).or_default();
        if k.looked_up.len() > 10_000 {
            k.looked_up.clear();
        }
        k.looked_up.insert(key.to_string(), (found, Instant::now()));
        Ok(found)
    }

    /// Parses search text; a field name that is neither a column, an alias
    /// nor a listed key is looked up in the data before it is an error.
    pub async fn parse(
        &self,
        signal: Signal,
        text: &str,
        range: TimeRange,
    ) -> Result<Query, Error> {
        let mut catalog = self.catalog(signal).await?;
        // Each round confirms one more key; a query names few fields.
        for _ in 0..MAX_LOOKUPS {
            match otelhouse_search::parse(text, &catalog) {
                Ok(q) => return Ok(q),
                Err(e) => {
                    let Some(name) = e.unknown_field.clone() else {
                        return Err(e.into());
                    };
                    if !self.attribute_exists(signal, &name, range).await? {
                        return Err(e.into());
                    }
                    catalog.attribute_keys.insert(name);
                }
            }
        }
        Err(bad("the query names too many fields"))
    }

    /// A field name (column, alias, attribute) as the catalogue resolves it.
    pub async fn field(
        &self,
        signal: Signal,
        name: &str,
        range: TimeRange,
    ) -> Result<Field, Error> {
        let catalog = self.catalog(signal).await?;
        match catalog.resolve(name) {
            Ok(f) => Ok(f),
            Err(msg) => {
                if self.attribute_exists(signal, name, range).await? {
                    Ok(Field::Attribute {
                        key: name.to_string(),
                        maps: catalog.attribute_maps(),
                    })
                } else {
                    Err(bad(msg))
                }
            }
        }
    }

    pub async fn explain(&self, signal: Signal, text: &str) -> Result<Explained, Error> {
        let range = self.range(None, None)?;
        let query = self.parse(signal, text, range).await?;
        Ok(Explained {
            explanation: otelhouse_search::explain(&query),
            query,
        })
    }

    pub async fn fields(&self, signal: Signal, range: TimeRange) -> Result<Fields, Error> {
        let catalog = Catalog::new(signal, []);
        let attributes = self
            .storage
            .attribute_keys(signal, range, self.limits.key_sample_rows)
            .await?;
        let columns = catalog
            .columns()
            .iter()
            .map(|(name, numeric)| ColumnInfo {
                name,
                numeric: *numeric,
                aliases: catalog
                    .aliases()
                    .iter()
                    .filter(|(_, c)| c == name)
                    .map(|(a, _)| *a)
                    .collect(),
            })
            .collect();
        Ok(Fields {
            signal: signal.as_str(),
            columns,
            attributes,
            sampled_rows: self.limits.key_sample_rows,
        })
    }

    pub async fn search(&self, r: &SearchRequest) -> Result<Page, Error> {
        let signal = search_signal(r.signal)?;
        let limit = self.rows(r.limit)?;
        let filter = self.parse(signal, &r.q, r.range).await?;
        let catalog = Catalog::new(signal, []);
        let sort = match &r.sort {
            None => Sort {
                column: "Timestamp",
                descending: !r.ascending,
            },
            Some(name) => match catalog.resolve(name) {
                Ok(Field::Column {
                    name: long @ ("Body" | "StatusMessage"),
                    ..
                }) => {
                    return Err(bad(format!(
                        "`sort`: sorting by `{long}` is not supported (a long text); search it instead"
                    )));
                }
                Ok(Field::Column { name, .. }) => Sort {
                    column: name,
                    descending: !r.ascending,
                },
                _ => {
                    return Err(bad(format!(
                        "`sort`: `{name}` is not a column of {}; sort by a column such as Timestamp",
                        signal.as_str()
                    )));
                }
            },
        };
        let columns = match &r.columns {
            None => None,
            Some(names) => {
                if names.len() > MAX_COLUMNS {
                    return Err(bad(format!(
                        "`columns`: at most {MAX_COLUMNS} names, got {}",
                        names.len()
                    )));
                }
                let mut cols: Vec<Selected> = Vec::new();
                let mut lookups = 0;
                let catalog = self.catalog(signal).await?;
                for name in names {
                    if name.starts_with("__") {
                        return Err(bad(format!("`columns`: `{name}` is not a field")));
                    }
                    if catalog.resolve(name).is_err() {
                        lookups += 1;
                        if lookups > MAX_LOOKUPS {
                            return Err(bad(format!(
                                "`columns`: more than {MAX_LOOKUPS} names are neither columns nor known attribute keys"
                            )));
                        }
                    }
                    let field = self.field(signal, name, r.range).await?;
                    let name = match &field {
                        Field::Column { name, .. } => (*name).to_string(),
                        Field::Attribute { .. } => name.clone(),
                    };
                    if !cols.iter().any(|c| c.name == name) {
                        cols.push(Selected { name, field });
                    }
                }
                Some(cols)
            }
        };
        let after = r
            .cursor
            .as_deref()
            .map(|c| cursor::decode(c, signal, sort))
            .transpose()?;
        let q = SearchQuery {
            signal,
            filter,
            range: r.range,
            columns,
            sort,
            after,
            limit,
        };
        let page = self.storage.search(&q).await?;
        let columns = match &q.columns {
            Some(cols) => cols.iter().map(|c| c.name.clone()).collect(),
            None => otelhouse_storage::reads::table_of(signal)?
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        };
        Ok(Page {
            columns,
            rows: page.rows,
            next_cursor: page.next.map(|c| cursor::encode(&c, signal, sort)),
        })
    }

    /// All spans of a trace and the logs that carry its id.
    pub async fn trace(&self, trace_id: &str) -> Result<Trace, Error> {
        if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "a trace id is 32 hex characters, got {trace_id:?}"
            )));
        }
        let trace_id = trace_id.to_ascii_lowercase();
        let spans = self.storage.trace(&trace_id, self.limits.max_rows).await?;
        let catalog = Catalog::new(Signal::Logs, []);
        let mut q = SearchQuery::newest(
            Signal::Logs,
            Query::Term(Term {
                field: catalog.column("TraceId").expect("logs have TraceId"),
                condition: Condition::Equals { value: trace_id },
            }),
            TimeRange::default(),
            self.limits.max_rows,
        );
        q.sort.descending = false;
        let logs = self.storage.search(&q).await?.rows;
        Ok(Trace { spans, logs })
    }

    pub async fn sql(
        &self,
        sql: &str,
        range: TimeRange,
        max_rows: usize,
    ) -> Result<SqlResult, Error> {
        if sql.len() > otelhouse_search::MAX_QUERY_BYTES * 4 {
            return Err(bad(format!(
                "the statement is {} bytes long; at most {} are accepted",
                sql.len(),
                otelhouse_search::MAX_QUERY_BYTES * 4
            )));
        }
        let q = SqlQuery {
            sql: sql.to_string(),
            range,
            max_rows: self.rows(max_rows)?,
        };
        Ok(self.storage.sql(&q).await?)
    }
}

/// Search and charts cover logs and spans.
pub fn search_signal(signal: Option<Signal>) -> Result<Signal, Error> {
    match signal {
        Some(s @ (Signal::Logs | Signal::Traces)) => Ok(s),
        _ => Err(bad("`signal` must be logs or traces")),
    }
}

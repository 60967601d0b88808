//! The ClickHouse backend's read side: each request of
//! `otelhouse_storage::query` as one parameterised statement, run with
//! the per-query limits, answered in the same row form as the embedded
//! store (same order, same tie-break, same value formats).

use async_trait::async_trait;
use otelhouse_schema::{Signal, Table};
use otelhouse_search::{Field, Query};
use otelhouse_storage::reads::{OrderKey, attribute_maps, next_cursor, order_keys, table_of};
use otelhouse_storage::{
    AggFunc, AggregateQuery, AggregateRow, AttributeKey, KeyCounts, Measure, MetricQuery,
    QueryError, Row, SearchPage, SearchQuery, Sort, SortValue, SqlQuery, SqlResult, Storage,
    TableStats, TimeRange, merge_metric_points,
};
use serde_json::Value;
use sqlparser::dialect::ClickHouseDialect;

use crate::client::{ClickHouseError, Client, Statement};
use crate::compile::{filter, ident, number, text};

/// Per-query limits (ClickHouse settings sent with every read).
#[derive(Debug, Clone)]
pub struct ReadLimits {
    pub max_execution_time: std::time::Duration,
    pub max_rows_to_read: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_execution_time: std::time::Duration::from_secs(30),
            max_rows_to_read: 2_000_000_000,
        }
    }
}

/// Reads from ClickStack's tables as the query user.
#[derive(Debug, Clone)]
pub struct ClickHouseReader {
    client: Client,
    limits: ReadLimits,
}

fn time_cond(column: &str, range: TimeRange, st: &mut Statement) -> String {
    let mut parts = vec!["1".to_string()];
    if let Some(from) = range.from {
        parts.push(format!(
            "{} >= fromUnixTimestamp64Nano({})",
            ident(column),
            st.bind("Int64", from)
        ));
    }
    if let Some(to) = range.to {
        parts.push(format!(
            "{} <= fromUnixTimestamp64Nano({})",
            ident(column),
            st.bind("Int64", to)
        ));
    }
    parts.join(" AND ")
}

fn where_clause(table: Table, q: &Query, range: TimeRange, st: &mut Statement) -> String {
    let time = time_cond(table.time_column(), range, st);
    match q {
        Query::All => time,
        q => format!("{time} AND ({})", filter(q, st)),
    }
}

/// The ORDER BY of a search: the same keys as the embedded store's
/// (`order_keys`).
fn order_by(table: Table, sort: Sort) -> String {
    order_keys(table, sort)
        .iter()
        .map(|(k, desc)| {
            let e = match k {
                OrderKey::Column(c) => ident(c),
                OrderKey::MapText(m) => format!(
                    "concat(arrayStringConcat(mapKeys({m}), '\\x1F'), '\\x1E', arrayStringConcat(mapValues({m}), '\\x1F'))",
                    m = ident(m)
                ),
            };
            format!("{e} {}", if *desc { "DESC" } else { "ASC" })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn json_lines(body: &[u8]) -> Result<Vec<Row>, QueryError> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<Row>(l).map_err(|e| {
                QueryError::Internal(format!("ClickHouse answered unreadable JSON: {e}"))
            })
        })
        .collect()
}

fn measure_sql(m: &Measure, st: &mut Statement) -> Result<String, QueryError> {
    let field = |st: &mut Statement, f: fn(&Field, &mut Statement) -> String| {
        m.field
            .as_ref()
            .map(|x| f(x, st))
            .ok_or_else(|| QueryError::BadRequest(format!("{:?} needs a field", m.func)))
    };
    Ok(match m.func {
        AggFunc::Count => match &m.field {
            None => "count()".into(),
            Some(f) => format!("count({})", text(f, st)),
        },
        AggFunc::Sum => format!("sum({})", field(st, number)?),
        AggFunc::Avg => format!("avg({})", field(st, number)?),
        AggFunc::Min => format!("min({})", field(st, number)?),
        AggFunc::Max => format!("max({})", field(st, number)?),
        // Same interpolation as DataFusion's percentile_cont.
        AggFunc::Quantile(p) => format!("quantileExactInclusive({p})({})", field(st, number)?),
        AggFunc::CountDistinct => format!("uniqExact({})", field(st, text)?),
    })
}

/// ClickHouse writes a whole Float64 as `0`; the rows' Float64 columns
/// hold JSON floats (`0.0`), as the embedded store writes them.
fn floats_as_floats(table: Table, rows: &mut [Row]) {
    use arrow::datatypes::DataType;
    let float = |v: &mut Value| {
        if let Some(f) = v.as_f64()
            && let Some(n) = serde_json::Number::from_f64(f)
        {
            *v = Value::Number(n);
        }
    };
    for field in table.schema().fields() {
        let list = match field.data_type() {
            DataType::Float64 => false,
            DataType::List(item) if item.data_type() == &DataType::Float64 => true,
            _ => continue,
        };
        for r in rows.iter_mut() {
            match r.get_mut(field.name()) {
                Some(Value::Array(items)) if list => items.iter_mut().for_each(float),
                Some(v) if !list => float(v),
                _ => {}
            }
        }
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl ClickHouseReader {
    pub fn new(client: Client, limits: ReadLimits) -> Self {
        ClickHouseReader { client, limits }
    }

    /// A ClickHouse error as the query error the API reports.
    fn error(&self, e: ClickHouseError) -> QueryError {
        match e {
            // TIMEOUT_EXCEEDED
            ClickHouseError::Server { code: 159, .. } => {
                QueryError::Timeout(self.limits.max_execution_time)
            }
            // TOO_MANY_ROWS, MEMORY_LIMIT_EXCEEDED
            ClickHouseError::Server {
                code: 158 | 241,
                message,
            } => QueryError::TooBig(message),
            // SYNTAX_ERROR, UNKNOWN_TABLE, UNKNOWN_IDENTIFIER, READONLY, ACCESS_DENIED, …
            ClickHouseError::Server {
                code: 62 | 60 | 47 | 164 | 497 | 46 | 43 | 81,
                message,
            } => QueryError::BadRequest(message),
            e => QueryError::Internal(e.to_string()),
        }
    }

    fn table(&self, t: Table) -> String {
        format!("{}.{}", ident(self.client.database()), ident(t.name()))
    }

    /// The settings every read sends (the query user's settings profile
    /// must let each of them change: see `provision`).
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "max_execution_time",
                self.limits.max_execution_time.as_secs().max(1).to_string(),
            ),
            ("max_rows_to_read", self.limits.max_rows_to_read.to_string()),
            ("read_overflow_mode", "throw".into()),
            ("cancel_http_readonly_queries_on_client_close", "1".into()),
            ("wait_end_of_query", "1".into()),
            ("output_format_json_quote_64bit_integers", "0".into()),
            ("date_time_output_format", "iso".into()),
            ("session_timezone", "UTC".into()),
        ]
    }

    async fn rows(&self, st: &Statement) -> Result<Vec<Row>, QueryError> {
        let body = self
            .client
            .query(st, &self.settings())
            .await
            .map_err(|e| self.error(e))?;
        json_lines(&body)
    }
}

#[async_trait]
impl Storage for ClickHouseReader {
    async fn search(&self, q: &SearchQuery) -> Result<SearchPage, QueryError> {
        let table = table_of(q.signal)?;
        let schema = table.schema();
        let sort_type = schema
            .field_with_name(q.sort.column)
            .map_err(|_| QueryError::BadRequest(format!("cannot sort by `{}`", q.sort.column)))?
            .data_type()
            .clone();
        let is_time = matches!(sort_type, arrow::datatypes::DataType::Timestamp(..));
        let mut st = Statement::default();
        // Selected fields come back as `__c<i>` and are renamed here: the
        // names a caller chose (attribute keys) never enter the SQL.
        let mut select: Vec<String> = match &q.columns {
            None => schema.fields().iter().map(|f| ident(f.name())).collect(),
            Some(cols) => cols
                .iter()
                .enumerate()
                .map(|(i, c)| match &c.field {
                    Field::Column { name, .. } => format!("{} AS __c{i}", ident(name)),
                    f => format!("{} AS __c{i}", text(f, &mut st)),
                })
                .collect(),
        };
        let sort_col = ident(q.sort.column);
        select.push(if is_time {
            format!("toUnixTimestamp64Nano({sort_col}) AS __sort")
        } else {
            format!("{sort_col} AS __sort")
        });
        let mut cond = where_clause(table, &q.filter, q.range, &mut st);
        let mut skip = 0;
        if let Some(c) = &q.after {
            let op = if q.sort.descending { "<=" } else { ">=" };
            let v = match (&c.value, is_time) {
                (SortValue::Int(n), true) => {
                    format!("fromUnixTimestamp64Nano({})", st.bind("Int64", n))
                }
                (SortValue::Int(n), false) => st.bind("Int64", n),
                (SortValue::Float(f), _) => st.bind("Float64", f),
                (SortValue::Text(s), _) => st.bind("String", s),
            };
            cond = format!("{cond} AND {sort_col} {op} {v}");
            skip = c.skip;
        }
        let order = order_by(table, q.sort);
        let limit = st.bind("UInt64", q.limit);
        let offset = st.bind("UInt64", skip);
        st.sql = format!(
            "SELECT {} FROM {} WHERE {cond} ORDER BY {order} LIMIT {limit} OFFSET {offset} FORMAT JSONEachRow",
            select.join(", "),
            self.table(table),
        );
        let mut rows = self.rows(&st).await?;
        if let Some(cols) = &q.columns {
            for r in &mut rows {
                for (i, c) in cols.iter().enumerate() {
                    let v = r.remove(&format!("__c{i}")).unwrap_or(Value::Null);
                    r.insert(c.name.clone(), v);
                }
            }
        }
        let values: Vec<Option<SortValue>> = rows
            .iter_mut()
            .map(|r| {
                r.remove("__sort").and_then(|v| match v {
                    Value::Number(n) => n
                        .as_i64()
                        .map(SortValue::Int)
                        .or_else(|| n.as_f64().map(SortValue::Float)),
                    Value::String(s) => Some(SortValue::Text(s)),
                    _ => None,
                })
            })
            .collect();
        let next = next_cursor(&values, q.after.as_ref(), q.limit);
        Ok(SearchPage { rows, next })
    }

    async fn aggregate(&self, q: &AggregateQuery) -> Result<Vec<AggregateRow>, QueryError> {
        let table = table_of(q.signal)?;
        if q.group_by.len() > 3 {
            return Err(QueryError::BadRequest("at most 3 group-by fields".into()));
        }
        let mut st = Statement::default();
        let keys: Vec<String> = q.group_by.iter().map(|f| text(f, &mut st)).collect();
        let mut cond = where_clause(table, &q.filter, q.range, &mut st);
        if !keys.is_empty() {
            // The busiest series first, as the embedded store picks them.
            let mut top = st.clone();
            let named: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| format!("{k} AS __g{i}"))
                .collect();
            let order: Vec<String> = (0..keys.len())
                .map(|i| format!("__g{i} ASC NULLS FIRST"))
                .collect();
            let limit = top.bind("UInt64", q.series_limit);
            top.sql = format!(
                "SELECT {}, count() AS __n FROM {} WHERE {cond} GROUP BY {} ORDER BY __n DESC, {} LIMIT {limit} FORMAT JSONEachRow",
                named.join(", "),
                self.table(table),
                (0..keys.len())
                    .map(|i| format!("__g{i}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                order.join(", "),
            );
            let groups = self.rows(&top).await?;
            let alternatives: Vec<String> = groups
                .iter()
                .map(|g| {
                    keys.iter()
                        .enumerate()
                        .map(|(i, k)| match as_text(&g[&format!("__g{i}")]) {
                            Some(v) => format!("{k} = {}", st.bind("String", v)),
                            None => format!("{k} IS NULL"),
                        })
                        .collect::<Vec<_>>()
                        .join(" AND ")
                })
                .map(|a| format!("({a})"))
                .collect();
            cond = format!(
                "{cond} AND ({})",
                if alternatives.is_empty() {
                    "0".into()
                } else {
                    alternatives.join(" OR ")
                }
            );
        }
        let mut group = Vec::new();
        let mut select = Vec::new();
        if let Some(w) = q.bucket {
            let w = st.bind("Int64", w);
            select.push(format!(
                "intDiv(toUnixTimestamp64Nano({}), {w}) * {w} AS __bucket",
                ident(table.time_column())
            ));
            group.push("__bucket".to_string());
        }
        for (i, k) in keys.iter().enumerate() {
            select.push(format!("{k} AS __g{i}"));
            group.push(format!("__g{i}"));
        }
        for (i, m) in q.measures.iter().enumerate() {
            select.push(format!("{} AS __m{i}", measure_sql(m, &mut st)?));
        }
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {cond}",
            select.join(", "),
            self.table(table)
        );
        if !group.is_empty() {
            let order: Vec<String> = group
                .iter()
                .map(|g| format!("{g} ASC NULLS FIRST"))
                .collect();
            sql += &format!(
                " GROUP BY {} ORDER BY {}",
                group.join(", "),
                order.join(", ")
            );
        }
        st.sql = sql + " FORMAT JSONEachRow";
        let rows = self.rows(&st).await?;
        Ok(rows
            .iter()
            .map(|r| AggregateRow {
                bucket: r.get("__bucket").and_then(Value::as_i64),
                group: (0..keys.len())
                    .map(|i| as_text(&r[&format!("__g{i}")]))
                    .collect(),
                values: (0..q.measures.len())
                    .map(|i| as_f64(&r[&format!("__m{i}")]))
                    .collect(),
            })
            .collect())
    }

    async fn attribute_keys(
        &self,
        signal: Signal,
        range: TimeRange,
        sample_rows: usize,
    ) -> Result<Vec<AttributeKey>, QueryError> {
        let mut out = KeyCounts::default();
        for table in signal.tables() {
            for map in attribute_maps(signal) {
                let mut st = Statement::default();
                let cond = time_cond(table.time_column(), range, &mut st);
                let limit = st.bind("UInt64", sample_rows);
                st.sql = format!(
                    "SELECT arrayJoin(mapKeys(m)) AS k, count() AS n FROM (SELECT {} AS m FROM {} WHERE {cond} LIMIT {limit}) GROUP BY k FORMAT JSONEachRow",
                    ident(map),
                    self.table(*table)
                );
                for r in self.rows(&st).await? {
                    if let (Some(key), Some(n)) = (as_text(&r["k"]), as_f64(&r["n"])) {
                        out.add(map, key, n as u64);
                    }
                }
            }
        }
        Ok(out.into_sorted())
    }

    async fn trace(&self, trace_id: &str, limit: usize) -> Result<Vec<Row>, QueryError> {
        let mut st = Statement::default();
        let id = st.bind("String", trace_id.to_lowercase());
        let limit = st.bind("UInt64", limit);
        st.sql = format!(
            "SELECT * FROM {} WHERE `TraceId` = {id} ORDER BY {} LIMIT {limit} FORMAT JSONEachRow",
            self.table(Table::Traces),
            order_by(
                Table::Traces,
                Sort {
                    column: "Timestamp",
                    descending: false
                }
            ),
        );
        self.rows(&st).await
    }

    async fn metric_points(&self, q: &MetricQuery) -> Result<Vec<Row>, QueryError> {
        let mut per_table = Vec::new();
        for table in Table::METRICS {
            let mut st = Statement::default();
            let name = st.bind("String", &q.name);
            let cond = where_clause(table, &q.filter, q.range, &mut st);
            let limit = st.bind("UInt64", q.limit);
            st.sql = format!(
                "SELECT * FROM {} WHERE `MetricName` = {name} AND {cond} ORDER BY `TimeUnix` ASC LIMIT {limit} FORMAT JSONEachRow",
                self.table(table)
            );
            let kind = table.metric_type().expect("metric table");
            let mut rows = self.rows(&st).await?;
            floats_as_floats(table, &mut rows);
            per_table.push((kind, rows));
        }
        Ok(merge_metric_points(per_table, q.limit))
    }

    async fn sql(&self, q: &SqlQuery) -> Result<SqlResult, QueryError> {
        // The signal tables show only the range (additional_table_filters,
        // numbers generated here); read-only is the query user's profile,
        // and the statement is also checked to be one SELECT.
        otelhouse_storage::reads::check_select_only(
            &q.sql,
            &ClickHouseDialect {},
            Some(self.client.database()),
        )?;
        let mut filters = Vec::new();
        for t in Table::ALL {
            let col = t.time_column();
            let mut parts = Vec::new();
            if let Some(from) = q.range.from {
                parts.push(format!("`{col}` >= fromUnixTimestamp64Nano({from})"));
            }
            if let Some(to) = q.range.to {
                parts.push(format!("`{col}` <= fromUnixTimestamp64Nano({to})"));
            }
            if !parts.is_empty() {
                let cond = parts.join(" AND ").replace('\'', "\\'");
                filters.push(format!(
                    "'{}.{}': '{cond}'",
                    self.client.database(),
                    t.name()
                ));
            }
        }
        let mut settings = self.settings();
        // 1, not 2: a query user whose profile has readonly = 1 may not
        // change it, and an unchanged value is not checked.
        settings.push(("readonly", "1".into()));
        settings.push(("max_result_rows", (q.max_rows + 1).to_string()));
        settings.push(("result_overflow_mode", "break".into()));
        if !filters.is_empty() {
            settings.push((
                "additional_table_filters",
                format!("{{{}}}", filters.join(", ")),
            ));
        }
        let st = Statement {
            sql: format!(
                "{}\nFORMAT JSONCompactEachRowWithNames",
                q.sql.trim().trim_end_matches(';')
            ),
            params: Vec::new(),
        };
        let body = self
            .client
            .query(&st, &settings)
            .await
            .map_err(|e| self.error(e))?;
        // Names first (in SELECT order), then one array per row.
        let mut lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        let unreadable = |e: serde_json::Error| {
            QueryError::Internal(format!("ClickHouse answered unreadable JSON: {e}"))
        };
        let columns: Vec<String> = match lines.next() {
            Some(l) => serde_json::from_slice(l).map_err(unreadable)?,
            None => Vec::new(),
        };
        let mut rows = lines
            .map(|l| {
                let values: Vec<Value> = serde_json::from_slice(l).map_err(unreadable)?;
                Ok(columns.iter().cloned().zip(values).collect::<Row>())
            })
            .collect::<Result<Vec<Row>, QueryError>>()?;
        let truncated = rows.len() > q.max_rows;
        rows.truncate(q.max_rows);
        Ok(SqlResult {
            columns,
            rows,
            truncated,
        })
    }

    async fn stats(&self) -> Result<Vec<TableStats>, QueryError> {
        Ok(Vec::new())
    }
}

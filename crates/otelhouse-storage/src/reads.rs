//! The embedded store's read side: each request of [`crate::query`] as a
//! DataFusion plan over the parts and in-memory tail of one table.

use std::ops::ControlFlow;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::functions::math::expr_fn::floor;
use datafusion::functions::string::expr_fn::concat;
use datafusion::functions_aggregate::expr_fn::{
    array_agg, avg, count, count_distinct, max, min, sum,
};
use datafusion::functions_nested::expr_fn::{
    array_element, array_to_string, cardinality, map_keys, map_values,
};
use datafusion::logical_expr::{ExprFunctionExt, SortExpr, cast as cast_expr, when};
use datafusion::prelude::{DataFrame, Expr, ident, in_list, lit};
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    Query as SqlAst, Statement, Visit, Visitor, visit_relations,
};
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect};
use otelhouse_schema::{Signal, Table};
use otelhouse_search::{Field, Query};

use crate::embedded::{EmbeddedStore, time_filter, ts_lit};
use crate::query::{
    AggFunc, AggregateQuery, AggregateRow, AttributeKey, Cursor, KeyCounts, MetricQuery,
    QueryError, SearchQuery, SortValue, SqlQuery, SqlResult, merge_metric_points,
};
use crate::rows::{Row, to_rows};
use crate::search::{filter, number, text};
use crate::{SearchPage, Storage, TableStats};

/// The table a search or aggregate reads.
pub fn table_of(signal: Signal) -> Result<Table, QueryError> {
    match signal {
        Signal::Logs => Ok(Table::Logs),
        Signal::Traces => Ok(Table::Traces),
        Signal::Metrics => Err(QueryError::BadRequest(
            "this covers logs and traces; use /api/v1/metrics for metrics".into(),
        )),
    }
}

/// The attribute maps of a signal's tables, in lookup order.
pub fn attribute_maps(signal: Signal) -> &'static [&'static str] {
    match signal {
        Signal::Logs => &["LogAttributes", "ResourceAttributes", "ScopeAttributes"],
        Signal::Traces => &["SpanAttributes", "ResourceAttributes"],
        Signal::Metrics => &["Attributes", "ResourceAttributes", "ScopeAttributes"],
    }
}

/// One key of a search's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderKey {
    Column(&'static str),
    /// A map as text: its keys joined by U+001F, U+001E, its values joined
    /// by U+001F (in stored order, which both stores keep).
    MapText(&'static str),
}

/// The full order of a search: the chosen column, then the tie-break that
/// every backend uses (see [`crate::query::Sort`]): every column that can
/// tell two records apart, the attribute maps last, so that only identical
/// records tie (and those are interchangeable on a page boundary).
pub fn order_keys(table: Table, sort: crate::query::Sort) -> Vec<(OrderKey, bool)> {
    use OrderKey::{Column, MapText};
    let tie_break: &[(OrderKey, bool)] = if table == Table::Traces {
        &[
            (Column("Timestamp"), true),
            (Column("ServiceName"), false),
            (Column("SpanName"), false),
            (Column("TraceId"), false),
            (Column("SpanId"), false),
            (Column("ParentSpanId"), false),
            (Column("Duration"), false),
            (Column("StatusCode"), false),
            (Column("SpanKind"), false),
            (Column("TraceState"), false),
            (Column("StatusMessage"), false),
            (Column("ScopeName"), false),
            (Column("ScopeVersion"), false),
            (MapText("SpanAttributes"), false),
            (MapText("ResourceAttributes"), false),
        ]
    } else {
        &[
            (Column("Timestamp"), true),
            (Column("ServiceName"), false),
            (Column("Body"), false),
            (Column("TraceId"), false),
            (Column("SpanId"), false),
            (Column("SeverityNumber"), false),
            (Column("SeverityText"), false),
            (Column("EventName"), false),
            (Column("TraceFlags"), false),
            (Column("ScopeName"), false),
            (Column("ScopeVersion"), false),
            (Column("ScopeSchemaUrl"), false),
            (Column("ResourceSchemaUrl"), false),
            (MapText("LogAttributes"), false),
            (MapText("ResourceAttributes"), false),
            (MapText("ScopeAttributes"), false),
        ]
    };
    let mut order = vec![(Column(sort.column), sort.descending)];
    order.extend(
        tie_break
            .iter()
            .filter(|(k, _)| *k != Column(sort.column))
            .copied(),
    );
    order
}

fn sort_exprs(order: &[(OrderKey, bool)]) -> Vec<SortExpr> {
    order
        .iter()
        .map(|(k, desc)| {
            let e = match k {
                OrderKey::Column(c) => ident(*c),
                OrderKey::MapText(m) => concat(vec![
                    array_to_string(map_keys(ident(*m)), lit("\u{1f}")),
                    lit("\u{1e}"),
                    array_to_string(map_values(ident(*m)), lit("\u{1f}")),
                ]),
            };
            e.sort(!desc, false)
        })
        .collect()
}

/// The literal of a cursor value for a column of type `dt`.
fn value_lit(v: &SortValue, dt: &DataType) -> Expr {
    match (v, dt) {
        (SortValue::Int(n), DataType::Timestamp(..)) => ts_lit(*n),
        (SortValue::Int(n), _) => cast_expr(lit(*n), dt.clone()),
        (SortValue::Float(f), _) => cast_expr(lit(*f), dt.clone()),
        (SortValue::Text(s), _) => lit(s.as_str()),
    }
}

/// Row `i` of the sort column as a cursor value.
fn sort_value(array: &dyn Array, i: usize) -> Option<SortValue> {
    if array.is_null(i) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Utf8 => SortValue::Text(array.as_string::<i32>().value(i).to_owned()),
        DataType::Float32 | DataType::Float64 => {
            let a = cast(&array.slice(i, 1), &DataType::Float64).ok()?;
            SortValue::Float(a.as_primitive::<Float64Type>().value(0))
        }
        DataType::Timestamp(..) => {
            let a = cast(&array.slice(i, 1), &DataType::Int64).ok()?;
            SortValue::Int(a.as_primitive::<Int64Type>().value(0))
        }
        _ => {
            let a = cast(&array.slice(i, 1), &DataType::Int64).ok()?;
            SortValue::Int(a.as_primitive::<Int64Type>().value(0))
        }
    })
}

const SORT_KEY: &str = "__sort";

/// The value of the sort column at rank `rank` (1-based) of `df` in the
/// sort's direction, nulls last; `None` when fewer than `rank` rows have a
/// value there (then every row may be on the page).
async fn rank_value(
    df: &DataFrame,
    sort: crate::query::Sort,
    rank: usize,
) -> Result<Option<ScalarValue>, QueryError> {
    if rank == 0 {
        return Ok(None);
    }
    let col = ident(sort.column);
    let batches = df
        .clone()
        .select(vec![col.clone()])?
        .sort(vec![col.sort(!sort.descending, false)])?
        .limit(rank - 1, Some(1))?
        .collect()
        .await?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let v = ScalarValue::try_from_array(b.column(0), 0)?;
    Ok((!v.is_null()).then_some(v))
}

/// Applies the query's time range and filter to a table frame.
fn filtered(df: DataFrame, q: &Query, range: crate::TimeRange) -> Result<DataFrame, QueryError> {
    let df = time_filter(df, "Timestamp", range)?;
    Ok(match q {
        Query::All => df,
        q => df.filter(filter(q))?,
    })
}

/// Each value of a numeric result column as f64.
fn floats(batch: &RecordBatch, col: usize) -> Result<Vec<Option<f64>>, QueryError> {
    let a = cast(batch.column(col), &DataType::Float64)
        .map_err(|e| QueryError::Internal(e.to_string()))?;
    let a = a.as_primitive::<Float64Type>();
    Ok((0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i)))
        .collect())
}

fn texts(batch: &RecordBatch, col: usize) -> Result<Vec<Option<String>>, QueryError> {
    let a = cast(batch.column(col), &DataType::Utf8)
        .map_err(|e| QueryError::Internal(e.to_string()))?;
    let a = a.as_string::<i32>();
    Ok((0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i).to_owned()))
        .collect())
}

fn ints(batch: &RecordBatch, col: usize) -> Result<Vec<Option<i64>>, QueryError> {
    let a = cast(batch.column(col), &DataType::Int64)
        .map_err(|e| QueryError::Internal(e.to_string()))?;
    let a = a.as_primitive::<Int64Type>();
    Ok((0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i)))
        .collect())
}

fn measure_expr(m: &crate::query::Measure) -> Result<Expr, QueryError> {
    let need = || {
        m.field
            .as_ref()
            .ok_or_else(|| QueryError::BadRequest(format!("{:?} needs a field", m.func)))
    };
    Ok(match m.func {
        AggFunc::Count => match &m.field {
            None => count(lit(1i64)),
            Some(f) => count(text(f)),
        },
        AggFunc::Sum => sum(number(need()?)),
        AggFunc::Avg => avg(number(need()?)),
        AggFunc::Min => min(number(need()?)),
        AggFunc::Max => max(number(need()?)),
        // The sorted non-null values; `quantile` interpolates after.
        AggFunc::Quantile(_) => {
            let n = number(need()?);
            array_agg(n.clone())
                .order_by(vec![n.clone().sort(true, false)])
                .filter(n.is_not_null())
                .build()?
        }
        AggFunc::CountDistinct => count_distinct(text(need()?)),
    })
}

/// The `p` quantile of `sorted` (an array), interpolated between the two
/// nearest ranks exactly as ClickHouse's `quantileExactInclusive` does, in
/// the same floating-point steps, so both stores give identical numbers:
/// h = p·(N−1) + 1, k = ⌊h⌋, x[k] + (h − k)·(x[k+1] − x[k]) (1-based).
/// (DataFusion's percentile_cont rounds the weight to 6 decimals.)
fn quantile(sorted: Expr, p: f64) -> Result<Expr, QueryError> {
    let len = cast_expr(cardinality(sorted.clone()), DataType::Float64);
    let h = lit(p) * (len.clone() - lit(1.0)) + lit(1.0);
    let k = floor(h.clone());
    let at = |i: Expr| array_element(sorted.clone(), cast_expr(i, DataType::Int64));
    let (a, b) = (at(k.clone()), at(k.clone() + lit(1.0)));
    Ok(
        when(len.clone().eq(lit(0.0)), lit(ScalarValue::Float64(None)))
            .when(k.clone().gt_eq(len.clone()), at(len))
            .otherwise(a.clone() + (h - k) * (b - a))?,
    )
}

/// Rows whose group columns may form one of `groups` (`None` = absent):
/// each key's column in the set of its top values (a hash lookup per row);
/// the caller drops combinations that are not a top group.
fn in_groups(names: &[String], groups: &[Vec<Option<String>>]) -> Expr {
    if groups.is_empty() {
        return lit(false);
    }
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut values: Vec<&str> = groups.iter().filter_map(|g| g[i].as_deref()).collect();
            values.sort_unstable();
            values.dedup();
            let list = in_list(ident(n), values.into_iter().map(lit).collect(), false);
            if groups.iter().any(|g| g[i].is_none()) {
                list.or(ident(n).is_null())
            } else {
                list
            }
        })
        .reduce(Expr::and)
        .unwrap_or(lit(true))
}

impl EmbeddedStore {
    async fn search_page(&self, q: &SearchQuery) -> Result<SearchPage, QueryError> {
        let table = table_of(q.signal)?;
        let schema = table.schema();
        let sort_type = schema
            .field_with_name(q.sort.column)
            .map_err(|_| QueryError::BadRequest(format!("cannot sort by `{}`", q.sort.column)))?
            .data_type()
            .clone();
        let ctx = self.query_context();
        let (df, _reading) = self.frame(&ctx, table, q.range).await?;
        let mut df = filtered(df, &q.filter, q.range)?;
        let mut skip = 0;
        if let Some(Cursor { value, skip: n }) = &q.after {
            let v = value_lit(value, &sort_type);
            let col = ident(q.sort.column);
            df = df.filter(if q.sort.descending {
                col.lt_eq(v)
            } else {
                col.gt_eq(v)
            })?;
            skip = *n;
        }
        // The full order's tie-break computes text from the attribute maps
        // of every row it sorts; first find the sort column's value at the
        // page's last rank, reading that column (and the filter's) only,
        // then sort in full just the rows at or before it. The same frame
        // serves both steps, so both see the same rows.
        if let Some(cut) = rank_value(&df, q.sort, skip + q.limit).await? {
            let col = ident(q.sort.column);
            df = df.filter(if q.sort.descending {
                col.gt_eq(lit(cut))
            } else {
                col.lt_eq(lit(cut))
            })?;
        }
        let df = df
            .sort(sort_exprs(&order_keys(table, q.sort)))?
            .limit(skip, Some(q.limit))?;
        let mut select: Vec<Expr> = match &q.columns {
            None => schema.fields().iter().map(|f| ident(f.name())).collect(),
            Some(cols) => cols
                .iter()
                .map(|c| match &c.field {
                    Field::Column { name, .. } => ident(*name).alias(&c.name),
                    f => text(f).alias(&c.name),
                })
                .collect(),
        };
        select.push(ident(q.sort.column).alias(SORT_KEY));
        let batches = df.select(select)?.collect().await?;
        drop(_reading);

        let mut values = Vec::new();
        for b in &batches {
            let col = b.column(b.num_columns() - 1);
            values.extend((0..b.num_rows()).map(|i| sort_value(col.as_ref(), i)));
        }
        let mut rows = to_rows(&batches);
        for r in &mut rows {
            r.remove(SORT_KEY);
        }
        let next = next_cursor(&values, q.after.as_ref(), q.limit);
        Ok(SearchPage { rows, next })
    }

    async fn aggregate_rows(&self, q: &AggregateQuery) -> Result<Vec<AggregateRow>, QueryError> {
        let table = table_of(q.signal)?;
        let ctx = self.query_context();
        let (df, _reading) = self.frame(&ctx, table, q.range).await?;
        let df = filtered(df, &q.filter, q.range)?;
        let keys: Vec<Expr> = q.group_by.iter().map(text).collect();
        let names: Vec<String> = (0..keys.len()).map(|i| format!("__g{i}")).collect();

        // Each group key is computed once per row, as a column.
        let mut df = df;
        for (k, n) in keys.iter().zip(&names) {
            df = df.with_column(n, k.clone())?;
        }
        let top_first = |df: DataFrame| -> Result<DataFrame, QueryError> {
            Ok(df
                .sort(
                    std::iter::once(ident("__n").sort(false, false))
                        .chain(names.iter().map(|n| ident(n).sort(true, true)))
                        .collect(),
                )?
                .limit(0, Some(q.series_limit))?)
        };
        let aggs = |with_count: bool| -> Result<Vec<Expr>, QueryError> {
            let mut out = q
                .measures
                .iter()
                .enumerate()
                .map(|(i, m)| Ok(measure_expr(m)?.alias(format!("__m{i}"))))
                .collect::<Result<Vec<_>, QueryError>>()?;
            if with_count {
                out.push(count(lit(1i64)).alias("__n"));
            }
            Ok(out)
        };
        // The series with the most rows, when grouping: with one value per
        // series that is the answer itself (one pass); per bucket, the top
        // series first, then only their rows.
        let mut top: Option<Vec<Vec<Option<String>>>> = None;
        if !keys.is_empty() && q.bucket.is_some() {
            let batches = top_first(df.clone().aggregate(
                names.iter().map(ident).collect(),
                vec![count(lit(1i64)).alias("__n")],
            )?)?
            .collect()
            .await?;
            let mut groups = Vec::new();
            for b in &batches {
                let cols = (0..keys.len())
                    .map(|i| texts(b, i))
                    .collect::<Result<Vec<_>, _>>()?;
                for r in 0..b.num_rows() {
                    groups.push(cols.iter().map(|c| c[r].clone()).collect::<Vec<_>>());
                }
            }
            df = df.filter(in_groups(&names, &groups))?;
            top = Some(groups);
        }

        let mut group_exprs = Vec::new();
        if let Some(width) = q.bucket {
            let nanos = cast_expr(ident("Timestamp"), DataType::Int64);
            group_exprs.push(((nanos / lit(width)) * lit(width)).alias("__bucket"));
        }
        group_exprs.extend(names.iter().map(ident));
        let one_pass = !keys.is_empty() && q.bucket.is_none();
        let mut df = df.aggregate(group_exprs, aggs(one_pass)?)?;
        if one_pass {
            df = top_first(df)?;
        }
        if q.measures
            .iter()
            .any(|m| matches!(m.func, AggFunc::Quantile(_)))
        {
            let mut cols: Vec<Expr> = Vec::new();
            if q.bucket.is_some() {
                cols.push(ident("__bucket"));
            }
            cols.extend(names.iter().map(ident));
            for (i, m) in q.measures.iter().enumerate() {
                let name = format!("__m{i}");
                cols.push(match m.func {
                    AggFunc::Quantile(p) => quantile(ident(&name), p)?.alias(name),
                    _ => ident(name),
                });
            }
            df = df.select(cols)?;
        }
        let mut order: Vec<SortExpr> = Vec::new();
        if q.bucket.is_some() {
            order.push(ident("__bucket").sort(true, false));
        }
        order.extend(names.iter().map(|n| ident(n).sort(true, true)));
        if !order.is_empty() {
            df = df.sort(order)?;
        }
        let batches = df.collect().await?;
        drop(_reading);

        let mut out = Vec::new();
        let offset = usize::from(q.bucket.is_some());
        for b in &batches {
            let buckets = if q.bucket.is_some() {
                ints(b, 0)?
            } else {
                vec![None; b.num_rows()]
            };
            let groups = (0..keys.len())
                .map(|i| texts(b, offset + i))
                .collect::<Result<Vec<_>, _>>()?;
            let values = (0..q.measures.len())
                .map(|i| floats(b, offset + keys.len() + i))
                .collect::<Result<Vec<_>, _>>()?;
            for r in 0..b.num_rows() {
                let group: Vec<Option<String>> = groups.iter().map(|g| g[r].clone()).collect();
                // Per-key IN lists admit combinations of top values that
                // are not themselves top series.
                if top.as_ref().is_some_and(|t| !t.contains(&group)) {
                    continue;
                }
                out.push(AggregateRow {
                    bucket: buckets[r],
                    group,
                    values: values.iter().map(|v| v[r]).collect(),
                });
            }
        }
        Ok(out)
    }

    async fn keys(
        &self,
        signal: Signal,
        range: crate::TimeRange,
        sample_rows: usize,
    ) -> Result<Vec<AttributeKey>, QueryError> {
        let mut out = KeyCounts::default();
        for table in signal.tables() {
            let ctx = self.query_context();
            let (df, _reading) = self.frame(&ctx, *table, range).await?;
            let df = time_filter(df, table.time_column(), range)?.limit(0, Some(sample_rows))?;
            for map in attribute_maps(signal) {
                let batches = df
                    .clone()
                    .select(vec![map_keys(ident(*map)).alias("k")])?
                    .unnest_columns(&["k"])?
                    .aggregate(vec![ident("k")], vec![count(lit(1i64)).alias("n")])?
                    .collect()
                    .await?;
                for b in &batches {
                    let (k, n) = (texts(b, 0)?, ints(b, 1)?);
                    for (k, n) in k.into_iter().zip(n) {
                        if let (Some(key), Some(n)) = (k, n) {
                            out.add(map, key, n as u64);
                        }
                    }
                }
            }
        }
        Ok(out.into_sorted())
    }

    async fn user_sql(&self, q: &SqlQuery) -> Result<SqlResult, QueryError> {
        check_select_only(&q.sql, &GenericDialect {}, None)?;
        let ctx = self.query_context();
        // The session knows only the signal tables, each already cut to the
        // time range: that is all a statement can see.
        let mut reading = Vec::new();
        for table in Table::ALL {
            let (df, parts) = self.frame(&ctx, table, q.range).await?;
            reading.extend(parts);
            let df = time_filter(df, table.time_column(), q.range)?;
            ctx.register_table(table.name(), df.into_view())?;
        }
        let df = ctx
            .sql_with_options(&q.sql, crate::sql::read_only())
            .await
            .map_err(|e| QueryError::BadRequest(e.to_string()))?;
        let columns = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let batches = df.limit(0, Some(q.max_rows + 1))?.collect().await?;
        drop(reading);
        let mut rows = to_rows(&batches);
        let truncated = rows.len() > q.max_rows;
        rows.truncate(q.max_rows);
        Ok(SqlResult {
            columns,
            rows,
            truncated,
        })
    }
}

/// The cursor after a page whose sort values are `values`: the last value,
/// and how many rows with it have now been returned in all.
pub fn next_cursor(
    values: &[Option<SortValue>],
    after: Option<&Cursor>,
    limit: usize,
) -> Option<Cursor> {
    if values.len() < limit {
        return None;
    }
    let last = values.last()?.clone()?;
    let mut skip = values
        .iter()
        .rev()
        .take_while(|v| v.as_ref() == Some(&last))
        .count();
    if let Some(prev) = after
        && prev.value == last
        && skip == values.len()
    {
        skip += prev.skip;
    }
    Some(Cursor { value: last, skip })
}

/// One statement, and a query (SELECT / WITH … SELECT / VALUES): no DDL,
/// DML, SET, COPY or EXPLAIN ANALYZE. Checked on the parsed statement,
/// not the text.
/// `dialect` is the store's SQL dialect; `database`, when given, may
/// qualify the table names.
pub fn check_select_only(
    sql: &str,
    dialect: &dyn Dialect,
    database: Option<&str>,
) -> Result<(), QueryError> {
    let bad = |m: String| QueryError::BadRequest(m);
    let mut statements =
        DFParser::parse_sql_with_dialect(sql, dialect).map_err(|e| bad(format!("SQL: {e}")))?;
    if statements.len() != 1 {
        return Err(bad(format!(
            "SQL: exactly one statement is accepted, got {}",
            statements.len()
        )));
    }
    let Some(DfStatement::Statement(statement)) = statements.pop_front() else {
        return Err(bad("SQL: only SELECT queries are accepted".into()));
    };
    let Statement::Query(query) = *statement else {
        return Err(bad("SQL: only SELECT queries are accepted".into()));
    };
    // No clause may change how the server runs the query (ClickHouse's
    // SETTINGS could lift the time range and the limits) or its output.
    struct Clauses;
    impl Visitor for Clauses {
        type Break = &'static str;
        fn pre_visit_query(&mut self, q: &SqlAst) -> ControlFlow<&'static str> {
            if q.settings.is_some() {
                return ControlFlow::Break("SETTINGS");
            }
            if q.format_clause.is_some() {
                return ControlFlow::Break("FORMAT");
            }
            if !q.locks.is_empty() {
                return ControlFlow::Break("FOR UPDATE");
            }
            ControlFlow::Continue(())
        }
    }
    if let ControlFlow::Break(clause) = query.visit(&mut Clauses) {
        return Err(bad(format!(
            "SQL: {clause} clauses are not accepted; limits and output format are the server's"
        )));
    }
    if let datafusion::sql::sqlparser::ast::SetExpr::Select(select) = query.body.as_ref()
        && select.into.is_some()
    {
        return Err(bad("SQL: SELECT INTO is not accepted".into()));
    }
    // Tables other than the signal tables (and the query's own CTEs) do
    // not exist in the session either; naming them here gives a clearer
    // error than "table not found".
    let ctes: Vec<String> = query
        .with
        .as_ref()
        .map(|w| {
            w.cte_tables
                .iter()
                .map(|c| c.alias.name.value.clone())
                .collect()
        })
        .unwrap_or_default();
    let unknown = visit_relations(&query, |name| {
        let n = name.to_string().replace(['`', '"'], "");
        let bare = match database {
            Some(db) => n
                .strip_prefix(db)
                .and_then(|r| r.strip_prefix('.'))
                .unwrap_or(&n),
            None => &n,
        };
        if Table::from_name(bare).is_none() && !ctes.contains(&n) {
            ControlFlow::Break(n)
        } else {
            ControlFlow::Continue(())
        }
    });
    if let ControlFlow::Break(n) = unknown {
        let tables: Vec<_> = Table::ALL.iter().map(|t| t.name()).collect();
        return Err(bad(format!(
            "SQL: unknown table `{n}`; the tables are {}",
            tables.join(", ")
        )));
    }
    Ok(())
}

#[async_trait]
impl Storage for EmbeddedStore {
    async fn stats(&self) -> Result<Vec<TableStats>, QueryError> {
        Ok(EmbeddedStore::stats(self))
    }

    async fn search(&self, q: &SearchQuery) -> Result<SearchPage, QueryError> {
        self.run(self.search_page(q)).await
    }

    async fn aggregate(&self, q: &AggregateQuery) -> Result<Vec<AggregateRow>, QueryError> {
        if q.group_by.len() > 3 {
            return Err(QueryError::BadRequest("at most 3 group-by fields".into()));
        }
        self.run(self.aggregate_rows(q)).await
    }

    async fn attribute_keys(
        &self,
        signal: Signal,
        range: crate::TimeRange,
        sample_rows: usize,
    ) -> Result<Vec<AttributeKey>, QueryError> {
        self.run(self.keys(signal, range, sample_rows)).await
    }

    async fn trace(&self, trace_id: &str, limit: usize) -> Result<Vec<Row>, QueryError> {
        self.run(async {
            let ctx = self.query_context();
            let (df, _reading) = self.frame(&ctx, Table::Traces, Default::default()).await?;
            let df = df.filter(ident("TraceId").eq(lit(trace_id.to_lowercase())))?;
            let oldest_first = crate::query::Sort {
                column: "Timestamp",
                descending: false,
            };
            let df = df
                .sort(sort_exprs(&order_keys(Table::Traces, oldest_first)))?
                .limit(0, Some(limit))?;
            let rows = df.collect().await?;
            drop(_reading);
            Ok(to_rows(&rows))
        })
        .await
    }

    async fn metric_points(&self, q: &MetricQuery) -> Result<Vec<Row>, QueryError> {
        let mut per_table = Vec::new();
        for table in Table::METRICS {
            let batches = self
                .run(async {
                    let ctx = self.query_context();
                    let (df, _reading) = self.frame(&ctx, table, q.range).await?;
                    let mut df = df.filter(ident("MetricName").eq(lit(q.name.as_str())))?;
                    if q.filter != Query::All {
                        df = df.filter(filter(&q.filter))?;
                    }
                    let df = time_filter(df, "TimeUnix", q.range)?;
                    let df = df
                        .sort(vec![ident("TimeUnix").sort(true, true)])?
                        .limit(0, Some(q.limit))?;
                    let rows = df.collect().await?;
                    drop(_reading);
                    Ok(rows)
                })
                .await?;
            let kind = table.metric_type().expect("metric table");
            per_table.push((kind, to_rows(&batches)));
        }
        Ok(merge_metric_points(per_table, q.limit))
    }

    async fn sql(&self, q: &SqlQuery) -> Result<SqlResult, QueryError> {
        self.run(self.user_sql(q)).await
    }
}

#[cfg(test)]
mod tests {
    use otelhouse_otlp::{Encoding, OtlpRequest};
    use otelhouse_search::{Catalog, parse};
    use otelhouse_wal::Apply;
    use serde_json::json;

    use super::*;
    use crate::query::{Measure, Selected, Sort};
    use crate::{StoreOptions, TimeRange};

    const T0: i64 = 1_700_000_000_000_000_000;
    const MIN: i64 = 60_000_000_000;

    fn attrs(kv: &[(&str, &str)]) -> serde_json::Value {
        kv.iter()
            .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
            .collect()
    }

    /// (service, time, body, attributes).
    type LogSpec<'a> = (&'a str, i64, &'a str, &'a [(&'a str, &'a str)]);

    /// One OTLP/JSON logs request.
    fn logs(records: &[LogSpec]) -> OtlpRequest {
        let resource_logs: Vec<_> = records
            .iter()
            .map(|(service, t, body, a)| {
                json!({
                    "resource": {"attributes": attrs(&[("service.name", service)])},
                    "scopeLogs": [{"logRecords": [{
                        "timeUnixNano": t.to_string(),
                        "body": {"stringValue": body},
                        "attributes": attrs(a),
                    }]}]
                })
            })
            .collect();
        let body = json!({ "resourceLogs": resource_logs }).to_string();
        OtlpRequest::decode(Signal::Logs, Encoding::Json, body.as_bytes()).unwrap()
    }

    /// One OTLP/JSON traces request: (service, name, start, duration, error?).
    fn spans(records: &[(&str, &str, i64, i64, bool)]) -> OtlpRequest {
        let resource_spans: Vec<_> = records
            .iter()
            .enumerate()
            .map(|(i, (service, name, t, d, error))| {
                json!({
                    "resource": {"attributes": attrs(&[("service.name", service)])},
                    "scopeSpans": [{"spans": [{
                        "traceId": format!("{:032x}", i + 1),
                        "spanId": format!("{:016x}", i + 1),
                        "name": name,
                        "kind": 2,
                        "startTimeUnixNano": t.to_string(),
                        "endTimeUnixNano": (t + d).to_string(),
                        "status": {"code": if *error { 2 } else { 1 }},
                    }]}]
                })
            })
            .collect();
        let body = json!({ "resourceSpans": resource_spans }).to_string();
        OtlpRequest::decode(Signal::Traces, Encoding::Json, body.as_bytes()).unwrap()
    }

    fn store_with(requests: &[OtlpRequest]) -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        let mut applier = store.applier();
        for (i, r) in requests.iter().enumerate() {
            applier.apply(i as u64 + 1, r.to_batches());
            // Half the rows in parts, half in memory: reads see both.
            if i % 2 == 0 {
                store.flush(true).unwrap();
            }
        }
        (dir, store)
    }

    fn q(signal: Signal, text: &str) -> Query {
        parse(text, &Catalog::new(signal, ["http.route".to_string()])).unwrap()
    }

    fn bodies(rows: &[crate::Row]) -> Vec<String> {
        rows.iter()
            .map(|r| r["Body"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Overwrites the Parquet file of the second flush's part of `table`.
    fn damage_second_part(dir: &std::path::Path, table: &str) {
        let second = std::fs::read_dir(dir.join("parts").join(table))
            .unwrap()
            .map(|p| p.unwrap().path().join("000000000002.parquet"))
            .find(|p| p.exists())
            .expect("the second flush's part");
        std::fs::write(&second, b"not parquet").unwrap();
    }

    /// A token search reads only the blocks the token index allows: a part
    /// whose index rules the token out is never opened (here it is made
    /// unreadable, and the search still answers), and the rows found are
    /// exactly those a full scan finds, in parts and in memory alike.
    #[tokio::test]
    async fn token_searches_read_only_what_the_index_allows() {
        let body = |i: usize| match i {
            7 | 20_000 | 41_000 => format!("request {i} failed: QZXRARE7 in shard-{}", i % 9),
            _ => format!("request {i} served in {}ms by shard-{}", i % 97, i % 9),
        };
        let bodies_of =
            |range: std::ops::Range<usize>| -> Vec<String> { range.map(body).collect() };
        let chunk = |texts: &[String]| {
            let specs: Vec<LogSpec> = texts
                .iter()
                .enumerate()
                .map(|(i, b)| ("svc", T0 + i as i64, b.as_str(), &[][..]))
                .collect();
            logs(&specs)
        };
        // Parts: rows 0..25k (tokens at 7, 20k) and 25k..40k (none);
        // memory: 40k..45k (token at 41k).
        let (a, b, c) = (
            bodies_of(0..25_000),
            bodies_of(25_000..40_000),
            bodies_of(40_000..45_000),
        );
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        let mut applier = store.applier();
        applier.apply(1, chunk(&a).to_batches());
        store.flush(true).unwrap();
        applier.apply(2, chunk(&b).to_batches());
        store.flush(true).unwrap();
        applier.apply(3, chunk(&c).to_batches());

        let search = |text: &str| {
            let q = SearchQuery::newest(
                Signal::Logs,
                q(Signal::Logs, text),
                TimeRange::default(),
                10_000,
            );
            let store = store.clone();
            async move { store.search(&q).await.map(|p| p.rows.len()) }
        };
        assert_eq!(search("qzxrare7").await.unwrap(), 3);
        assert_eq!(search("qzxrare7 failed").await.unwrap(), 3);
        assert_eq!(search("qzxrare7 OR nosuchtoken").await.unwrap(), 3);
        assert_eq!(search(r#""failed: qzxrare7 in""#).await.unwrap(), 3);
        assert_eq!(
            search("body:\"request 20000 failed: QZXRARE7 in shard-2\"")
                .await
                .unwrap(),
            1
        );
        assert_eq!(search("nosuchtoken").await.unwrap(), 0);
        // A search the index cannot narrow finds the same rows by scanning.
        assert_eq!(search("NOT NOT qzxrare7").await.unwrap(), 3);

        // Make the second part unreadable: searches its index rules out
        // still answer, a search that must read it fails.
        damage_second_part(dir.path(), "otel_logs");
        assert_eq!(search("qzxrare7").await.unwrap(), 3);
        assert_eq!(search("qzxrare7 shard").await.unwrap(), 3);
        assert!(search("served").await.is_err(), "the damaged part is read");
    }

    /// A trace lookup opens only the parts whose token index may hold the
    /// trace id: a part that cannot is never read (here it is made
    /// unreadable, and the lookup still answers), one that may is.
    #[tokio::test]
    async fn trace_lookups_read_only_parts_that_may_hold_the_trace() {
        let many: Vec<(&str, &str, i64, i64, bool)> = (0..5_000)
            .map(|i| ("svc", "GET /x", T0 + i, 10, false))
            .collect();
        // Trace ids 1..=5000 in the first part, 1..=100 in the second.
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), StoreOptions::default()).unwrap();
        let mut applier = store.applier();
        applier.apply(1, spans(&many).to_batches());
        store.flush(true).unwrap();
        applier.apply(2, spans(&many[..100]).to_batches());
        store.flush(true).unwrap();
        let id = |i: usize| format!("{i:032X}");
        assert_eq!(store.trace(&id(4_000), 10).await.unwrap().len(), 1);
        assert_eq!(store.trace(&id(50), 10).await.unwrap().len(), 2);
        assert!(store.trace(&id(6_000), 10).await.unwrap().is_empty());

        damage_second_part(dir.path(), "otel_traces");
        let found = store.trace(&id(4_000), 10).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["TraceId"], id(4_000).to_lowercase());
        assert!(
            store.trace(&id(50), 10).await.is_err(),
            "the damaged part is read"
        );
    }

    /// Every page after the first starts exactly where the previous one
    /// ended, even when many rows share a timestamp, and rows that arrive
    /// meanwhile with newer times do not shift the pages.
    #[tokio::test]
    async fn pages_neither_overlap_nor_skip_rows_while_data_arrives() {
        let mut records = Vec::new();
        let names: Vec<String> = (0..30).map(|i| format!("row {i:02}")).collect();
        for (i, n) in names.iter().enumerate() {
            // Five timestamps, six rows each: ties at every page boundary.
            records.push(("svc", T0 + (i as i64 % 5) * MIN, n.as_str(), &[][..]));
        }
        let (chunk_a, chunk_b) = records.split_at(15);
        let (_dir, store) = store_with(&[logs(chunk_a), logs(chunk_b)]);
        let all = SearchQuery::newest(Signal::Logs, Query::All, TimeRange::default(), 100);
        let expected = bodies(&store.search(&all).await.unwrap().rows);
        assert_eq!(expected.len(), 30);

        let mut seen = Vec::new();
        let mut page_q = SearchQuery::newest(Signal::Logs, Query::All, TimeRange::default(), 4);
        let mut pages = 0;
        loop {
            let page = store.search(&page_q).await.unwrap();
            seen.extend(bodies(&page.rows));
            pages += 1;
            if pages == 2 {
                // Newer rows arrive mid-way; they belong before page 1.
                store.applier().apply(
                    10,
                    logs(&[("svc", T0 + 10 * MIN, "late but new", &[])]).to_batches(),
                );
            }
            match page.next {
                Some(c) => page_q.after = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, expected, "pages in order, each row once");
        assert_eq!(pages, 8);

        // Ascending, and by another column (spans by Duration).
        let mut asc = SearchQuery::newest(Signal::Logs, Query::All, TimeRange::default(), 7);
        asc.sort.descending = false;
        let mut seen_asc = Vec::new();
        loop {
            let page = store.search(&asc).await.unwrap();
            seen_asc.extend(bodies(&page.rows));
            let Some(c) = page.next else { break };
            asc.after = Some(c);
        }
        assert_eq!(seen_asc.len(), 31);
        assert_eq!(seen_asc[0], "row 00");
        assert_eq!(seen_asc[30], "late but new");
    }

    #[tokio::test]
    async fn a_search_returns_the_chosen_columns_and_attributes() {
        let (_dir, store) = store_with(&[logs(&[
            ("api", T0, "GET /users done", &[("http.route", "/users")]),
            (
                "web",
                T0 + 1,
                "GET /login done",
                &[("http.route", "/login")],
            ),
        ])]);
        let catalog = Catalog::new(Signal::Logs, ["http.route".to_string()]);
        let mut s = SearchQuery::newest(
            Signal::Logs,
            q(Signal::Logs, "http.route:users"),
            TimeRange::default(),
            10,
        );
        s.columns = Some(vec![
            Selected {
                name: "ServiceName".into(),
                field: catalog.resolve("service").unwrap(),
            },
            Selected {
                name: "http.route".into(),
                field: catalog.resolve("http.route").unwrap(),
            },
        ]);
        let page = store.search(&s).await.unwrap();
        assert_eq!(
            serde_json::Value::Array(page.rows.into_iter().map(Into::into).collect()),
            json!([{"ServiceName": "api", "http.route": "/users"}])
        );
        assert_eq!(page.next, None, "a short page is the last");
    }

    #[tokio::test]
    async fn aggregates_per_bucket_and_group_keep_the_busiest_series() {
        let mut records = Vec::new();
        // api: 3 spans in minute 0, 1 in minute 1; web: 2; db: 1 (dropped by
        // the series limit of 2).
        for (service, minute, d, error) in [
            ("api", 0, 10, false),
            ("api", 0, 20, true),
            ("api", 0, 30, false),
            ("api", 1, 40, false),
            ("web", 1, 5, false),
            ("web", 1, 7, true),
            ("db", 2, 1, false),
        ] {
            records.push((service, "GET", T0 / MIN * MIN + minute * MIN + 1, d, error));
        }
        let (_dir, store) = store_with(&[spans(&records[..3]), spans(&records[3..])]);
        let catalog = Catalog::new(Signal::Traces, []);
        let duration = catalog.resolve("duration").unwrap();
        let a = AggregateQuery {
            signal: Signal::Traces,
            filter: Query::All,
            range: TimeRange::default(),
            measures: vec![
                Measure {
                    func: AggFunc::Count,
                    field: None,
                },
                Measure {
                    func: AggFunc::Quantile(0.5),
                    field: Some(duration.clone()),
                },
                Measure {
                    func: AggFunc::Max,
                    field: Some(duration.clone()),
                },
            ],
            bucket: Some(MIN),
            group_by: vec![catalog.resolve("service").unwrap()],
            series_limit: 2,
        };
        let rows = store.aggregate(&a).await.unwrap();
        let m0 = T0 / MIN * MIN;
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.bucket.unwrap() - m0,
                    r.group[0].clone().unwrap(),
                    r.values.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "api".into(), vec![Some(3.0), Some(20.0), Some(30.0)]),
                (MIN, "api".into(), vec![Some(1.0), Some(40.0), Some(40.0)]),
                (MIN, "web".into(), vec![Some(2.0), Some(6.0), Some(7.0)]),
            ]
        );

        // No buckets: one row per group; a filter applies first.
        let errors = AggregateQuery {
            bucket: None,
            filter: q(Signal::Traces, "status:Error"),
            measures: vec![Measure {
                func: AggFunc::Count,
                field: None,
            }],
            ..a.clone()
        };
        let rows = store.aggregate(&errors).await.unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.group[0].clone().unwrap(), r.values[0]))
            .collect();
        assert_eq!(
            got,
            vec![("api".into(), Some(1.0)), ("web".into(), Some(1.0))]
        );
    }

    #[tokio::test]
    async fn attribute_keys_are_counted_per_map() {
        let (_dir, store) = store_with(&[logs(&[
            ("api", T0, "a", &[("http.route", "/a"), ("user", "u1")]),
            ("api", T0, "b", &[("http.route", "/b")]),
        ])]);
        let keys = store
            .attribute_keys(Signal::Logs, TimeRange::default(), 1000)
            .await
            .unwrap();
        let got: Vec<_> = keys
            .iter()
            .map(|k| (k.map, k.key.as_str(), k.count))
            .collect();
        assert_eq!(
            got,
            vec![
                ("LogAttributes", "http.route", 2),
                ("ResourceAttributes", "service.name", 2),
                ("LogAttributes", "user", 1),
            ]
        );
    }

    #[tokio::test]
    async fn sql_mode_sees_only_the_signal_tables_cut_to_the_range() {
        let (_dir, store) = store_with(&[logs(&[
            ("api", T0, "old", &[]),
            ("api", T0 + MIN, "new", &[]),
            ("web", T0 + MIN, "new too", &[]),
        ])]);
        let sql = |text: &str, from: Option<i64>, max_rows: usize| SqlQuery {
            sql: text.into(),
            range: TimeRange { from, to: None },
            max_rows,
        };
        let r = store
            .sql(&sql(
                "SELECT ServiceName, count(*) AS n FROM otel_logs GROUP BY ServiceName ORDER BY ServiceName",
                Some(T0 + 1),
                100,
            ))
            .await
            .unwrap();
        assert_eq!(r.columns, vec!["ServiceName", "n"]);
        assert_eq!(
            serde_json::to_value(&r.rows).unwrap(),
            json!([{"ServiceName": "api", "n": 1}, {"ServiceName": "web", "n": 1}])
        );
        let r = store
            .sql(&sql("SELECT Body FROM otel_logs", None, 2))
            .await
            .unwrap();
        assert_eq!((r.rows.len(), r.truncated), (2, true));
        let r = store
            .sql(&sql(
                "WITH x AS (SELECT Body FROM otel_logs) SELECT count(*) AS n FROM x",
                None,
                2,
            ))
            .await
            .unwrap();
        assert_eq!(serde_json::to_value(&r.rows).unwrap(), json!([{"n": 3}]));

        for (bad, why) in [
            ("DROP TABLE otel_logs", "only SELECT"),
            (
                "INSERT INTO otel_logs SELECT * FROM otel_logs",
                "only SELECT",
            ),
            ("SELECT 1; SELECT 2", "exactly one statement"),
            ("SELECT * FROM secrets", "unknown table `secrets`"),
            ("SELECT * FROM information_schema.tables", "unknown table"),
            ("COPY otel_logs TO '/tmp/x.parquet'", "only SELECT"),
            (
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc'",
                "only SELECT",
            ),
            ("SET datafusion.execution.batch_size = 1", "only SELECT"),
            ("SELECT * FROM otel_logs WHERE", "SQL:"),
        ] {
            match store.sql(&sql(bad, None, 10)).await {
                Err(QueryError::BadRequest(m)) => assert!(m.contains(why), "{bad}: {m}"),
                other => panic!("{bad}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_query_over_its_time_limit_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            query_timeout: std::time::Duration::from_nanos(1),
            ..Default::default()
        };
        let store = EmbeddedStore::open(dir.path(), opts).unwrap();
        store
            .applier()
            .apply(1, logs(&[("api", T0, "x", &[])]).to_batches());
        // From a part: reading the file yields, and the deadline is checked.
        store.flush(true).unwrap();
        let q = SearchQuery::newest(Signal::Logs, Query::All, TimeRange::default(), 10);
        match store.search(&q).await {
            Err(e @ QueryError::Timeout(_)) => {
                assert_eq!(e.to_string(), "query timed out after 1ns")
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[test]
    fn the_next_cursor_counts_every_row_returned_with_the_last_value() {
        let v = |n: i64| Some(SortValue::Int(n));
        assert_eq!(next_cursor(&[v(3), v(2)], None, 3), None, "short page");
        assert_eq!(
            next_cursor(&[v(3), v(2), v(2)], None, 3),
            Some(Cursor {
                value: SortValue::Int(2),
                skip: 2
            })
        );
        let prev = Cursor {
            value: SortValue::Int(2),
            skip: 2,
        };
        assert_eq!(
            next_cursor(&[v(2), v(2)], Some(&prev), 2),
            Some(Cursor {
                value: SortValue::Int(2),
                skip: 4
            }),
            "a page entirely inside a tie adds to the previous skip"
        );
        let _ = Sort::default();
    }
}

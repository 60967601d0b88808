//! A table over a set of Parquet parts that consults each part's token
//! index (`text_index`) before DataFusion reads it: from the filters the
//! planner pushes down it derives which tokens a row must hold, and reads
//! only the blocks of rows that may hold them (a part with none is not
//! opened at all); with nothing to narrow, the parts left after time
//! pruning go to DataFusion's `ListingTable`. Everything else — row-group and page statistics, the
//! TraceId bloom filters, filter evaluation while decoding — is
//! DataFusion's own Parquet scan, as with `read_parquet`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Column, DFSchema, Result, ScalarValue};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl, PartitionedFile,
};
use datafusion::datasource::physical_plan::parquet::{ParquetAccessPlan, RowGroupAccess};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::expr::{InList, Like, ScalarFunction};
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::lit;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};

use crate::attribute_columns::{self, AttributeColumns, KeysWanted};
use crate::has_token;
use crate::page_index_cache;
use crate::text_index::{self, Index, Need};
use otelhouse_schema::Table;

/// A part's token index, opened (and verified) on first use.
#[derive(Debug)]
pub struct LazyIndex {
    path: Option<PathBuf>,
    rows: u64,
    cell: OnceLock<Option<Arc<Index>>>,
}

impl LazyIndex {
    /// `path`: the index file, if the part has one.
    pub fn new(path: Option<PathBuf>, rows: u64) -> Self {
        LazyIndex {
            path,
            rows,
            cell: OnceLock::new(),
        }
    }

    /// The index file, if the part has one.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// The index, or `None` if the part has none or it cannot be trusted
    /// (then the part is read whole; logged once).
    pub fn get(&self) -> Option<&Arc<Index>> {
        self.cell
            .get_or_init(|| {
                let path = self.path.as_ref()?;
                Index::open(path, self.rows)
                    .inspect_err(|e| {
                        tracing::warn!(index = %path.display(), error = %e, "ignoring a token index; the part is read whole");
                    })
                    .ok()
                    .map(Arc::new)
            })
            .as_ref()
    }
}

/// One part as the table sees it.
#[derive(Debug, Clone)]
pub struct PartFile {
    pub path: PathBuf,
    pub bytes: u64,
    /// Smallest and largest row time, unix nanoseconds.
    pub min_time: i64,
    pub max_time: i64,
    pub index: Arc<LazyIndex>,
    /// The attribute keys the part holds as columns of their own.
    pub attribute_columns: Arc<[AttributeColumns]>,
}

impl PartFile {
    /// The files of the part `meta` describes, its Parquet file at `path`
    /// (its index, if it has one, beside it: `PartMeta::relative_index_path`).
    pub fn new(meta: &crate::manifest::PartMeta, path: PathBuf) -> PartFile {
        let index = (meta.index_bytes > 0).then(|| path.with_extension("tokens"));
        PartFile {
            bytes: meta.bytes - meta.index_bytes,
            min_time: meta.min_time,
            max_time: meta.max_time,
            index: Arc::new(LazyIndex::new(index, meta.rows)),
            attribute_columns: meta.attribute_columns.clone().into(),
            path,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PartsTable {
    table: Table,
    schema: SchemaRef,
    time_column: &'static str,
    text_column: Option<&'static str>,
    parts: Arc<[PartFile]>,
    /// The maps the query reads only by these keys (set by
    /// `attribute_columns::KeysOnly`): the scan may give them as maps of
    /// those keys only.
    keys_wanted: KeysWanted,
}

impl PartsTable {
    pub fn new(table: Table, parts: Vec<PartFile>) -> Self {
        PartsTable {
            table,
            schema: table.schema(),
            time_column: table.time_column(),
            text_column: text_index::text_column(table),
            parts: parts.into(),
            keys_wanted: Vec::new(),
        }
    }

    /// Whether parts of this table may hold `map`'s keys as columns.
    pub fn has_attribute_columns(&self, map: &str) -> bool {
        attribute_columns::maps(self.table).contains(&map)
    }

    pub fn keys_wanted(&self) -> &[(String, Vec<String>)] {
        &self.keys_wanted
    }

    /// The same table, told that the query reads these maps only by these
    /// keys.
    pub fn with_keys_wanted(&self, keys: KeysWanted) -> PartsTable {
        PartsTable {
            keys_wanted: keys,
            ..self.clone()
        }
    }
}

#[async_trait]
impl TableProvider for PartsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Time bounds are exact: the scan applies them itself, and only to
        // the parts at the range's edges (a part wholly inside needs no
        // test per row). Others are inexact: they stay in the plan (and
        // DataFusion pushes them into the Parquet scan); the index only
        // narrows what is read. When the index narrows, the time bounds
        // stay inexact too: pushed into the scan they make DataFusion load
        // the page index, without which the index's row ranges would
        // still read whole column chunks (Q1 24 h: 9 MB, 110 MB without).
        let indexed = self.need(filters.iter().copied()).prunes();
        Ok(filters
            .iter()
            .map(|f| match !indexed && is_time_bound(f, self.time_column) {
                true => TableProviderFilterPushDown::Exact,
                false => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let need = self.need(filters);
        let prunes = need.prunes();
        // Parts wholly outside the time range the filters ask for are not
        // opened (their footers alone cost more than a small query).
        let (mut from, mut to) = (i64::MIN, i64::MAX);
        for f in filters {
            time_bounds(f, self.time_column, &mut from, &mut to);
        }
        // Time bounds are applied here to the parts at the range's edges,
        // whether they were declared exact or not: the planner may have
        // asked about some filters before others arrived.
        let (bounds, others): (Vec<Expr>, Vec<Expr>) = filters
            .iter()
            .cloned()
            .partition(|f| is_time_bound(f, self.time_column));
        // The maps asked for that the query reads only by constant keys.
        let wanted: KeysWanted = self
            .keys_wanted
            .iter()
            .filter(|(map, _)| {
                self.schema
                    .index_of(map)
                    .is_ok_and(|i| projection.is_none_or(|p| p.contains(&i)))
            })
            .cloned()
            .collect();
        // (file, whether the time bounds must be tested on its rows,
        // whether its key columns answer for the wanted maps)
        let mut files = Vec::with_capacity(self.parts.len());
        for part in self
            .parts
            .iter()
            .filter(|p| p.max_time >= from && p.min_time <= to)
        {
            let mut file =
                PartitionedFile::new(part.path.to_string_lossy().into_owned(), part.bytes);
            if prunes && let Some(index) = part.index.get() {
                let ranges = index.candidate_rows(&need)?;
                if ranges.is_empty() {
                    continue;
                }
                if let Some(plan) = access_plan(index.row_groups(), &ranges) {
                    file = file.with_extension(plan);
                }
            }
            let inside = from < part.min_time && part.max_time < to;
            let covered =
                !wanted.is_empty() && attribute_columns::covers(&part.attribute_columns, &wanted);
            files.push((file, !bounds.is_empty() && !inside, covered));
        }
        let (edge, inside): (Vec<_>, Vec<_>) = files.into_iter().partition(|(_, edge, _)| *edge);
        let mut plans = Vec::new();
        if !inside.is_empty() {
            let inside = inside.into_iter().map(|(f, _, c)| (f, c)).collect();
            plans.push(
                self.scan_covered(state, inside, projection, &others, limit, &wanted)
                    .await?,
            );
        }
        if !edge.is_empty() {
            // The columns asked for, and the time column to test; then only
            // the columns asked for.
            let time = self.schema.index_of(self.time_column)?;
            let mut columns: Vec<usize> = match projection {
                Some(p) => p.clone(),
                None => (0..self.schema.fields().len()).collect(),
            };
            let asked = columns.len();
            if !columns.contains(&time) {
                columns.push(time);
            }
            let edge = edge.into_iter().map(|(f, _, c)| (f, c)).collect();
            let scan = self
                .scan_covered(state, edge, Some(&columns), &others, None, &wanted)
                .await?;
            let schema = DFSchema::try_from(scan.schema().as_ref().clone())?;
            let predicate = bounds
                .into_iter()
                .map(unqualified)
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .reduce(Expr::and)
                .expect("edge parts exist only under time bounds");
            let predicate = state.create_physical_expr(predicate, &schema)?;
            let filter = FilterExecBuilder::new(predicate, scan)
                .apply_projection(Some((0..asked).collect()))?
                .build()?;
            plans.push(Arc::new(filter));
        }
        if plans.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        UnionExec::try_new(plans)
    }
}

impl PartsTable {
    /// What the filters need from a part's token index.
    fn need<'a>(&self, filters: impl IntoIterator<Item = &'a Expr>) -> Need {
        match self.text_column {
            Some(column) => Need::All(filters.into_iter().map(|f| need_of(f, column)).collect()),
            None => Need::Any,
        }
    }

    /// A scan of `files`, each flagged with whether its key columns answer
    /// for the `wanted` maps: those files give the wanted maps as maps of
    /// the wanted keys only, read from the key columns; the others are
    /// read whole.
    async fn scan_covered(
        &self,
        state: &dyn Session,
        files: Vec<(PartitionedFile, bool)>,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        wanted: &KeysWanted,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (covered, whole): (Vec<_>, Vec<_>) = files.into_iter().partition(|(_, c)| *c);
        let mut plans = Vec::new();
        if !covered.is_empty() {
            let covered = covered.into_iter().map(|(f, _)| f).collect();
            plans.push(
                self.scan_key_columns(state, covered, projection, filters, limit, wanted)
                    .await?,
            );
        }
        if !whole.is_empty() {
            let whole = whole.into_iter().map(|(f, _)| f).collect();
            let schema = self.schema.clone();
            plans.push(
                self.scan_files(state, whole, schema, projection, filters, limit)
                    .await?,
            );
        }
        match plans.len() {
            1 => Ok(plans.pop().expect("one plan")),
            _ => UnionExec::try_new(plans),
        }
    }

    /// A scan of `files` that reads the `wanted` maps' keys from their key
    /// columns (a file without one of them has no row with that key) and
    /// gives each wanted map as a map of those keys (`attribute_map`).
    /// A filter on `map['key']` needs nothing here: DataFusion pushes it
    /// through the projection into the Parquet scan, where it reads the
    /// key column through `attribute_map`.
    async fn scan_key_columns(
        &self,
        state: &dyn Session,
        files: Vec<PartitionedFile>,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
        wanted: &KeysWanted,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let mut fields: Vec<FieldRef> = self.schema.fields().iter().cloned().collect();
        // The columns of the file schema read, and the output columns
        // computed from them.
        let mut read = Vec::new();
        let mut outputs = Vec::new();
        for &c in projection.unwrap_or(&all) {
            let name = self.schema.field(c).name();
            let Some((map, keys)) = wanted.iter().find(|(m, _)| m == name) else {
                read.push(c);
                outputs.push((Expr::Column(Column::new_unqualified(name)), name.clone()));
                continue;
            };
            let mut args = Vec::with_capacity(2 * keys.len());
            for key in keys {
                let column = attribute_columns::column_name(map, key);
                fields.push(Arc::new(Field::new(&column, DataType::Utf8, true)));
                read.push(fields.len() - 1);
                args.push(lit(key.as_str()));
                args.push(Expr::Column(Column::new_unqualified(column)));
            }
            outputs.push((attribute_columns::attribute_map().call(args), name.clone()));
        }
        let schema = Arc::new(Schema::new(fields));
        let scan = self
            .scan_files(state, files, schema, Some(&read), filters, limit)
            .await?;
        let input = DFSchema::try_from(scan.schema().as_ref().clone())?;
        let exprs = outputs
            .into_iter()
            .map(|(e, name)| Ok((state.create_physical_expr(e, &input)?, name)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, scan)?))
    }

    /// A Parquet scan of `files` (each with its access plan, if any), whose
    /// columns `schema` gives (the table's, or with key columns).
    async fn scan_files(
        &self,
        state: &dyn Session,
        mut files: Vec<PartitionedFile>,
        schema: SchemaRef,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let planned = files.iter().any(|f| !f.extensions.is_empty());
        let format = ParquetFormat::new().with_options(state.default_table_options().parquet);
        if !planned {
            // Nothing for the index to narrow: DataFusion's own table over
            // the parts left, for its file statistics and byte-range splits
            // of large files.
            let urls = files
                .iter()
                .map(|f| ListingTableUrl::parse(format!("/{}", f.object_meta.location)))
                .collect::<Result<Vec<_>>>()?;
            let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(schema);
            let plan = ListingTable::try_new(config)?
                .scan(state, projection, filters, limit)
                .await?;
            return page_index_cache::cache_page_indexes(plan, state);
        }
        // Spread the files over the session's partitions, largest first.
        let groups_n = state.config().target_partitions().max(1).min(files.len());
        files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); groups_n];
        for f in files {
            let g = groups
                .iter_mut()
                .min_by_key(|(size, _)| *size)
                .expect("at least one group");
            g.0 += f.object_meta.size;
            g.1.push(f);
        }
        let source = format.file_source(schema.into());
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
            .with_file_groups(groups.into_iter().map(|(_, g)| FileGroup::new(g)).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        let plan = format.create_physical_plan(state, config).await?;
        page_index_cache::cache_page_indexes(plan, state)
    }
}

/// Which row groups, and which rows in them, the ranges cover; `None` when
/// they cover every row (no plan needed).
fn access_plan(row_groups: &[u64], ranges: &[(u64, u64)]) -> Option<ParquetAccessPlan> {
    let mut access = Vec::with_capacity(row_groups.len());
    let mut start = 0u64;
    let mut all = true;
    for rows in row_groups {
        let end = start + rows;
        let mut selectors = Vec::new();
        let mut at = start;
        for (a, b) in ranges {
            let (a, b) = ((*a).max(start), (*b).min(end));
            if a >= b {
                continue;
            }
            if a > at {
                selectors.push(RowSelector::skip((a - at) as usize));
            }
            selectors.push(RowSelector::select((b - a) as usize));
            at = b;
        }
        if selectors.is_empty() {
            access.push(RowGroupAccess::Skip);
            all = false;
        } else if selectors.len() == 1 && at == end && !selectors[0].skip {
            access.push(RowGroupAccess::Scan);
        } else {
            if at < end {
                selectors.push(RowSelector::skip((end - at) as usize));
            }
            access.push(RowGroupAccess::Selection(RowSelection::from(selectors)));
            all = false;
        }
        start = end;
    }
    (!all).then(|| ParquetAccessPlan::new(access))
}

fn time_literal(e: &Expr) -> Option<i64> {
    let Expr::Literal(v, _) = e else { return None };
    match v {
        ScalarValue::TimestampNanosecond(Some(t), _) => Some(*t),
        ScalarValue::TimestampMicrosecond(Some(t), _) => Some(t.saturating_mul(1_000)),
        ScalarValue::TimestampMillisecond(Some(t), _) => Some(t.saturating_mul(1_000_000)),
        ScalarValue::TimestampSecond(Some(t), _) => Some(t.saturating_mul(1_000_000_000)),
        _ => None,
    }
}

/// `column <op> time` (operands swapped if written the other way round),
/// if `e` is a comparison of `column` with a time literal.
fn time_comparison(e: &Expr, column: &str) -> Option<(Operator, i64)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    match (time_literal(right), time_literal(left)) {
        (Some(t), _) if is_column(left, column) => Some((*op, t)),
        (_, Some(t)) if is_column(right, column) => Some((op.swap()?, t)),
        _ => None,
    }
}

/// Narrows `[from, to]` by the comparisons of `column` with a time that
/// `e` requires (conjunctions only; anything else leaves it as is).
fn time_bounds(e: &Expr, column: &str, from: &mut i64, to: &mut i64) {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return;
    };
    if *op == Operator::And {
        time_bounds(left, column, from, to);
        time_bounds(right, column, from, to);
        return;
    }
    let Some((op, t)) = time_comparison(e, column) else {
        return;
    };
    match op {
        Operator::Gt | Operator::GtEq => *from = (*from).max(t),
        Operator::Lt | Operator::LtEq => *to = (*to).min(t),
        Operator::Eq => {
            *from = (*from).max(t);
            *to = (*to).min(t);
        }
        _ => {}
    }
}

fn text_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}

/// A comparison of `column` with a time literal, or a conjunction of
/// them: a filter the scan applies exactly (see `supports_filters_pushdown`).
fn is_time_bound(e: &Expr, column: &str) -> bool {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => is_time_bound(left, column) && is_time_bound(right, column),
        _ => matches!(
            time_comparison(e, column),
            Some((
                Operator::Gt | Operator::GtEq | Operator::Lt | Operator::LtEq,
                _
            ))
        ),
    }
}

/// `e` with its columns unqualified, to plan it against the scan's schema.
fn unqualified(e: Expr) -> Result<Expr> {
    e.transform_up(|e| {
        Ok(match e {
            Expr::Column(c) => Transformed::yes(Expr::Column(Column::new_unqualified(c.name))),
            e => Transformed::no(e),
        })
    })
    .data()
}

fn is_column(e: &Expr, column: &str) -> bool {
    matches!(e, Expr::Column(c) if c.name == column)
}

/// `column` or `lower(column)`.
fn is_column_or_lower(e: &Expr, column: &str) -> bool {
    is_column(e, column)
        || matches!(e, Expr::ScalarFunction(ScalarFunction { func, args })
            if func.name() == "lower" && args.len() == 1 && is_column(&args[0], column))
}

fn all_tokens(keys: Vec<u64>) -> Need {
    if keys.is_empty() {
        Need::Any
    } else {
        Need::All(keys.into_iter().map(Need::Token).collect())
    }
}

/// What a row matching `e` must hold in `column`, as far as the index can
/// tell. Sound, not complete: anything not understood is `Any`.
pub fn need_of(e: &Expr, column: &str) -> Need {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => Need::All(vec![need_of(left, column), need_of(right, column)]),
            Operator::Or => Need::Either(vec![need_of(left, column), need_of(right, column)]),
            // Exact equality: every token of the value is a token of the row.
            Operator::Eq => match (left.as_ref(), right.as_ref()) {
                (c, v) | (v, c)
                    if is_column(c, text_index::TRACE_COLUMN) && text_literal(v).is_some() =>
                {
                    Need::TraceId(text_index::trace_key(text_literal(v).unwrap_or_default()))
                }
                (c, v) | (v, c) if is_column(c, column) && text_literal(v).is_some() => {
                    all_tokens(text_index::keys(text_literal(v).unwrap_or_default()))
                }
                _ => Need::Any,
            },
            _ => Need::Any,
        },
        Expr::ScalarFunction(ScalarFunction { func, args }) => match (func.name(), &args[..]) {
            (has_token::NAME, [c, t]) if is_column(c, column) => text_literal(t)
                .and_then(text_index::query_key)
                .map_or(Need::Any, Need::Token),
            // The search wraps each term in `coalesce(term, false)`.
            ("coalesce", [inner, Expr::Literal(ScalarValue::Boolean(Some(false)), _)]) => {
                need_of(inner, column)
            }
            ("contains", [c, s]) if is_column_or_lower(c, column) => {
                text_literal(s).map_or(Need::Any, |s| all_tokens(text_index::interior_keys(s)))
            }
            _ => Need::Any,
        },
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if is_column(expr, text_index::TRACE_COLUMN)
            && list.iter().all(|v| text_literal(v).is_some()) =>
        {
            Need::Either(
                list.iter()
                    .filter_map(text_literal)
                    .map(|v| Need::TraceId(text_index::trace_key(v)))
                    .collect(),
            )
        }
        Expr::Like(Like {
            negated: false,
            expr,
            pattern,
            escape_char: None,
            ..
        }) if is_column_or_lower(expr, column) => match text_literal(pattern) {
            // Each literal stretch between wildcards holds whole tokens
            // inside it; a backslash escapes, so give up on those.
            Some(p) if !p.contains('\\') => all_tokens(
                p.split(['%', '_'])
                    .flat_map(text_index::interior_keys)
                    .collect(),
            ),
            _ => Need::Any,
        },
        _ => Need::Any,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{ident as col, lit};

    fn key(t: &str) -> Need {
        Need::Token(text_index::query_key(t).unwrap())
    }

    #[test]
    fn filters_become_what_the_index_can_check() {
        let body = || col("Body");
        assert_eq!(
            need_of(&has_token::has_token(body(), "Timeout"), "Body"),
            key("timeout")
        );
        // Not the indexed column, or a token the index cannot answer.
        assert_eq!(
            need_of(&has_token::has_token(col("SpanName"), "x"), "Body"),
            Need::Any
        );
        assert_eq!(
            need_of(&has_token::has_token(body(), "é"), "Body"),
            Need::Any
        );
        // Substrings: only the tokens wholly inside them.
        assert_eq!(
            need_of(&body().ilike(lit("%a connection reset%")), "Body"),
            Need::All(vec![key("connection")])
        );
        assert_eq!(need_of(&body().like(lit("%qzx%")), "Body"), Need::Any);
        assert_eq!(need_of(&body().like(lit("%a b_c d%")), "Body"), Need::Any);
        assert_eq!(
            need_of(&body().like(lit("%x y z_w%")), "Body"),
            Need::All(vec![key("y")])
        );
        assert_eq!(need_of(&body().like(lit("%a\\%b c d%")), "Body"), Need::Any);
        assert_eq!(
            need_of(&body().eq(lit("Disk full")), "Body"),
            Need::All(vec![key("disk"), key("full")])
        );
        // NOT cannot prune; OR prunes only if every side does.
        assert!(!need_of(&!has_token::has_token(body(), "a"), "Body").prunes());
        let or = has_token::has_token(body(), "a").or(col("SeverityText").eq(lit("x")));
        assert!(!need_of(&or, "Body").prunes());
        let and = has_token::has_token(body(), "a").and(col("SeverityText").eq(lit("x")));
        assert!(need_of(&and, "Body").prunes());
        // A trace lookup, on either text column's table; its id is not
        // split into tokens.
        let trace = |id: &str| Need::TraceId(text_index::trace_key(id));
        assert_eq!(
            need_of(&col("TraceId").eq(lit("00ab")), "SpanName"),
            trace("00ab")
        );
        assert_eq!(
            need_of(&lit("00ab").eq(col("TraceId")), "Body"),
            trace("00ab")
        );
        assert_eq!(
            need_of(
                &col("TraceId").in_list(vec![lit("a1"), lit("b2")], false),
                "Body"
            ),
            Need::Either(vec![trace("a1"), trace("b2")])
        );
        assert_eq!(
            need_of(&col("TraceId").in_list(vec![lit("a1")], true), "Body"),
            Need::Any
        );
        assert_eq!(
            need_of(&col("TraceId").not_eq(lit("a1")), "Body"),
            Need::Any
        );
    }

    #[test]
    fn row_ranges_become_an_access_plan() {
        let groups = [100, 100, 50];
        assert!(access_plan(&groups, &[(0, 250)]).is_none());
        let plan = access_plan(&groups, &[(10, 20), (100, 200)]).unwrap();
        let inner = plan.inner();
        assert!(matches!(inner[1], RowGroupAccess::Scan));
        assert!(matches!(inner[2], RowGroupAccess::Skip));
        match &inner[0] {
            RowGroupAccess::Selection(s) => {
                let v: Vec<RowSelector> = s.clone().into();
                assert_eq!(
                    v,
                    vec![
                        RowSelector::skip(10),
                        RowSelector::select(10),
                        RowSelector::skip(80)
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

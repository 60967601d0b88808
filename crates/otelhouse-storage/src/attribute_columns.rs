//! Attribute columns: the keys of a part's attribute maps, each also
//! written as a column of its own, so that a query asking for one
//! attribute reads that attribute and not the whole map.
//!
//! A query like "top `http.route` of the gateway's logs" used to decode
//! every key and value of `LogAttributes` (15 of each per row) to find one
//! of them; ClickStack answers it the same way unless an operator adds a
//! MATERIALIZED column for that key. Here each flush chooses its parts'
//! keys (up to [`MAX_KEYS`] per map, most frequent first; [`choose`]) and
//! each merge writes its inputs' keys ([`union`]):
//! - the map column stays as it was (whole rows, `SELECT *`, merges and
//!   every other reader see nothing new);
//! - each chosen key adds a nullable `Utf8` column named
//!   [`column_name`]`(map, key)`, null where a row lacks the key; the
//!   part's manifest entry lists the keys ([`AttributeColumns`]).
//!
//! Reading: [`KeysOnly`], an optimizer rule, finds the maps a query uses
//! only through `map['key']` (or `map_extract(map, 'key')`) with constant
//! keys, and tells the table (`PartsTable`) which keys those are. Its scan
//! then reads, from every part that has those keys' columns (or lists
//! every key it holds), the key columns instead of the map and rebuilds a
//! map of just those keys ([`attribute_map`]); the query's own
//! `map['key']` then reads from that small map. A part written before
//! attribute columns existed is read as before.

use std::ops::Range;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{
    Array, ArrayRef, AsArray, MapArray, MapBuilder, StringArray, StringBuilder, UInt32Array,
};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{HashMap, Result, ScalarValue, exec_err};
use datafusion::datasource::DefaultTableSource;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use otelhouse_schema::Table;
use serde::{Deserialize, Serialize};

use crate::count_runs;
use crate::parts_table::PartsTable;

/// Keys per map a part stores as columns, at most. A part whose map holds
/// more keys keeps the most frequent ones; the rest are read from the map.
pub const MAX_KEYS: usize = 100;

/// The attribute maps of a table whose keys become columns: the ones
/// searches, facets and dashboards filter and group on.
pub fn maps(table: Table) -> &'static [&'static str] {
    match table {
        Table::Logs => &["ResourceAttributes", "LogAttributes"],
        Table::Traces => &["ResourceAttributes", "SpanAttributes"],
        _ => &[],
    }
}

/// The name of the column holding `key` of `map` in a part's file (not a
/// column of the table: queries keep writing `map['key']`).
pub fn column_name(map: &str, key: &str) -> String {
    format!("{map}['{key}']")
}

/// Which keys of one map a part holds as columns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeColumns {
    /// The map column, e.g. `LogAttributes`.
    pub map: String,
    /// The keys with a column, in the file's column order.
    pub keys: Vec<String>,
    /// Whether `keys` are all the keys any row of the part has in `map`:
    /// then a key not among them is in no row of the part.
    pub complete: bool,
    /// Whether the file has the columns, or the keys were only chosen (a
    /// flush's part: its merge writes the columns of its inputs' keys).
    #[serde(default = "written_by_default")]
    pub written: bool,
}

fn written_by_default() -> bool {
    true
}

impl AttributeColumns {
    /// Whether the part can answer `map[key]` from its key columns alone.
    pub fn covers(&self, key: &str) -> bool {
        self.written && (self.complete || self.keys.iter().any(|k| k == key))
    }

    /// The same keys, chosen but not written.
    pub fn unwritten(mut self) -> AttributeColumns {
        self.written = false;
        self
    }
}

/// Whether parts with these columns answer every `map[key]` of `wanted`
/// from key columns.
pub fn covers(columns: &[AttributeColumns], wanted: &[(String, Vec<String>)]) -> bool {
    wanted.iter().all(|(map, keys)| {
        columns
            .iter()
            .find(|c| &c.map == map)
            .is_some_and(|c| keys.iter().all(|k| c.covers(k)))
    })
}

fn map_column<'a>(batch: &'a RecordBatch, map: &str) -> anyhow::Result<&'a MapArray> {
    batch
        .column_by_name(map)
        .and_then(|c| c.as_map_opt())
        .with_context(|| format!("no map column {map}"))
}

/// The key columns a part of `batches` gets: per map of the table, its
/// keys by how many rows hold them (ties by name), at most [`MAX_KEYS`].
pub fn choose(table: Table, batches: &[RecordBatch]) -> anyhow::Result<Vec<AttributeColumns>> {
    maps(table)
        .iter()
        .map(|map| Ok(pick(map, key_counts(map, batches)?.into_iter().collect())))
        .collect()
}

/// How many rows of `batches` hold each key of `map`. Every flush counts
/// every entry, so a run of rows with the same keys is counted once, times
/// its length: a resource's rows arrive together, and a template's records
/// repeat its keys.
fn key_counts<'a>(map: &str, batches: &'a [RecordBatch]) -> anyhow::Result<HashMap<&'a str, u64>> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for batch in batches {
        let m = map_column(batch, map)?;
        let keys = m.keys().as_string::<i32>();
        let offsets = m.value_offsets();
        let rows = (0..m.len()).map(|row| RowKeys {
            keys,
            entries: offsets[row] as usize..offsets[row + 1] as usize,
        });
        count_runs::runs(rows, |row, n| {
            for i in row.entries {
                *counts.entry(keys.value(i)).or_default() += n as u64;
            }
        });
    }
    Ok(counts)
}

/// One row's entries of a map array, equal to another row's of the same
/// array when they hold the same keys in the same order.
struct RowKeys<'a> {
    keys: &'a StringArray,
    entries: Range<usize>,
}

impl PartialEq for RowKeys<'_> {
    /// The same key lengths and the same bytes, compared in one go: a
    /// comparison per key cost the flush more (BENCHMARKS.md, "Sustained
    /// load, merges behind, and two trims").
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.entries, &other.entries);
        if a.len() != b.len() {
            return false;
        }
        let offsets = self.keys.value_offsets();
        let (oa, ob) = (&offsets[a.start..=a.end], &offsets[b.start..=b.end]);
        let (base_a, base_b) = (oa[0], ob[0]);
        let bytes = self.keys.value_data();
        oa.iter().zip(ob).all(|(x, y)| x - base_a == y - base_b)
            && bytes[base_a as usize..oa[a.len()] as usize]
                == bytes[base_b as usize..ob[b.len()] as usize]
    }
}

/// The columns a merge of parts writes: the union of the inputs' keys,
/// weighted by the rows of the parts that hold them. Complete only if
/// every input's is and the union fits.
pub fn union(table: Table, inputs: &[(&[AttributeColumns], u64)]) -> Vec<AttributeColumns> {
    maps(table)
        .iter()
        .map(|map| {
            let mut weights: HashMap<&str, u64> = HashMap::new();
            let mut complete = true;
            for (columns, rows) in inputs {
                match columns.iter().find(|c| c.map == *map) {
                    Some(c) => {
                        complete &= c.complete;
                        for k in &c.keys {
                            *weights.entry(k.as_str()).or_default() += rows;
                        }
                    }
                    // Written before attribute columns: its keys are unknown.
                    None => complete = false,
                }
            }
            let mut chosen = pick(map, weights.into_iter().collect());
            chosen.complete &= complete;
            chosen
        })
        .collect()
}

fn pick(map: &str, mut weights: Vec<(&str, u64)>) -> AttributeColumns {
    let complete = weights.len() <= MAX_KEYS;
    weights.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    weights.truncate(MAX_KEYS);
    let mut keys: Vec<String> = weights.into_iter().map(|(k, _)| k.to_owned()).collect();
    keys.sort_unstable();
    AttributeColumns {
        map: (*map).to_owned(),
        keys,
        complete,
        written: true,
    }
}

/// The schema of a part's file: the table's columns, then one per key.
pub fn file_schema(table: Table, columns: &[AttributeColumns]) -> SchemaRef {
    let schema = table.schema();
    if columns.iter().all(|c| !c.written || c.keys.is_empty()) {
        return schema;
    }
    let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    for c in columns.iter().filter(|c| c.written) {
        for k in &c.keys {
            fields.push(Arc::new(Field::new(
                column_name(&c.map, k),
                DataType::Utf8,
                true,
            )));
        }
    }
    Arc::new(Schema::new(fields))
}

/// `batch` (of the table's schema) with its key columns appended, as
/// [`file_schema`] says. A row's value of a key is its first entry with
/// that key, as `map['key']` reads it.
pub fn extend(
    batch: &RecordBatch,
    columns: &[AttributeColumns],
    schema: &SchemaRef,
) -> anyhow::Result<RecordBatch> {
    if schema.fields().len() == batch.num_columns() {
        return Ok(batch.clone());
    }
    let mut out: Vec<ArrayRef> = batch.columns().to_vec();
    for c in columns.iter().filter(|c| c.written && !c.keys.is_empty()) {
        let m = map_column(batch, &c.map)?;
        let slot: HashMap<&str, usize> = c
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        // Per key, the entry holding each row's value (None: no entry).
        let mut entries: Vec<Vec<Option<u32>>> = vec![vec![None; m.len()]; c.keys.len()];
        let keys = m.keys().as_string::<i32>();
        let offsets = m.value_offsets();
        for row in 0..m.len() {
            for e in offsets[row] as usize..offsets[row + 1] as usize {
                if let Some(&i) = slot.get(keys.value(e)) {
                    entries[i][row].get_or_insert(e as u32);
                }
            }
        }
        for picks in entries {
            out.push(arrow::compute::take(
                m.values(),
                &UInt32Array::from(picks),
                None,
            )?);
        }
    }
    Ok(RecordBatch::try_new(schema.clone(), out)?)
}

pub const MAP_FUNCTION: &str = "attribute_map";

/// `attribute_map('k1', v1, 'k2', v2, ...)`: per row, a map of the keys
/// whose value is not null. What a scan puts in place of a map column
/// when the query reads only those keys.
#[derive(Debug, PartialEq, Eq, Hash)]
struct AttributeMap {
    signature: Signature,
}

pub fn attribute_map() -> ScalarUDF {
    ScalarUDF::new_from_impl(AttributeMap {
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

impl ScalarUDFImpl for AttributeMap {
    fn name(&self) -> &str {
        MAP_FUNCTION
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(otelhouse_schema::map_type())
    }

    fn return_field_from_args(&self, _: ReturnFieldArgs) -> Result<FieldRef> {
        // Not nullable, as the table's map columns: a row without the keys
        // gets an empty map.
        Ok(Arc::new(Field::new(
            MAP_FUNCTION,
            otelhouse_schema::map_type(),
            false,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for pair in args.args.chunks(2) {
            let [key, value] = pair else {
                return exec_err!("{MAP_FUNCTION} takes pairs of a key and a value");
            };
            let ColumnarValue::Scalar(ScalarValue::Utf8(Some(key))) = key else {
                return exec_err!("{MAP_FUNCTION}: keys are constant text");
            };
            let value = value.to_array(rows)?;
            let Some(value) = value.as_string_opt::<i32>().cloned() else {
                return exec_err!("{MAP_FUNCTION}: values are text");
            };
            keys.push(key.as_str());
            values.push(value);
        }
        let entries = values.iter().map(|v| v.len() - v.null_count()).sum();
        let mut builder = MapBuilder::new(
            None,
            StringBuilder::with_capacity(entries, entries * 16),
            StringBuilder::with_capacity(entries, entries * 16),
        );
        for row in 0..rows {
            for (key, value) in keys.iter().zip(&values) {
                if value.is_valid(row) {
                    builder.keys().append_value(key);
                    builder.values().append_value(value.value(row));
                }
            }
            builder.append(true)?;
        }
        Ok(ColumnarValue::Array(Arc::new(builder.finish())))
    }
}

/// The maps of a table a query reads only by constant keys, and those keys.
pub type KeysWanted = Vec<(String, Vec<String>)>;

/// `(map column, key)` if `e` is `map['key']` or `map_extract(map, 'key')`
/// of a column with a constant key.
pub fn key_access(e: &Expr) -> Option<(&str, &str)> {
    let Expr::ScalarFunction(ScalarFunction { func, args }) = e else {
        return None;
    };
    if !matches!(func.name(), "get_field" | "map_extract") {
        return None;
    }
    match args.as_slice() {
        [
            Expr::Column(c),
            Expr::Literal(ScalarValue::Utf8(Some(key)), _),
        ] => Some((c.name.as_str(), key.as_str())),
        _ => None,
    }
}

/// The optimizer rule that tells each `PartsTable` scan which of its maps
/// the query reads only by constant keys (see the module's comment).
///
/// Sound by being conservative: a map counts as read by keys only if every
/// reference to a column of that name anywhere in the plan (subqueries
/// included) is such a key access, and the plan's output has no column of
/// that name (a plan without a projection passes the scan's columns
/// through). Names are compared without qualifiers, so two tables' maps of
/// one name are judged together.
#[derive(Debug, Default)]
pub struct KeysOnly;

impl OptimizerRule for KeysOnly {
    fn name(&self) -> &str {
        "attribute_keys_only"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let wanted = keys_wanted(&plan)?;
        if wanted.is_empty() {
            return Ok(Transformed::no(plan));
        }
        plan.transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(mut scan) = node else {
                return Ok(Transformed::no(node));
            };
            let Some(table) = scan
                .source
                .as_ref()
                .downcast_ref::<DefaultTableSource>()
                .and_then(|s| s.table_provider.as_ref().downcast_ref::<PartsTable>())
            else {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            };
            let mine: KeysWanted = wanted
                .iter()
                .filter(|(map, _)| table.has_attribute_columns(map))
                .cloned()
                .collect();
            if mine.is_empty() || table.keys_wanted() == mine.as_slice() {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            }
            let table = table.with_keys_wanted(mine);
            scan.source = Arc::new(DefaultTableSource::new(Arc::new(table)));
            Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
        })
    }
}

/// Per map column name, the constant keys the plan reads it by; maps read
/// any other way are left out.
fn keys_wanted(plan: &LogicalPlan) -> Result<KeysWanted> {
    let mut keys: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut whole: std::collections::HashSet<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut visit = |e: &Expr| {
        e.apply(|e| {
            if let Some((map, key)) = key_access(e) {
                let ks = keys.entry(map.to_owned()).or_default();
                if !ks.iter().any(|k| k == key) {
                    ks.push(key.to_owned());
                }
                return Ok(TreeNodeRecursion::Jump);
            }
            if let Expr::Column(c) = e {
                whole.insert(c.name.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })
    };
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            for f in &scan.filters {
                visit(f)?;
            }
        }
        node.apply_expressions(|e| visit(e))?;
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(keys
        .into_iter()
        .filter(|(map, _)| !whole.contains(map))
        .map(|(map, mut ks)| {
            ks.sort_unstable();
            (map, ks)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    /// A logs batch (as the converter builds it) whose LogAttributes rows
    /// hold these entries.
    fn logs(rows: &[&[(&str, &str)]]) -> RecordBatch {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let records = rows
            .iter()
            .map(|row| LogRecord {
                time_unix_nano: 1_700_000_000_000_000_000,
                attributes: row
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: (*k).into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue((*v).into())),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut batches = otelhouse_otlp::convert::logs(&request);
        assert_eq!(batches.len(), 1);
        batches.pop().unwrap().1
    }

    fn log_columns(columns: &[AttributeColumns]) -> &AttributeColumns {
        columns.iter().find(|c| c.map == "LogAttributes").unwrap()
    }

    #[test]
    fn keys_are_chosen_by_frequency_up_to_the_limit() {
        let b = logs(&[&[("b", "1"), ("a", "2")], &[("b", "3")], &[]]);
        let chosen = choose(Table::Logs, &[b]).unwrap();
        let c = log_columns(&chosen);
        assert_eq!(c.keys, ["a", "b"], "in name order");
        assert!(c.complete);
        let resource = chosen
            .iter()
            .find(|c| c.map == "ResourceAttributes")
            .unwrap();
        assert!(resource.keys.is_empty() && resource.complete);

        // More keys than columns: the most frequent stay, not complete.
        let names: Vec<String> = (0..MAX_KEYS + 5).map(|i| format!("k{i:03}")).collect();
        let mut rows: Vec<Vec<(&str, &str)>> = Vec::new();
        for i in 0..names.len() {
            // k000 in every row, the last key in one row.
            rows.push(names[..=i].iter().map(|k| (k.as_str(), "v")).collect());
        }
        let rows: Vec<&[(&str, &str)]> = rows.iter().map(|r| r.as_slice()).collect();
        let chosen = choose(Table::Logs, &[logs(&rows)]).unwrap();
        let c = log_columns(&chosen);
        assert!(!c.complete);
        assert_eq!(c.keys.len(), MAX_KEYS);
        assert_eq!(c.keys, names[..MAX_KEYS]);
        assert!(c.covers("k000") && !c.covers(&names[MAX_KEYS]));
    }

    #[test]
    fn keys_are_counted_per_row_through_runs_of_the_same_keys() {
        let rows: [&[(&str, &str)]; 9] = [
            &[("a", "1"), ("b", "1")],
            &[("a", "2"), ("b", "2")], // same keys, other values: one run
            &[("a", "3"), ("b", "3")],
            &[("b", "1"), ("a", "1")], // same keys, other order: a new run
            &[("a", "1")],
            &[],
            &[],
            &[("a", "1"), ("a", "2")], // a key twice counts twice, as each entry
            &[("c", "1")],
        ];
        let batches = [logs(&rows), logs(&rows[..2])];
        let mut counts: Vec<(&str, u64)> = key_counts("LogAttributes", &batches)
            .unwrap()
            .into_iter()
            .collect();
        counts.sort();
        assert_eq!(counts, [("a", 7 + 2), ("b", 4 + 2), ("c", 1)]);
    }

    #[test]
    fn a_merge_takes_the_union_of_its_inputs() {
        let part = |keys: &[&str], complete| {
            vec![AttributeColumns {
                map: "LogAttributes".into(),
                keys: keys.iter().map(|k| k.to_string()).collect(),
                complete,
                written: false,
            }]
        };
        let (a, b) = (part(&["x", "y"], true), part(&["y", "z"], true));
        let merged = union(Table::Logs, &[(&a, 10), (&b, 5)]);
        let c = log_columns(&merged);
        assert_eq!(c.keys, ["x", "y", "z"]);
        assert!(c.complete);
        // An input that is not complete, or has no columns (written before
        // them), makes the result not complete.
        let merged = union(Table::Logs, &[(&a, 10), (&part(&["q"], false), 1)]);
        assert!(!log_columns(&merged).complete);
        let merged = union(Table::Logs, &[(&a, 10), (&[], 1)]);
        assert!(!log_columns(&merged).complete);
        assert_eq!(log_columns(&merged).keys, ["x", "y"]);
    }

    #[test]
    fn key_columns_hold_each_rows_first_value() {
        let b = logs(&[
            &[("route", "/a"), ("user", "u1")],
            &[],
            &[("user", "u2"), ("route", "/b"), ("route", "/c")],
        ]);
        let columns = choose(Table::Logs, std::slice::from_ref(&b)).unwrap();
        let schema = file_schema(Table::Logs, &columns);
        let out = extend(&b, &columns, &schema).unwrap();
        assert_eq!(out.num_columns(), b.num_columns() + 2);
        let column = |key: &str| {
            let c = out
                .column_by_name(&column_name("LogAttributes", key))
                .unwrap();
            c.as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_owned))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            column("route"),
            [Some("/a".into()), None, Some("/b".into())]
        );
        assert_eq!(column("user"), [Some("u1".into()), None, Some("u2".into())]);
    }

    #[test]
    fn attribute_map_gives_the_keys_with_values() {
        let values = |v: Vec<Option<&str>>| ColumnarValue::Array(Arc::new(StringArray::from(v)));
        let key = |k: &str| ColumnarValue::Scalar(ScalarValue::Utf8(Some(k.into())));
        let args = ScalarFunctionArgs {
            args: vec![
                key("a"),
                values(vec![Some("1"), None, None]),
                key("b"),
                values(vec![Some("2"), Some("3"), None]),
            ],
            arg_fields: (0..4)
                .map(|_| Arc::new(Field::new("x", DataType::Utf8, true)))
                .collect(),
            number_rows: 3,
            return_field: Arc::new(Field::new("m", otelhouse_schema::map_type(), false)),
            config_options: Default::default(),
        };
        let ColumnarValue::Array(out) = attribute_map().invoke_with_args(args).unwrap() else {
            panic!("an array")
        };
        let out = out.as_map();
        let row = |i: usize| {
            let entries = out.value(i);
            let k = entries.column(0).as_string::<i32>().clone();
            let v = entries.column(1).as_string::<i32>().clone();
            k.iter()
                .zip(v.iter())
                .map(|(k, v)| format!("{}={}", k.unwrap(), v.unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(row(0), ["a=1", "b=2"]);
        assert_eq!(row(1), ["b=3"]);
        assert!(row(2).is_empty() && out.is_valid(2));
        assert_eq!(out.data_type(), &otelhouse_schema::map_type());
    }

    /// The rule's reading of plans: keys only where every use is by a
    /// constant key and the map does not reach the output.
    #[tokio::test]
    async fn maps_count_as_read_by_keys_only_when_nothing_else_reads_them() {
        use datafusion::prelude::{SessionContext, ident, lit};
        let ctx = SessionContext::new();
        let empty =
            datafusion::datasource::MemTable::try_new(Table::Logs.schema(), vec![vec![]]).unwrap();
        ctx.register_table("otel_logs", Arc::new(empty)).unwrap();
        let wanted = |sql: &str| {
            let ctx = ctx.clone();
            let sql = sql.to_owned();
            async move {
                let plan = ctx.sql(&sql).await.unwrap().into_unoptimized_plan();
                keys_wanted(&plan).unwrap()
            }
        };
        let keys = |map: &str, ks: &[&str]| {
            vec![(
                map.to_owned(),
                ks.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            )]
        };
        assert_eq!(
            wanted(
                "SELECT \"LogAttributes\"['b'], \"LogAttributes\"['a'] FROM otel_logs \
                 WHERE \"LogAttributes\"['c'] = 'x'"
            )
            .await,
            keys("LogAttributes", &["a", "b", "c"])
        );
        assert_eq!(
            wanted(
                "SELECT count(*) FROM otel_logs WHERE array_element(map_extract(\"LogAttributes\", 'a'), 1) = 'x'"
            )
            .await,
            keys("LogAttributes", &["a"])
        );
        assert_eq!(
            wanted(
                "SELECT count(*) FROM otel_logs WHERE \"Body\" IN \
                 (SELECT \"LogAttributes\"['a'] FROM otel_logs)"
            )
            .await,
            keys("LogAttributes", &["a"]),
            "inside a subquery"
        );
        for sql in [
            "SELECT \"LogAttributes\" FROM otel_logs",
            "SELECT * FROM otel_logs WHERE \"LogAttributes\"['a'] = 'x'",
            "SELECT \"LogAttributes\"['a'], cardinality(\"LogAttributes\") FROM otel_logs",
            "SELECT m['a'] FROM (SELECT \"LogAttributes\" AS m FROM otel_logs)",
            "SELECT \"LogAttributes\"[\"Body\"] FROM otel_logs",
        ] {
            let w = wanted(sql).await;
            assert!(
                w.iter().all(|(map, _)| map != "LogAttributes"),
                "{sql}: {w:?}"
            );
        }
        // A plan without a projection passes the map through to its output.
        let df = ctx
            .table("otel_logs")
            .await
            .unwrap()
            .filter(
                datafusion::functions::core::expr_fn::get_field(ident("LogAttributes"), "a")
                    .eq(lit("x")),
            )
            .unwrap();
        assert!(keys_wanted(df.logical_plan()).unwrap().is_empty());
    }
}

//! Counting rows per value of one 64-bit key — above all the count per
//! time bucket (`SELECT date_trunc('minute', Timestamp) AS m, count(*) …
//! GROUP BY m`), the histogram drawn over every search — without a hash
//! lookup per row.
//!
//! Parts are clustered by time (logs: 5-minute buckets, then service, then
//! time), so rows come in long runs of the same minute. `CountRunsExec`
//! compares each key with the one before it and touches its hash table
//! once per run; DataFusion's hash aggregation looks every row up (28 % of
//! Q3's profile, BENCHMARKS.md). The optimizer rule `CountRuns` puts it in
//! place of a partial aggregation (`Partial`: raw rows in, partial counts
//! out) that groups by exactly one expression of a type stored as i64
//! (Int64, timestamps, Date64, durations) and computes only
//! `count(*)`-like aggregates (`count` of a non-null constant, no
//! `DISTINCT`, no `FILTER`). Its output is the aggregation's own schema —
//! key, then one Int64 count per aggregate (`count`'s partial state) — so
//! the final aggregation above it is unchanged. Being partial, it may give
//! a key more than once: when its table holds `8 × batch size` keys, or the
//! query memory pool refuses it more, it emits what it has and starts
//! again (as DataFusion's partial aggregation does), so a key per row
//! (`GROUP BY Timestamp`) costs bounded memory, never an error. When a
//! full table shows runs of under two rows on average, the table gains
//! nothing: it then passes each batch's runs through as they come (as
//! DataFusion's partial aggregation stops aggregating when it sees
//! nearly as many groups as rows), one output row per run, no lookups.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayData, ArrayRef, Int64Array, RecordBatch, make_array};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet, RecordOutput,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

/// The optimizer rule: see the module comment. Runs after DataFusion's
/// own rules, on the plan they leave.
#[derive(Debug, Default)]
pub struct CountRuns;

impl PhysicalOptimizerRule for CountRuns {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_up(|node| {
                let Some(agg) = node.downcast_ref::<AggregateExec>() else {
                    return Ok(Transformed::no(node));
                };
                Ok(match CountRunsExec::in_place_of(agg) {
                    Some(exec) => Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>),
                    None => Transformed::no(node),
                })
            })?
            .data)
    }

    fn name(&self) -> &str {
        "count_runs"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether a value of this type is an i64 in memory (so keys compare and
/// hash as i64 and come back as the same type).
fn stored_as_i64(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int64
            | DataType::Timestamp(_, _)
            | DataType::Date64
            | DataType::Duration(_)
            | DataType::Time64(_)
    )
}

/// Counts rows per value of `key` over each input partition.
#[derive(Debug)]
pub struct CountRunsExec {
    input: Arc<dyn ExecutionPlan>,
    key: Arc<dyn PhysicalExpr>,
    key_name: String,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl CountRunsExec {
    /// The exec that computes what `agg` computes, if it is a count per
    /// one 64-bit key over raw rows.
    pub fn in_place_of(agg: &AggregateExec) -> Option<CountRunsExec> {
        let raw = matches!(agg.mode(), AggregateMode::Partial);
        let group = agg.group_expr();
        let plain_group = group.expr().len() == 1
            && !group.has_grouping_set()
            && group.null_expr().is_empty()
            && group.groups().iter().all(|g| g.iter().all(|null| !null));
        if !raw || !plain_group || agg.limit_options().is_some() || agg.aggr_expr().is_empty() {
            return None;
        }
        // Whatever reads the aggregation must not rely on an order of its
        // groups, which this exec does not promise.
        if agg.properties().output_ordering().is_some() {
            return None;
        }
        let counts_rows = agg.aggr_expr().iter().zip(agg.filter_expr()).all(|(a, f)| {
            let args = a.expressions();
            a.fun().name() == "count"
                && !a.is_distinct()
                && f.is_none()
                && a.order_bys().is_empty()
                && args.len() == 1
                && args[0]
                    .downcast_ref::<Literal>()
                    .is_some_and(|l| !l.value().is_null())
        });
        let schema = agg.schema();
        let (key, key_name) = group.expr()[0].clone();
        let key_type = key.data_type(&agg.input().schema()).ok()?;
        let shape = schema.fields().len() == 1 + agg.aggr_expr().len()
            && *schema.field(0).data_type() == key_type
            && schema.fields()[1..]
                .iter()
                .all(|f| *f.data_type() == DataType::Int64);
        if !counts_rows || !shape || !stored_as_i64(&key_type) {
            return None;
        }
        Some(CountRunsExec::new(
            agg.input().clone(),
            key,
            key_name,
            schema,
        ))
    }

    fn new(
        input: Arc<dyn ExecutionPlan>,
        key: Arc<dyn PhysicalExpr>,
        key_name: String,
        schema: SchemaRef,
    ) -> CountRunsExec {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        CountRunsExec {
            input,
            key,
            key_name,
            schema,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for CountRunsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CountRunsExec: key={} as {}", self.key, self.key_name)
    }
}

impl ExecutionPlan for CountRunsExec {
    fn name(&self) -> &str {
        "CountRunsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.key)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(CountRunsExec::new(
            children.swap_remove(0),
            self.key.clone(),
            self.key_name.clone(),
            self.schema.clone(),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let key = self.key.clone();
        let schema = self.schema.clone();
        let batch_size = context.session_config().batch_size();
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let reservation = MemoryConsumer::new(format!("CountRunsExec[{partition}]"))
            .register(context.memory_pool());
        let counts = Counts::new(reservation, 8 * batch_size.max(1));
        // Reads input until the table is full or the input ends, then
        // emits the table (a run of batches) and, unless the input ended,
        // goes on with the table emptied — or, once the runs proved
        // short, passes every later batch's runs through.
        let emissions = futures::stream::unfold(Some((input, counts, false)), move |state| {
            let (key, schema, metrics) = (key.clone(), schema.clone(), metrics.clone());
            async move {
                let (mut input, mut counts, pass_through) = state?;
                let evaluate = |batch: Result<RecordBatch>| {
                    let batch = batch?;
                    let _timer = metrics.elapsed_compute().timer();
                    key.evaluate(&batch)?.into_array(batch.num_rows())
                };
                let emit = |batches: Result<Vec<RecordBatch>>| {
                    let batches = batches?;
                    for b in &batches {
                        b.record_output(&metrics);
                    }
                    Ok::<_, DataFusionError>(futures::stream::iter(batches.into_iter().map(Ok)))
                };
                if pass_through {
                    let Some(batch) = input.next().await else {
                        metrics.done();
                        return None;
                    };
                    let runs = evaluate(batch).and_then(|keys| {
                        let _timer = metrics.elapsed_compute().timer();
                        Ok(vec![runs_batch(&keys, &schema)?])
                    });
                    let out = emit(runs);
                    let next = out.is_ok().then_some((input, counts, true));
                    return Some((out, next));
                }
                loop {
                    let Some(batch) = input.next().await else {
                        metrics.done();
                        return Some((emit(counts.take_batches(&schema, batch_size)), None));
                    };
                    let room = evaluate(batch).map(|keys| {
                        let _timer = metrics.elapsed_compute().timer();
                        counts.add(&keys)
                    });
                    match room {
                        Err(e) => return Some((Err(e), None)),
                        Ok(true) => {}
                        Ok(false) => {
                            let short_runs = counts.runs_are_short();
                            let out = emit(counts.take_batches(&schema, batch_size));
                            return Some((out, Some((input, counts, short_runs))));
                        }
                    }
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            emissions.try_flatten(),
        )))
    }
}

/// Rows per key since the last emission, in memory the query's pool
/// accounts for.
struct Counts {
    per_key: HashMap<i64, i64>,
    nulls: i64,
    reservation: MemoryReservation,
    /// Keys the table may hold before it is emitted.
    max_keys: usize,
    /// Rows counted since the last emission.
    rows: usize,
}

/// What one key costs in the table (key, count, and the table's slack).
const BYTES_PER_KEY: usize = 32;

impl Counts {
    fn new(reservation: MemoryReservation, max_keys: usize) -> Counts {
        Counts {
            per_key: HashMap::new(),
            nulls: 0,
            reservation,
            max_keys,
            rows: 0,
        }
    }

    /// The table is full of keys whose runs averaged under two rows:
    /// hashing them saved less than it cost.
    fn runs_are_short(&self) -> bool {
        self.per_key.len() >= self.max_keys && self.rows < 2 * self.per_key.len()
    }

    /// Counts `keys` (an array of a type stored as i64), one table lookup
    /// per run of equal keys; false when the table should be emitted (it
    /// holds `max_keys`, or the pool refuses it more memory).
    fn add(&mut self, keys: &ArrayRef) -> bool {
        self.rows += keys.len();
        let values = i64_values(keys);
        match keys.nulls().filter(|n| n.null_count() > 0) {
            None => self.add_runs(values.iter().copied()),
            Some(nulls) => {
                self.nulls += nulls.null_count() as i64;
                self.add_runs(nulls.valid_indices().map(|i| values[i]));
            }
        }
        let want = self.per_key.capacity() * BYTES_PER_KEY;
        let granted = want <= self.reservation.size()
            || self
                .reservation
                .try_grow(want - self.reservation.size())
                .is_ok();
        granted && self.per_key.len() < self.max_keys
    }

    fn add_runs(&mut self, keys: impl Iterator<Item = i64>) {
        runs(keys, |key, n| *self.per_key.entry(key).or_insert(0) += n);
    }

    /// One row per key (in no particular order, as an aggregation's
    /// groups come; nulls last): the key as the
    /// aggregation's key type, then the count in every count column —
    /// and empties the table.
    fn take_batches(&mut self, schema: &SchemaRef, batch_size: usize) -> Result<Vec<RecordBatch>> {
        let mut rows: Vec<(Option<i64>, i64)> = std::mem::take(&mut self.per_key)
            .into_iter()
            .map(|(k, n)| (Some(k), n))
            .collect();
        if self.nulls > 0 {
            rows.push((None, std::mem::take(&mut self.nulls)));
        }
        self.reservation.free();
        self.rows = 0;
        rows.chunks(batch_size.max(1))
            .map(|chunk| counts_batch(chunk, schema))
            .collect()
    }
}

/// The i64 values under an array of a type stored as i64.
fn i64_values(keys: &ArrayRef) -> ScalarBuffer<i64> {
    let data = keys.to_data();
    ScalarBuffer::<i64>::new(data.buffers()[0].clone(), data.offset(), data.len())
}

/// Calls `f` with each run of equal keys: the key and the run's length.
pub(crate) fn runs<K: PartialEq>(keys: impl Iterator<Item = K>, mut f: impl FnMut(K, i64)) {
    let mut run: Option<(K, i64)> = None;
    for k in keys {
        match &mut run {
            Some((key, n)) if *key == k => *n += 1,
            _ => {
                if let Some((key, n)) = run.replace((k, 1)) {
                    f(key, n);
                }
            }
        }
    }
    if let Some((key, n)) = run {
        f(key, n);
    }
}

/// One output row per run of equal keys (nulls included) of `keys`.
fn runs_batch(keys: &ArrayRef, schema: &SchemaRef) -> Result<RecordBatch> {
    let values = i64_values(keys);
    let mut rows: Vec<(Option<i64>, i64)> = Vec::new();
    runs(
        (0..keys.len()).map(|i| keys.is_valid(i).then(|| values[i])),
        |key, n| rows.push((key, n)),
    );
    counts_batch(&rows, schema)
}

/// `(key, count)` rows as the aggregation's output: the key as its key
/// type, the count in every count column.
fn counts_batch(rows: &[(Option<i64>, i64)], schema: &SchemaRef) -> Result<RecordBatch> {
    let keys = Int64Array::from_iter(rows.iter().map(|(k, _)| *k)).into_data();
    let keys = ArrayData::builder(schema.field(0).data_type().clone())
        .len(keys.len())
        .buffers(keys.buffers().to_vec())
        .nulls(keys.nulls().cloned())
        .build()?;
    let counts: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, n)| *n)));
    let mut columns = vec![make_array(keys)];
    columns.resize(schema.fields().len(), counts);
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringArray, TimestampNanosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Rows in runs, as parts hold them: times in a few minutes, some
    /// before 1970, some null; a text column to filter on.
    fn table(partitions: usize) -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let mut state = 7u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        let parts = (0..partitions)
            .map(|p| {
                (0..3)
                    .map(|_| {
                        let n = 5000;
                        let mut t = -200_000_000_000i64 + (p as i64) * 7_000_000_000;
                        let (mut ts, mut ss) = (Vec::new(), Vec::new());
                        for _ in 0..n {
                            t += (next() % 400_000_000) as i64;
                            ts.push((next() % 50 != 0).then_some(t));
                            ss.push((next() % 7 != 0).then(|| ["a", "b"][(next() % 2) as usize]));
                        }
                        RecordBatch::try_new(
                            schema.clone(),
                            vec![
                                Arc::new(TimestampNanosecondArray::from(ts)),
                                Arc::new(StringArray::from(ss)),
                            ],
                        )
                        .unwrap()
                    })
                    .collect()
            })
            .collect();
        MemTable::try_new(schema, parts).unwrap()
    }

    fn session(with_rule: bool, partitions: usize, memory: Option<usize>) -> SessionContext {
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = memory {
            runtime = runtime.with_memory_limit(bytes, 1.0);
        }
        let mut state = SessionStateBuilder::new()
            // Under a memory limit, small batches too: tables of 512 keys.
            .with_config(
                SessionConfig::new()
                    .with_target_partitions(partitions)
                    .with_batch_size(if memory.is_some() { 64 } else { 8192 }),
            )
            .with_runtime_env(Arc::new(runtime.build().unwrap()))
            .with_default_features();
        if with_rule {
            state = state.with_physical_optimizer_rule(Arc::new(CountRuns));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.register_table("x", Arc::new(table(3))).unwrap();
        ctx
    }

    /// The query's rows (sorted, as text) and whether its plan counts runs.
    async fn run(ctx: &SessionContext, sql: &str) -> (Vec<String>, bool) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(true)
            .to_string();
        let batches = df.collect().await.unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let mut rows: Vec<String> = text.lines().map(String::from).collect();
        rows.sort();
        (rows, shown.contains("CountRunsExec"))
    }

    #[tokio::test]
    async fn counts_per_key_are_the_hash_aggregations_counts() {
        let counted = [
            "SELECT date_trunc('minute', t) AS m, count(*) AS c FROM x GROUP BY m",
            "SELECT date_trunc('second', t) AS m, count(1), count(*) FROM x WHERE s = 'a' GROUP BY m",
            "SELECT date_bin(INTERVAL '5 seconds', t) AS m, count(*) FROM x GROUP BY m ORDER BY m",
            "SELECT CAST(t AS BIGINT) / 1000000000 * 1000000000 AS b, count(*) FROM x GROUP BY b",
            "SELECT t, count(*) FROM x GROUP BY t",
            "SELECT date_trunc('minute', t) AS m, count(*) AS c FROM x GROUP BY m ORDER BY c DESC, m LIMIT 3",
        ];
        let not_counted = [
            "SELECT date_trunc('minute', t) AS m, count(s) FROM x GROUP BY m",
            "SELECT date_trunc('minute', t) AS m, count(DISTINCT s) FROM x GROUP BY m",
            "SELECT date_trunc('minute', t) AS m, count(*) FILTER (WHERE s = 'b') FROM x GROUP BY m",
            "SELECT date_trunc('minute', t) AS m, count(*), max(s) FROM x GROUP BY m",
            "SELECT date_trunc('minute', t) AS m, s, count(*) FROM x GROUP BY m, s",
            "SELECT s, count(*) FROM x GROUP BY s",
            "SELECT count(*) FROM x",
            "SELECT DISTINCT date_trunc('minute', t) FROM x",
        ];
        for partitions in [1, 4] {
            let plain = session(false, partitions, None);
            let runs = session(true, partitions, None);
            for (sql, expect) in counted
                .iter()
                .map(|q| (q, true))
                .chain(not_counted.iter().map(|q| (q, false)))
            {
                let (want, used) = run(&plain, sql).await;
                assert!(!used);
                let (got, used) = run(&runs, sql).await;
                // One partition may plan a single aggregation, left as is.
                if partitions > 1 {
                    assert_eq!(used, expect, "{sql} ({partitions} partitions)");
                }
                assert_eq!(got, want, "{sql} ({partitions} partitions)");
                assert!(want.len() > 4, "{sql}: the test counts something");
            }
        }
    }

    #[tokio::test]
    async fn more_keys_than_a_table_holds_are_emitted_and_counted_above() {
        // 45 k distinct times, tables of 512 keys (the pool refusing
        // memory is the unit test below: DataFusion's final aggregation
        // above needs the pool too).
        let sql = "SELECT t, count(*) FROM x GROUP BY t";
        let (want, _) = run(&session(false, 4, None), sql).await;
        let (got, used) = run(&session(true, 4, Some(64 << 20)), sql).await;
        assert!(used);
        assert_eq!(got, want);
    }

    fn counts(pool_bytes: usize, max_keys: usize) -> Counts {
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        let pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool> =
            Arc::new(GreedyMemoryPool::new(pool_bytes));
        Counts::new(MemoryConsumer::new("test").register(&pool), max_keys)
    }

    fn keys(values: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    fn rows(batches: &[RecordBatch]) -> Vec<(Option<i64>, i64)> {
        batches
            .iter()
            .flat_map(|b| {
                let k = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
                (0..b.num_rows())
                    .map(|i| (k.is_valid(i).then(|| k.value(i)), n.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A key and one count column, as the aggregation's output.
    fn key_and_count() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("n", DataType::Int64, false),
        ]))
    }

    #[test]
    fn a_full_table_asks_to_be_emitted_and_starts_empty() {
        let schema = key_and_count();
        let mut c = counts(1 << 20, 4);
        assert!(c.add(&keys(&[Some(1), Some(1), Some(2), None, Some(3)])));
        assert!(!c.add(&keys(&[Some(4), Some(5), Some(1)])));
        let out = c.take_batches(&schema, 2).unwrap();
        assert_eq!(out.len(), 3);
        let mut out = rows(&out);
        out[..5].sort();
        assert_eq!(
            out,
            [
                (Some(1), 3),
                (Some(2), 1),
                (Some(3), 1),
                (Some(4), 1),
                (Some(5), 1),
                (None, 1)
            ]
        );
        assert!(c.add(&keys(&[Some(7)])));
        assert_eq!(rows(&c.take_batches(&schema, 8).unwrap()), [(Some(7), 1)]);
        assert!(!c.runs_are_short(), "an emptied table");
        // A pool with no room: every batch is counted, then emitted.
        let mut c = counts(0, 4);
        assert!(!c.add(&keys(&[Some(9), Some(9)])));
        assert_eq!(rows(&c.take_batches(&schema, 8).unwrap()), [(Some(9), 2)]);
    }

    #[test]
    fn short_runs_are_told_apart_and_passed_through_run_by_run() {
        let schema = key_and_count();
        // Full after 5 rows of 4 keys: runs average 1.25 rows.
        let mut c = counts(1 << 20, 4);
        assert!(!c.add(&keys(&[Some(1), Some(2), Some(2), Some(3), Some(4)])));
        assert!(c.runs_are_short());
        // Full after 8 rows of 4 keys: runs of 2 are worth the table.
        let mut c = counts(1 << 20, 4);
        assert!(c.add(&keys(&[Some(1), Some(1), Some(2), Some(2)])));
        assert!(!c.add(&keys(&[Some(3), Some(3), Some(4), Some(4)])));
        assert!(!c.runs_are_short());
        // The pool refusing memory is not a sign of short runs.
        let mut c = counts(0, 4);
        assert!(!c.add(&keys(&[Some(9)])));
        assert!(!c.runs_are_short());

        let out = runs_batch(
            &keys(&[Some(5), Some(5), None, None, Some(5), Some(6)]),
            &schema,
        )
        .unwrap();
        assert_eq!(
            rows(&[out]),
            [(Some(5), 2), (None, 2), (Some(5), 1), (Some(6), 1)]
        );
    }
}

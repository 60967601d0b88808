//! `approx_percentile_cont` with a groups accumulator, for SQL mode
//! (`otelhouse sql`, the API's SQL queries: p95 latency per service and
//! the like; the API's own quantile measures are exact and do not use it).
//!
//! DataFusion's own has none, so its hash aggregation feeds each group
//! through a per-group accumulator: per input batch and group, a `take` of
//! the group's rows, an Arrow sort and a t-digest merge that allocates new
//! centroids (Q6, p95 of an hour's spans by service, spent as long in that
//! as in reading the spans). This one keeps each group's values in a buffer
//! and folds them into the group's t-digest 8,192 at a time. It is
//! DataFusion's function in every other respect (signature, `WITHIN GROUP`,
//! return type, state, the same `TDigest`), so partial states from either
//! mix, and a group of at most 8,192 values gets the digest DataFusion
//! would build from them in one batch.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, new_empty_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::functions_aggregate::approx_percentile_cont::ApproxPercentileCont;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    Signature,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion_functions_aggregate_common::tdigest::{DEFAULT_MAX_SIZE, TDigest};

/// Values a group buffers before they are folded into its digest.
const FOLD_EVERY: usize = 8192;

/// The function, to register in place of DataFusion's.
pub fn udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(ApproxPercentile::default())
}

#[derive(Debug, Default, PartialEq, Eq, Hash)]
struct ApproxPercentile {
    inner: ApproxPercentileCont,
}

impl AggregateUDFImpl for ApproxPercentile {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.accumulator(args)
    }

    fn supports_within_group_clause(&self) -> bool {
        self.inner.supports_within_group_clause()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        // DataFusion's own accumulator checks the arguments (a constant
        // percentile in [0, 1], a constant digest size).
        self.inner.accumulator(args.clone())?;
        let constant = |i: usize| {
            args.exprs
                .get(i)
                .and_then(|e| e.downcast_ref::<Literal>())
                .map(|l| l.value().clone())
        };
        let Some(p) = constant(1).and_then(|v| f64_of(&v)) else {
            return plan_err!("approx_percentile_cont needs a constant percentile");
        };
        // `WITHIN GROUP (ORDER BY v DESC)` asks for the percentile from the top.
        let descending = args.order_bys.first().is_some_and(|o| o.options.descending);
        let max_size = match constant(2) {
            None => DEFAULT_MAX_SIZE,
            Some(v) => f64_of(&v).map(|n| n as usize).unwrap_or(DEFAULT_MAX_SIZE),
        };
        Ok(Box::new(Groups {
            percentile: if descending { 1.0 - p } else { p },
            max_size,
            return_type: args.return_field.data_type().clone(),
            digests: Vec::new(),
            buffers: Vec::new(),
        }))
    }
}

fn f64_of(v: &ScalarValue) -> Option<f64> {
    match v.cast_to(&DataType::Float64).ok()? {
        ScalarValue::Float64(Some(x)) => Some(x),
        _ => None,
    }
}

/// Per group, a t-digest and the values not yet folded into it.
struct Groups {
    percentile: f64,
    max_size: usize,
    return_type: DataType,
    digests: Vec<TDigest>,
    buffers: Vec<Vec<f64>>,
}

impl Groups {
    fn grow(&mut self, total_num_groups: usize) {
        self.digests
            .resize_with(total_num_groups, || TDigest::new(self.max_size));
        self.buffers.resize_with(total_num_groups, Vec::new);
    }

    fn fold(&mut self, group: usize) {
        let values = &mut self.buffers[group];
        if values.is_empty() {
            return;
        }
        values.sort_unstable_by(f64::total_cmp);
        self.digests[group] = self.digests[group].merge_sorted_f64(values);
        values.clear();
    }

    /// The digests of the groups `emit_to` asks for, every value folded in.
    fn take(&mut self, emit_to: EmitTo) -> Vec<TDigest> {
        let n = match emit_to {
            EmitTo::All => self.digests.len(),
            EmitTo::First(n) => n,
        };
        for g in 0..n {
            self.fold(g);
        }
        emit_to.take_needed(&mut self.buffers);
        emit_to.take_needed(&mut self.digests)
    }
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let values = cast(&values[0], &DataType::Float64)?;
        let values = values.as_primitive::<Float64Type>();
        for (row, &group) in group_indices.iter().enumerate() {
            if values.is_null(row) || opt_filter.is_some_and(|f| !f.value(row) || f.is_null(row)) {
                continue;
            }
            let buffer = &mut self.buffers[group];
            buffer.push(values.value(row));
            if buffer.len() >= FOLD_EVERY {
                self.fold(group);
            }
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        for (row, &group) in group_indices.iter().enumerate() {
            let state = values
                .iter()
                .map(|a| ScalarValue::try_from_array(a, row))
                .collect::<Result<Vec<_>>>()?;
            let other = TDigest::from_scalar_state(&state);
            self.digests[group] = TDigest::merge_digests([&self.digests[group], &other]);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let values = self.take(emit_to).into_iter().map(|d| {
            if d.count() == 0.0 {
                return ScalarValue::try_from(&self.return_type);
            }
            ScalarValue::Float64(Some(d.estimate_quantile(self.percentile)))
                .cast_to(&self.return_type)
        });
        let values = values.collect::<Result<Vec<_>>>()?;
        if values.is_empty() {
            return Ok(new_empty_array(&self.return_type));
        }
        ScalarValue::iter_to_array(values)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let states: Vec<Vec<ScalarValue>> = self
            .take(emit_to)
            .iter()
            .map(TDigest::to_scalar_state)
            .collect();
        // An empty digest's state gives the fields' types when no group is
        // emitted.
        let empty = TDigest::new(self.max_size).to_scalar_state();
        (0..empty.len())
            .map(|f| match states.is_empty() {
                true => empty[f].to_array_of_size(0),
                false => ScalarValue::iter_to_array(states.iter().map(|s| s[f].clone())),
            })
            .collect()
    }

    fn convert_to_state(
        &self,
        _values: &[ArrayRef],
        _opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        datafusion::common::not_impl_err!("approx_percentile_cont: convert_to_state")
    }

    fn size(&self) -> usize {
        self.buffers
            .iter()
            .map(|b| b.capacity() * size_of::<f64>())
            .sum::<usize>()
            + self.digests.iter().map(TDigest::size).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use std::sync::Arc;

    /// `per_group` values (0..per_group, shuffled, every 10th null) for
    /// each of groups a, b, c, over `partitions` partitions.
    fn session(ours: bool, per_group: i64, partitions: usize) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, true),
        ]));
        let mut rows: Vec<(&str, Option<i64>)> = Vec::new();
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            for v in 0..per_group {
                let v = (v * 7919 + i as i64) % per_group * (i as i64 + 1);
                rows.push((k, (v % 10 != 3).then_some(v)));
            }
        }
        let chunk = rows.len().div_ceil(partitions * 3);
        let batches: Vec<RecordBatch> = rows
            .chunks(chunk)
            .map(|c| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(StringArray::from_iter_values(c.iter().map(|r| r.0))),
                        Arc::new(Int64Array::from_iter(c.iter().map(|r| r.1))),
                    ],
                )
                .unwrap()
            })
            .collect();
        let parts = batches.chunks(3).map(|b| b.to_vec()).collect();
        let ctx = SessionContext::new_with_config(
            SessionConfig::new().with_target_partitions(partitions),
        );
        if ours {
            ctx.register_udaf(udaf());
        }
        ctx.register_table("x", Arc::new(MemTable::try_new(schema, parts).unwrap()))
            .unwrap();
        ctx
    }

    async fn column(ctx: &SessionContext, sql: &str) -> Vec<Option<f64>> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let c = cast(b.column(b.num_columns() - 1), &DataType::Float64).unwrap();
                let c: &Float64Array = c.as_primitive();
                c.iter().collect::<Vec<_>>()
            })
            .collect()
    }

    const QUERIES: [&str; 5] = [
        "SELECT k, approx_percentile_cont(v, 0.95) FROM x GROUP BY k ORDER BY k",
        "SELECT k, approx_percentile_cont(v, 0.5, 200) FROM x GROUP BY k ORDER BY k",
        "SELECT k, approx_percentile_cont(0.9) WITHIN GROUP (ORDER BY v DESC) FROM x GROUP BY k ORDER BY k",
        "SELECT k, approx_percentile_cont(v, 0.99) FILTER (WHERE v > 20) FROM x GROUP BY k ORDER BY k",
        "SELECT k, approx_percentile_cont(v, 0.95) FROM x WHERE v < 0 GROUP BY k ORDER BY k",
    ];

    #[tokio::test]
    async fn small_groups_get_datafusions_exact_answers() {
        // At most the digest's size per group: the digest holds every value.
        for partitions in [1, 3] {
            let (theirs, ours) = (
                session(false, 90, partitions),
                session(true, 90, partitions),
            );
            for sql in QUERIES {
                assert_eq!(
                    column(&ours, sql).await,
                    column(&theirs, sql).await,
                    "{sql}"
                );
            }
        }
    }

    #[tokio::test]
    async fn large_groups_stay_within_the_digests_error() {
        // 50,000 values per group, several folds each: as close to the true
        // percentile as DataFusion's own (within 0.5 % of the range).
        let per_group = 50_000;
        for partitions in [1, 3] {
            let (theirs, ours) = (
                session(false, per_group, partitions),
                session(true, per_group, partitions),
            );
            let sql = QUERIES[0];
            let (theirs, ours) = (column(&theirs, sql).await, column(&ours, sql).await);
            assert_eq!(ours.len(), 3);
            for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
                let exact = 0.95 * (per_group as f64) * (i as f64 + 1.0);
                let tolerance = 0.005 * per_group as f64 * (i as f64 + 1.0);
                assert!(
                    (o.unwrap() - exact).abs() < tolerance,
                    "ours {o:?}, exact {exact}"
                );
                assert!((t.unwrap() - exact).abs() < tolerance, "theirs {t:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_percentile_that_is_not_a_constant_is_refused() {
        let ctx = session(true, 10, 1);
        let err = ctx
            .sql("SELECT k, approx_percentile_cont(v, v / 100.0) FROM x GROUP BY k")
            .await;
        let err = match err {
            Ok(df) => df.collect().await.unwrap_err(),
            Err(e) => e,
        };
        assert!(
            err.to_string().to_lowercase().contains("percentile"),
            "{err}"
        );
    }
}

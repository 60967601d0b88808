//! Arrow batches → JSON rows keyed by column name, with the API's value
//! forms: timestamps as RFC 3339 with nanoseconds and `Z`, maps as objects,
//! nested columns as arrays.

use arrow::array::{
    Array, AsArray, BooleanArray, Float64Array, Int32Array, ListArray, MapArray, StringArray,
    TimestampNanosecondArray, UInt8Array, UInt32Array, UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Value};

pub type Row = Map<String, Value>;

pub fn format_timestamp(nanos: i64) -> String {
    DateTime::from_timestamp_nanos(nanos).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn value(array: &dyn Array, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Value::String(
            array
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(i)
                .to_owned(),
        ),
        DataType::UInt8 => array
            .as_any()
            .downcast_ref::<UInt8Array>()
            .unwrap()
            .value(i)
            .into(),
        DataType::UInt32 => array
            .as_any()
            .downcast_ref::<UInt32Array>()
            .unwrap()
            .value(i)
            .into(),
        DataType::UInt64 => array
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap()
            .value(i)
            .into(),
        DataType::Int32 => array
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap()
            .value(i)
            .into(),
        DataType::Int64 => array
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(i)
            .into(),
        DataType::Float64 => {
            let v = array
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .value(i);
            serde_json::Number::from_f64(v)
                .map_or_else(|| Value::String(v.to_string()), Value::Number)
        }
        DataType::Boolean => array
            .as_any()
            .downcast_ref::<BooleanArray>()
            .unwrap()
            .value(i)
            .into(),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Value::String(format_timestamp(
            array
                .as_any()
                .downcast_ref::<TimestampNanosecondArray>()
                .unwrap()
                .value(i),
        )),
        // SQL mode may produce other units: the same form, via nanoseconds.
        DataType::Timestamp(_, tz) => {
            match cast(
                &array.slice(i, 1),
                &DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
            ) {
                Ok(ns) => value(ns.as_ref(), 0),
                Err(_) => display(array, i),
            }
        }
        DataType::Utf8View | DataType::LargeUtf8 => match cast(&array.slice(i, 1), &DataType::Utf8)
        {
            Ok(s) => value(s.as_ref(), 0),
            Err(_) => display(array, i),
        },
        DataType::Map(_, _) => {
            let entries = array.as_any().downcast_ref::<MapArray>().unwrap().value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            Value::Object(
                (0..entries.len())
                    .map(|j| {
                        let key = match value(keys.as_ref(), j) {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        (key, value(values, j))
                    })
                    .collect(),
            )
        }
        DataType::List(_) => {
            let items = array.as_any().downcast_ref::<ListArray>().unwrap().value(i);
            Value::Array((0..items.len()).map(|j| value(&items, j)).collect())
        }
        DataType::Int8 | DataType::Int16 | DataType::UInt16 => {
            match cast(&array.slice(i, 1), &DataType::Int64) {
                Ok(n) => value(n.as_ref(), 0),
                Err(_) => display(array, i),
            }
        }
        DataType::Float16 | DataType::Float32 => match cast(&array.slice(i, 1), &DataType::Float64)
        {
            Ok(n) => value(n.as_ref(), 0),
            Err(_) => display(array, i),
        },
        // Anything else SQL mode can produce: Arrow's own text form.
        _ => display(array, i),
    }
}

fn display(array: &dyn Array, i: usize) -> Value {
    match ArrayFormatter::try_new(array, &FormatOptions::default()) {
        Ok(f) => Value::String(f.value(i).to_string()),
        Err(e) => Value::String(format!("<{}: {e}>", array.data_type())),
    }
}

/// Every row of the batches, in order.
pub fn to_rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut rows = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
    for batch in batches {
        let schema = batch.schema();
        for i in 0..batch.num_rows() {
            rows.push(
                schema
                    .fields()
                    .iter()
                    .zip(batch.columns())
                    .map(|(f, col)| (f.name().clone(), value(col.as_ref(), i)))
                    .collect(),
            );
        }
    }
    rows
}

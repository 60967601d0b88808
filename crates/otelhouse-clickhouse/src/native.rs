//! Arrow batches in ClickHouse's Native format, the format inserts use: of
//! RowBinary, Native and ArrowStream, ClickHouse parses Native fastest
//! (BENCHMARKS.md, "Shipping to ClickHouse"), and it is columnar like our
//! batches, so encoding is mostly copying. Hand-written: the `clickhouse`
//! crate speaks RowBinary only, and no crate writes Native from Arrow.
//!
//! A block (as `NativeWriter` writes it for HTTP clients, revision 0):
//! varuint columns, varuint rows, then per column its name, its type name
//! and its data. Data: fixed-width values little-endian; String as varuint
//! length + bytes per row; Array as cumulative UInt64 offsets, then the
//! elements; Map as Array(Tuple(key, value)), a tuple's columns one after
//! the other. LowCardinality columns are sent as plain String and
//! converted by ClickHouse (`input_format_native_allow_types_conversion`,
//! on by default). Columns are not Nullable in ClickStack's tables: an
//! Arrow null is sent as the type's default.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, GenericListArray, MapArray, StringArray,
};
use arrow::datatypes::{
    DataType, Float64Type, Int32Type, Int64Type, TimestampNanosecondType, UInt8Type, UInt32Type,
    UInt64Type,
};
use arrow::record_batch::RecordBatch;

use crate::client::ClickHouseError;

fn varuint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    varuint(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// The type name a column is sent as.
fn type_name(dt: &DataType) -> Result<String, ClickHouseError> {
    Ok(match dt {
        DataType::Timestamp(..) => "DateTime64(9)".into(),
        DataType::Utf8 => "String".into(),
        DataType::UInt8 => "UInt8".into(),
        DataType::UInt32 => "UInt32".into(),
        DataType::UInt64 => "UInt64".into(),
        DataType::Int32 => "Int32".into(),
        DataType::Int64 => "Int64".into(),
        DataType::Float64 => "Float64".into(),
        DataType::Boolean => "Bool".into(),
        DataType::Map(..) => "Map(String, String)".into(),
        DataType::List(item) => format!("Array({})", type_name(item.data_type())?),
        other => {
            return Err(ClickHouseError::Config(format!(
                "no Native encoding for Arrow type {other}"
            )));
        }
    })
}

/// Fixed-width values, nulls as 0.
fn fixed<T: arrow::datatypes::ArrowPrimitiveType>(
    out: &mut Vec<u8>,
    a: &dyn Array,
    le: impl Fn(T::Native) -> [u8; 8],
    width: usize,
) {
    let a = a.as_primitive::<T>();
    out.reserve(a.len() * width);
    if a.null_count() == 0 {
        for v in a.values().iter() {
            out.extend_from_slice(&le(*v)[..width]);
        }
    } else {
        for i in 0..a.len() {
            let v = if a.is_null(i) {
                T::Native::default()
            } else {
                a.value(i)
            };
            out.extend_from_slice(&le(v)[..width]);
        }
    }
}

fn strings(out: &mut Vec<u8>, a: &StringArray) {
    out.reserve(a.value_data().len() + a.len());
    for i in 0..a.len() {
        let s = if a.is_null(i) { "" } else { a.value(i) };
        string(out, s.as_bytes());
    }
}

/// Cumulative element counts as UInt64, one per row (a null row: empty).
fn offsets(
    out: &mut Vec<u8>,
    offs: &[i32],
    nulls: Option<&arrow::buffer::NullBuffer>,
) -> Vec<(usize, usize)> {
    let mut total = 0u64;
    let mut ranges = Vec::with_capacity(offs.len() - 1);
    for i in 0..offs.len() - 1 {
        let (a, b) = (offs[i] as usize, offs[i + 1] as usize);
        if nulls.is_some_and(|n| n.is_null(i)) {
            ranges.push((a, a));
        } else {
            total += (b - a) as u64;
            ranges.push((a, b));
        }
        out.extend_from_slice(&total.to_le_bytes());
    }
    ranges
}

/// The elements of `ranges` of `values`, as one array.
fn take_ranges(values: &ArrayRef, ranges: &[(usize, usize)]) -> Result<ArrayRef, ClickHouseError> {
    // Contiguous (the usual case: no null rows): a zero-copy slice.
    let contiguous = ranges.windows(2).all(|w| w[0].1 == w[1].0);
    if contiguous {
        let (start, end) = (
            ranges.first().map_or(0, |r| r.0),
            ranges.last().map_or(0, |r| r.1),
        );
        return Ok(values.slice(start, end - start));
    }
    let idx: Vec<u32> = ranges
        .iter()
        .flat_map(|(a, b)| *a as u32..*b as u32)
        .collect();
    arrow::compute::take(values, &arrow::array::UInt32Array::from(idx), None)
        .map_err(|e| ClickHouseError::Config(e.to_string()))
}

fn column(out: &mut Vec<u8>, a: &dyn Array) -> Result<(), ClickHouseError> {
    match a.data_type() {
        DataType::Timestamp(..) => fixed::<TimestampNanosecondType>(out, a, |v| v.to_le_bytes(), 8),
        DataType::Int64 => fixed::<Int64Type>(out, a, |v| v.to_le_bytes(), 8),
        DataType::UInt64 => fixed::<UInt64Type>(out, a, |v| v.to_le_bytes(), 8),
        DataType::Float64 => fixed::<Float64Type>(out, a, |v| v.to_le_bytes(), 8),
        DataType::UInt32 => fixed::<UInt32Type>(out, a, |v| (v as u64).to_le_bytes(), 4),
        DataType::Int32 => fixed::<Int32Type>(out, a, |v| (v as i64).to_le_bytes(), 4),
        DataType::UInt8 => fixed::<UInt8Type>(out, a, |v| (v as u64).to_le_bytes(), 1),
        DataType::Boolean => {
            let b: &BooleanArray = a.as_boolean();
            out.extend((0..b.len()).map(|i| (b.is_valid(i) && b.value(i)) as u8));
        }
        DataType::Utf8 => strings(out, a.as_string::<i32>()),
        DataType::Map(..) => {
            let m: &MapArray = a.as_map();
            let ranges = offsets(out, m.value_offsets(), m.nulls());
            let keys = take_ranges(m.keys(), &ranges)?;
            let values = take_ranges(m.values(), &ranges)?;
            column(out, keys.as_ref())?;
            column(out, values.as_ref())?;
        }
        DataType::List(_) => {
            let l: &GenericListArray<i32> = a.as_list();
            let ranges = offsets(out, l.value_offsets(), l.nulls());
            let items = take_ranges(l.values(), &ranges)?;
            column(out, items.as_ref())?;
        }
        other => {
            return Err(ClickHouseError::Config(format!(
                "no Native encoding for Arrow type {other}"
            )));
        }
    }
    Ok(())
}

/// The batches as Native blocks, one per batch.
pub fn native(batches: &[RecordBatch]) -> Result<Vec<u8>, ClickHouseError> {
    let size: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let mut out = Vec::with_capacity(size);
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        varuint(&mut out, b.num_columns() as u64);
        varuint(&mut out, b.num_rows() as u64);
        for (field, col) in b.schema().fields().iter().zip(b.columns()) {
            string(&mut out, field.name().as_bytes());
            string(&mut out, type_name(field.data_type())?.as_bytes());
            column(&mut out, col.as_ref())?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varuints_are_leb128() {
        let mut out = Vec::new();
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            varuint(&mut out, v);
        }
        assert_eq!(
            out,
            [
                0, 1, 127, 0x80, 1, 0xac, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                1
            ]
        );
    }

    #[test]
    fn a_block_has_names_types_and_columnar_data() {
        use std::sync::Arc;
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("a", DataType::UInt8, false),
            arrow::datatypes::Field::new("s", DataType::Utf8, true),
        ]));
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow::array::UInt8Array::from(vec![7, 9])),
                Arc::new(StringArray::from(vec![Some("hi"), None])),
            ],
        )
        .unwrap();
        let out = native(&[b]).unwrap();
        let mut want = vec![2, 2];
        want.extend([1, b'a', 5]);
        want.extend(b"UInt8");
        want.extend([7, 9]);
        want.extend([1, b's', 6]);
        want.extend(b"String");
        want.extend([2, b'h', b'i', 0]);
        assert_eq!(out, want);
    }
}

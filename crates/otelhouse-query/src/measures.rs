//! Chart measures as users write them: `count`, `sum(field)`, `avg(field)`,
//! `min(field)`, `max(field)`, `p50(field)` … `p99(field)`,
//! `count_distinct(field)`.

use otelhouse_storage::AggFunc;

use crate::{Error, bad};

/// A measure's function and the field name it applies to.
pub fn parse(text: &str) -> Result<(AggFunc, Option<String>), Error> {
    let text = text.trim();
    let (name, arg) = match text.split_once('(') {
        Some((name, rest)) => {
            let arg = rest
                .strip_suffix(')')
                .ok_or_else(|| bad(format!("measure `{text}`: missing `)`")))?
                .trim();
            (name.trim(), (!arg.is_empty()).then(|| arg.to_string()))
        }
        None => (text, None),
    };
    let func = match name.to_ascii_lowercase().as_str() {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "avg" => AggFunc::Avg,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "p50" | "median" => AggFunc::Quantile(0.5),
        "p90" => AggFunc::Quantile(0.9),
        "p95" => AggFunc::Quantile(0.95),
        "p99" => AggFunc::Quantile(0.99),
        "count_distinct" | "uniq" => AggFunc::CountDistinct,
        other => {
            return Err(bad(format!(
                "unknown measure `{other}`; use count, sum, avg, min, max, p50, p90, p95, p99 or count_distinct"
            )));
        }
    };
    if func != AggFunc::Count && arg.is_none() {
        return Err(bad(format!(
            "measure `{name}` needs a field, e.g. {name}(Duration)"
        )));
    }
    Ok((func, arg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_parse_with_clear_errors() {
        assert_eq!(parse("count").unwrap(), (AggFunc::Count, None));
        assert_eq!(
            parse(" p95( duration ) ").unwrap(),
            (AggFunc::Quantile(0.95), Some("duration".into()))
        );
        assert_eq!(
            parse("count_distinct(TraceId)").unwrap(),
            (AggFunc::CountDistinct, Some("TraceId".into()))
        );
        assert!(
            parse("avg")
                .unwrap_err()
                .to_string()
                .contains("needs a field")
        );
        assert!(
            parse("p42(x)")
                .unwrap_err()
                .to_string()
                .contains("unknown measure")
        );
        assert!(
            parse("sum(x")
                .unwrap_err()
                .to_string()
                .contains("missing `)`")
        );
    }
}

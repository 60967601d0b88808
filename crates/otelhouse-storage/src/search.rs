//! A parsed search (`otelhouse_search::Query`) as a DataFusion filter for the
//! embedded store. User values only ever become literals in the logical
//! plan (DataFusion's bound values); field names come from the catalogue.
//!
//! Every term is made two-valued (`coalesce(term, false)`) so that `NOT`
//! of a condition on a missing attribute matches, as in Lucene, instead of
//! vanishing in SQL's three-valued logic.

use arrow::datatypes::DataType;
use datafusion::functions::expr_fn::coalesce;
use datafusion::functions::math::expr_fn::isnan;
use datafusion::functions::string::expr_fn::{contains, lower};
use datafusion::functions_nested::expr_fn::{array_element, map_extract};
use datafusion::logical_expr::{Expr, cast, try_cast, when};
use datafusion::prelude::{ident, lit};
use datafusion::scalar::ScalarValue;
use otelhouse_search::{Bound, CompareOp, Condition, Field, Query};

use crate::has_token::has_token;

/// The filter selecting the rows `q` matches.
pub fn filter(q: &Query) -> Expr {
    match q {
        Query::All => lit(true),
        Query::And { of } => balanced(of.iter().map(filter).collect(), Expr::and, lit(true)),
        Query::Or { of } => balanced(of.iter().map(filter).collect(), Expr::or, lit(false)),
        Query::Not { query } => !filter(query),
        Query::Term(t) => coalesce(vec![condition(&t.field, &t.condition), lit(false)]),
    }
}

/// `a op b op c …` as a balanced tree: a long query (`x x x …`, thousands
/// of terms) must not become a chain deep enough to exhaust the stack in
/// the planner's recursion.
fn balanced(mut items: Vec<Expr>, op: fn(Expr, Expr) -> Expr, empty: Expr) -> Expr {
    if items.is_empty() {
        return empty;
    }
    while items.len() > 1 {
        let mut next = Vec::with_capacity(items.len().div_ceil(2));
        let mut it = items.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => op(a, b),
                None => a,
            });
        }
        items = next;
    }
    items.pop().expect("one left")
}

/// The field's value as text (attributes: the first map that has the key).
pub(crate) fn text(field: &Field) -> Expr {
    match field {
        Field::Column { name, numeric } => {
            if *numeric {
                cast(ident(*name), DataType::Utf8)
            } else {
                ident(*name)
            }
        }
        Field::Attribute { key, maps } => {
            let lookups = maps
                .iter()
                .map(|m| array_element(map_extract(ident(*m), lit(key.as_str())), lit(1i64)))
                .collect();
            coalesce(lookups)
        }
    }
}

/// The field's value as a number; NULL (no match) when it is not one,
/// NaN included (Arrow orders NaN above every number; ClickHouse, as
/// IEEE, compares it with nothing).
pub(crate) fn number(field: &Field) -> Expr {
    let n = match field {
        Field::Column { name, .. } => try_cast(ident(*name), DataType::Float64),
        Field::Attribute { .. } => try_cast(text(field), DataType::Float64),
    };
    when(isnan(n.clone()), lit(ScalarValue::Float64(None)))
        .otherwise(n)
        .expect("a CASE with a branch")
}

fn condition(field: &Field, c: &Condition) -> Expr {
    match c {
        Condition::Token { tokens, substring } => {
            let value = text(field);
            // has_token, not a regex: the token index recognises it.
            let mut e = tokens
                .iter()
                .map(|t| has_token(value.clone(), t))
                .reduce(Expr::and)
                .unwrap_or(lit(true));
            if let Some(sub) = substring {
                e = e.and(contains(lower(value), lit(sub.to_lowercase())));
            }
            e
        }
        Condition::Contains { value } => contains(lower(text(field)), lit(value.to_lowercase())),
        Condition::Equals { value } => match field {
            Field::Column { numeric: true, .. } => match value.parse::<f64>() {
                Ok(v) => number(field).eq(lit(v)),
                Err(_) => lit(false),
            },
            _ => text(field).eq(lit(value.as_str())),
        },
        Condition::Exists => {
            let v = text(field);
            v.clone().is_not_null().and(v.not_eq(lit("")))
        }
        Condition::Compare { op, value } => compare(number(field), *op, *value),
        Condition::Range { low, high } => {
            let n = number(field);
            let side = |b: &Option<Bound>, incl: CompareOp, excl: CompareOp| {
                b.map(|b| compare(n.clone(), if b.inclusive { incl } else { excl }, b.value))
            };
            [
                side(low, CompareOp::Ge, CompareOp::Gt),
                side(high, CompareOp::Le, CompareOp::Lt),
            ]
            .into_iter()
            .flatten()
            .reduce(Expr::and)
            .unwrap_or(n.is_not_null())
        }
        Condition::Bool { value } => lower(text(field)).eq(lit(value.to_string())),
    }
}

fn compare(n: Expr, op: CompareOp, v: f64) -> Expr {
    match op {
        CompareOp::Gt => n.gt(lit(v)),
        CompareOp::Ge => n.gt_eq(lit(v)),
        CompareOp::Lt => n.lt(lit(v)),
        CompareOp::Le => n.lt_eq(lit(v)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, ArrayRef, Int32Array, MapBuilder, StringArray, StringBuilder};
    use arrow::record_batch::RecordBatch;
    use datafusion::prelude::SessionContext;
    use otelhouse_schema::Signal;
    use otelhouse_search::{Catalog, parse};

    use super::*;

    /// Rows: (Body, ServiceName, SeverityNumber, LogAttributes, ResourceAttributes).
    type Fixture<'a> = (
        &'a str,
        &'a str,
        i32,
        &'a [(&'a str, &'a str)],
        &'a [(&'a str, &'a str)],
    );

    const ROWS: &[Fixture] = &[
        (
            "connection timeout after 30s",
            "api",
            17,
            &[("http.status_code", "504")],
            &[("host.name", "web-1")],
        ),
        (
            "Timeout reached",
            "web",
            13,
            &[("http.status_code", "200")],
            &[],
        ),
        (
            "timeouts are configured",
            "api",
            9,
            &[],
            &[("http.status_code", "500")],
        ),
        ("conn-reset by peer", "db", 17, &[("user.id", "u-1")], &[]),
        (
            "GET http://example.com:8080/x ok",
            "web",
            9,
            &[("cache.hit", "true")],
            &[],
        ),
        ("'; DROP TABLE otel_logs; --", "api", 5, &[], &[]),
        ("köln straße ünïcode", "web", 9, &[], &[]),
    ];

    fn map(rows: impl Iterator<Item = &'static [(&'static str, &'static str)]>) -> ArrayRef {
        let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for kvs in rows {
            for (k, v) in kvs {
                b.keys().append_value(k);
                b.values().append_value(v);
            }
            b.append(true).unwrap();
        }
        Arc::new(b.finish())
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            (
                "Body",
                Arc::new(StringArray::from_iter_values(ROWS.iter().map(|r| r.0))) as ArrayRef,
            ),
            (
                "ServiceName",
                Arc::new(StringArray::from_iter_values(ROWS.iter().map(|r| r.1))),
            ),
            (
                "SeverityNumber",
                Arc::new(Int32Array::from_iter_values(ROWS.iter().map(|r| r.2))),
            ),
            ("LogAttributes", map(ROWS.iter().map(|r| r.3))),
            ("ResourceAttributes", map(ROWS.iter().map(|r| r.4))),
        ])
        .unwrap()
    }

    /// The row numbers (1-based) a search matches.
    async fn matches(q: &str) -> Vec<usize> {
        let catalog = Catalog::new(
            Signal::Logs,
            ["http.status_code", "user.id", "cache.hit", "host.name"].map(String::from),
        );
        let query = parse(q, &catalog).unwrap_or_else(|e| panic!("{q}: {e}"));
        let ctx = SessionContext::new();
        let df = ctx
            .read_batch(batch())
            .unwrap()
            .filter(filter(&query))
            .unwrap();
        let bodies: Vec<String> = df
            .select_columns(&["Body"])
            .unwrap()
            .collect()
            .await
            .unwrap()
            .iter()
            .flat_map(|b| {
                let a = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .clone();
                (0..a.len()).map(move |i| a.value(i).to_string())
            })
            .collect();
        bodies
            .iter()
            .map(|body| ROWS.iter().position(|r| r.0 == body).unwrap() + 1)
            .collect()
    }

    #[tokio::test]
    async fn terms_match_tokens_not_substrings() {
        assert_eq!(
            matches("timeout").await,
            vec![1, 2],
            "`timeouts` is another token"
        );
        assert_eq!(matches("TIMEOUT reached").await, vec![2]);
        assert_eq!(
            matches("\"timeout\"").await,
            vec![1, 2, 3],
            "a phrase is a substring"
        );
        assert_eq!(matches("conn-reset").await, vec![4]);
        assert_eq!(matches("conn").await, vec![4]);
        assert_eq!(matches("example.com:8080").await, vec![5]);
        assert_eq!(matches("straße").await, vec![7]);
        assert_eq!(matches("STRASSE").await, Vec::<usize>::new());
    }

    #[tokio::test]
    async fn fields_comparisons_ranges_and_booleans() {
        assert_eq!(matches("service:api").await, vec![1, 3, 6]);
        assert_eq!(matches("service:\"ap\"").await, Vec::<usize>::new());
        assert_eq!(matches("SeverityNumber:17").await, vec![1, 4]);
        assert_eq!(matches("SeverityNumber:>=13").await, vec![1, 2, 4]);
        assert_eq!(matches("SeverityNumber:[9 TO 13}").await, vec![3, 5, 7]);
        assert_eq!(matches("SeverityNumber:{* TO 9]").await, vec![3, 5, 6, 7]);
        // Attributes: LogAttributes first, then ResourceAttributes; numeric
        // comparison after conversion.
        assert_eq!(matches("http.status_code:>=500").await, vec![1, 3]);
        assert_eq!(matches("http.status_code:5").await, vec![1, 3]);
        assert_eq!(
            matches("ResourceAttributes.host.name:\"web-1\"").await,
            vec![1]
        );
        assert_eq!(matches("user.id:*").await, vec![4]);
        assert_eq!(matches("cache.hit:true").await, vec![5]);
    }

    #[tokio::test]
    async fn boolean_logic_is_two_valued() {
        assert_eq!(matches("timeout OR service:db").await, vec![1, 2, 4]);
        assert_eq!(matches("service:(api OR db) -timeout").await, vec![3, 4, 6]);
        // Rows without the attribute match its negation.
        assert_eq!(
            matches("NOT http.status_code:>=500").await,
            vec![2, 4, 5, 6, 7]
        );
        assert_eq!(matches("*").await.len(), ROWS.len());
    }

    #[tokio::test]
    async fn hostile_values_are_only_compared() {
        assert_eq!(
            matches("body:\"'; DROP TABLE otel_logs; --\"").await,
            vec![6]
        );
        assert_eq!(matches("\"DROP TABLE\"").await, vec![6]);
        assert_eq!(
            matches("body:\"a\\\\b ' \\\" %_\"").await,
            Vec::<usize>::new()
        );
        assert_eq!(
            matches("\"100%\"").await,
            Vec::<usize>::new(),
            "% is not a wildcard"
        );
    }
}

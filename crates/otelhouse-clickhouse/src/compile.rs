//! A parsed search (`otelhouse_search::Query`) as a ClickHouse boolean
//! expression. Field names come from the catalogue (schema columns and map
//! names, quoted); every user value is a bound parameter. Mirrors the
//! embedded store's DataFusion filter (`otelhouse_storage::search`) term
//! for term, so both stores return the same rows:
//! - tokens: the same regular expression (`token_pattern`), RE2 here;
//! - substrings: case-insensitive UTF-8 position;
//! - attributes: the first listed map that has the key decides;
//! - numbers: `toFloat64OrNull` after trimming ASCII whitespace as Arrow's
//!   cast does (non-numbers never match);
//! - every term is two-valued (`ifNull(…, 0)`), so NOT of a condition on a
//!   missing attribute matches, as in Lucene.

use otelhouse_search::{Bound, CompareOp, Condition, Field, Query, token_pattern};

use crate::client::Statement;

/// A column or map name, quoted. Names come from the schema, never from
/// users; quoting keeps dotted names (`Events.Name`) whole.
pub fn ident(name: &str) -> String {
    debug_assert!(!name.contains('`'), "schema names carry no backticks");
    format!("`{name}`")
}

pub fn filter(q: &Query, st: &mut Statement) -> String {
    match q {
        Query::All => "1".into(),
        Query::And { of } => join(of, " AND ", "1", st),
        Query::Or { of } => join(of, " OR ", "0", st),
        Query::Not { query } => format!("NOT ({})", filter(query, st)),
        Query::Term(t) => format!("ifNull({}, 0)", condition(&t.field, &t.condition, st)),
    }
}

fn join(of: &[Query], op: &str, empty: &str, st: &mut Statement) -> String {
    if of.is_empty() {
        return empty.into();
    }
    let parts: Vec<String> = of.iter().map(|q| format!("({})", filter(q, st))).collect();
    parts.join(op)
}

/// The field's value as text: NULL for an attribute no listed map has.
pub fn text(field: &Field, st: &mut Statement) -> String {
    match field {
        Field::Column { name, numeric } => {
            if *numeric {
                format!("toString({})", ident(name))
            } else {
                ident(name)
            }
        }
        Field::Attribute { key, maps } => {
            let k = st.bind("String", key);
            let mut arms = Vec::new();
            for m in maps {
                arms.push(format!("mapContains({}, {k})", ident(m)));
                arms.push(format!("{}[{k}]", ident(m)));
            }
            format!("multiIf({}, NULL)", arms.join(", "))
        }
    }
}

/// The field's value as a number; NULL when it is not one (NaN included,
/// as in the embedded store).
pub fn number(field: &Field, st: &mut Statement) -> String {
    let n = match field {
        Field::Column {
            name,
            numeric: true,
        } => format!("toFloat64({})", ident(name)),
        // Arrow's cast (the embedded store) ignores ASCII whitespace around
        // a number (space, tab, LF, FF, CR); ClickHouse's parser does not.
        f => format!(
            "toFloat64OrNull(trimBoth({}, ' \\t\\n\\x0C\\r'))",
            text(f, st)
        ),
    };
    format!("if(isNaN({n}), NULL, {n})")
}

fn compare(n: &str, op: CompareOp, v: f64, st: &mut Statement) -> String {
    format!("{n} {} {}", op.symbol(), st.bind("Float64", v))
}

fn contains(value: &str, sub: &str, st: &mut Statement) -> String {
    format!(
        "positionCaseInsensitiveUTF8({value}, {}) > 0",
        st.bind("String", sub)
    )
}

fn condition(field: &Field, c: &Condition, st: &mut Statement) -> String {
    match c {
        Condition::Token { tokens, substring } => {
            let value = text(field, st);
            let mut parts: Vec<String> = tokens
                .iter()
                .map(|t| {
                    // The substring first (cheap; and() short-circuits), as
                    // in the embedded store.
                    let sub = contains(&value, t, st);
                    format!(
                        "{sub} AND match({value}, {})",
                        st.bind("String", token_pattern(t))
                    )
                })
                .collect();
            if let Some(sub) = substring {
                parts.push(contains(&value, sub, st));
            }
            if parts.is_empty() {
                "1".into()
            } else {
                parts.join(" AND ")
            }
        }
        Condition::Contains { value } => {
            let v = text(field, st);
            contains(&v, value, st)
        }
        Condition::Equals { value } => match field {
            Field::Column { numeric: true, .. } => match value.parse::<f64>() {
                Ok(v) => {
                    let n = number(field, st);
                    format!("{n} = {}", st.bind("Float64", v))
                }
                Err(_) => "0".into(),
            },
            _ => {
                let v = text(field, st);
                format!("{v} = {}", st.bind("String", value))
            }
        },
        Condition::Exists => {
            let v = text(field, st);
            format!("({v} IS NOT NULL AND {v} != '')")
        }
        Condition::Compare { op, value } => {
            let n = number(field, st);
            compare(&n, *op, *value, st)
        }
        Condition::Range { low, high } => {
            let n = number(field, st);
            let side = |b: &Option<Bound>, incl, excl, st: &mut Statement| {
                b.map(|b| compare(&n, if b.inclusive { incl } else { excl }, b.value, st))
            };
            let parts: Vec<String> = [
                side(low, CompareOp::Ge, CompareOp::Gt, st),
                side(high, CompareOp::Le, CompareOp::Lt, st),
            ]
            .into_iter()
            .flatten()
            .collect();
            if parts.is_empty() {
                format!("{n} IS NOT NULL")
            } else {
                parts.join(" AND ")
            }
        }
        Condition::Bool { value } => {
            let v = text(field, st);
            format!("lower({v}) = {}", st.bind("String", value))
        }
    }
}

#[cfg(test)]
mod tests {
    use otelhouse_schema::Signal;
    use otelhouse_search::{Catalog, parse};

    use super::*;

    /// The statement with every placeholder removed.
    fn without_placeholders(sql: &str) -> String {
        let mut out = String::new();
        let mut rest = sql;
        while let Some(i) = rest.find("{p") {
            out.push_str(&rest[..i]);
            rest = &rest[i + rest[i..].find('}').unwrap() + 1..];
        }
        out + rest
    }

    #[test]
    fn user_values_only_ever_become_parameters() {
        let c = Catalog::new(Signal::Logs, ["user.name".to_string()]);
        for raw in [
            "it's",
            "a\\b",
            "'; DROP TABLE otel_logs; --",
            "/* x */ OR 1=1",
            "`ServiceName`",
            "{p0:String}",
            "日本語",
            "nul\0byte",
        ] {
            let quoted = raw.replace('\\', "\\\\").replace('"', "\\\"");
            let q = parse(&format!("user.name:\"{quoted}\" \"{quoted}\""), &c).unwrap();
            let mut st = Statement::default();
            let sql = without_placeholders(&filter(&q, &mut st));
            assert!(!sql.contains(raw), "{raw} spliced into {sql}");
            assert!(!sql.replace("!= ''", "").contains('\''), "a quote in {sql}");
            assert_eq!(
                st.params.iter().filter(|p| p.value == raw).count(),
                2,
                "{raw}: {:?}",
                st.params
            );
        }
        let q = parse("service:api -level:error", &c).unwrap();
        let mut st = Statement::default();
        assert_eq!(
            filter(&q, &mut st),
            "(ifNull(positionCaseInsensitiveUTF8(`ServiceName`, {p0:String}) > 0, 0)) AND (NOT (ifNull(positionCaseInsensitiveUTF8(`SeverityText`, {p1:String}) > 0, 0)))"
        );
    }
}

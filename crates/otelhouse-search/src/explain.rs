//! A query in plain English, for `/api/v1/explain` and the UI.

use crate::ast::{Condition, Field, Query};

pub fn explain(q: &Query) -> String {
    match q {
        Query::All => "every row".into(),
        Query::And { of } => of.iter().map(nested).collect::<Vec<_>>().join(" and "),
        Query::Or { of } => of.iter().map(nested).collect::<Vec<_>>().join(" or "),
        Query::Not { query } => format!("not {}", nested(query)),
        Query::Term(t) => {
            let field = match &t.field {
                Field::Column { name, .. } => (*name).to_string(),
                Field::Attribute { key, maps } => {
                    format!("attribute `{key}` (in {})", maps.join(", then "))
                }
            };
            match &t.condition {
                Condition::Token { tokens, substring } => {
                    let words = tokens.iter().map(|t| format!("“{t}”")).collect::<Vec<_>>();
                    let list = match words.split_last() {
                        Some((last, rest)) if !rest.is_empty() => {
                            format!("{} and {last}", rest.join(", "))
                        }
                        _ => words.join(""),
                    };
                    let mut s = format!(
                        "{field} contains the word{} {list}",
                        if words.len() > 1 { "s" } else { "" },
                    );
                    if let Some(sub) = substring {
                        s += &format!(" and the text “{sub}”");
                    }
                    s + " (ignoring case)"
                }
                Condition::Contains { value } => {
                    format!("{field} contains “{value}” (ignoring case)")
                }
                Condition::Equals { value } => format!("{field} is exactly “{value}”"),
                Condition::Exists => format!("{field} is present and not empty"),
                Condition::Compare { op, value } => {
                    format!("{field} {} {value}", words(op.symbol()))
                }
                Condition::Range { low, high } => {
                    let lo = low.map(|b| {
                        format!(
                            "{} {}",
                            if b.inclusive { "at least" } else { "above" },
                            b.value
                        )
                    });
                    let hi = high.map(|b| {
                        format!(
                            "{} {}",
                            if b.inclusive { "at most" } else { "below" },
                            b.value
                        )
                    });
                    match (lo, hi) {
                        (Some(l), Some(h)) => format!("{field} is {l} and {h}"),
                        (Some(l), None) => format!("{field} is {l}"),
                        (None, Some(h)) => format!("{field} is {h}"),
                        (None, None) => format!("{field} is any number"),
                    }
                }
                Condition::Bool { value } => format!("{field} is {value}"),
            }
        }
    }
}

fn nested(q: &Query) -> String {
    match q {
        Query::And { .. } | Query::Or { .. } => format!("({})", explain(q)),
        _ => explain(q),
    }
}

fn words(op: &str) -> &'static str {
    match op {
        ">" => "is greater than",
        ">=" => "is at least",
        "<" => "is less than",
        _ => "is at most",
    }
}

//! The typed query a search string parses into. Values are kept as the user
//! wrote them; backends bind them as parameters, never splice them.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Query {
    /// The empty query: every row.
    All,
    And {
        of: Vec<Query>,
    },
    Or {
        of: Vec<Query>,
    },
    Not {
        query: Box<Query>,
    },
    Term(Term),
}

/// One condition on one field (or the implicit full-text column).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Term {
    pub field: Field,
    pub condition: Condition,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Field {
    /// A column of the signal table, by its schema name.
    Column { name: &'static str, numeric: bool },
    /// An attribute key, looked up in these maps in order (the first that
    /// has the key decides).
    Attribute {
        key: String,
        maps: Vec<&'static str>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    /// Bare term: a token (maximal alphanumeric run) of the column,
    /// case-insensitive. `substring` is set when the term has separators
    /// (`conn-reset`): the text must then also contain it.
    Token {
        tokens: Vec<String>,
        substring: Option<String>,
    },
    /// Case-insensitive substring (`field:value`, or a quoted phrase without a field).
    Contains { value: String },
    /// Exact equality (`field:"value"`).
    Equals { value: String },
    /// Present and non-empty (`field:*`).
    Exists,
    /// `field:>5` and friends; numbers compare as Float64.
    Compare { op: CompareOp, value: f64 },
    /// `[lo TO hi]` inclusive, `{lo TO hi}` exclusive, `*` open.
    Range {
        low: Option<Bound>,
        high: Option<Bound>,
    },
    /// `field:true` / `field:false` against a boolean-like value.
    Bool { value: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CompareOp {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl CompareOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bound {
    pub value: f64,
    pub inclusive: bool,
}

//! The search language (`shared/design/search-syntax.md`): parsing a query
//! string into a typed `Query` against a signal's field catalogue, and
//! explaining it in plain English. Backends compile the `Query`; values
//! stay values (bound parameters), field names are resolved here and never
//! taken from user text.

pub mod ast;
pub mod explain;
pub mod fields;
pub mod parse;

pub use ast::{Bound, CompareOp, Condition, Field, Query, Term};
pub use explain::explain;
pub use fields::Catalog;
pub use parse::{MAX_DEPTH, MAX_QUERY_BYTES, ParseError, parse, token_pattern};

#[cfg(test)]
mod golden;

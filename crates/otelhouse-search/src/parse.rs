//! The search syntax of `shared/design/search-syntax.md` (Lucene-style, as
//! HyperDX accepts it) parsed by recursive descent into a typed `Query`.
//! Hand-written: the syntax is context-sensitive (`localhost:8080` and
//! `http://x` are values, `service:api` is a field) and errors must point
//! at a position, which Lucene-parser crates do not offer.
//!
//! Grammar (juxtaposition is AND; AND binds tighter than OR):
//!   query   := or EOF
//!   or      := and (("OR" | "||") and)*
//!   and     := unary (("AND" | "&&")? unary)*
//!   unary   := ("NOT" | "-") unary | primary
//!   primary := "(" or ")" | FIELD ":" value | word | phrase
//!   value   := "*" | phrase | CMP number | range | "(" values ")" | word

use crate::ast::{Bound, CompareOp, Condition, Field, Query, Term};
use crate::fields::Catalog;

/// Longest accepted query, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Deepest nesting of parentheses and NOTs.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} at {position}")]
pub struct ParseError {
    pub message: String,
    /// 1-based character column.
    pub position: usize,
    /// Set when the error is an unknown field name: a caller that can
    /// look the name up in the data (a rare attribute key) may retry.
    pub unknown_field: Option<String>,
}

pub fn parse(input: &str, catalog: &Catalog) -> Result<Query, ParseError> {
    if input.len() > MAX_QUERY_BYTES {
        return Err(ParseError {
            message: format!(
                "the query is {} bytes long; at most {MAX_QUERY_BYTES} are accepted",
                input.len()
            ),
            position: 1,
            unknown_field: None,
        });
    }
    let mut p = Parser {
        chars: input.chars().collect(),
        pos: 0,
        catalog,
        depth: 0,
    };
    p.skip_ws();
    if p.at_end() {
        return Ok(Query::All);
    }
    let q = p.or()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.unexpected());
    }
    Ok(q)
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    catalog: &'a Catalog,
    depth: usize,
}

/// Characters that end a word (unless escaped with `\`).
fn is_delim(c: char) -> bool {
    c.is_whitespace() || "()[]{}\"".contains(c)
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn err(&self, at: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            message: message.into(),
            position: at + 1,
            unknown_field: None,
        }
    }

    fn unexpected(&self) -> ParseError {
        match self.peek() {
            Some(c) => self.err(self.pos, format!("unexpected `{c}`")),
            None => self.err(self.pos, "unexpected end of query"),
        }
    }

    /// The keyword at the cursor (a whole word), if it is `kw`.
    fn keyword(&self, kw: &str) -> bool {
        let end = self.pos + kw.chars().count();
        end <= self.chars.len()
            && self.chars[self.pos..end].iter().copied().eq(kw.chars())
            && self.chars.get(end).is_none_or(|c| is_delim(*c))
    }

    fn symbol(&self, s: &str) -> bool {
        let end = self.pos + s.chars().count();
        end <= self.chars.len() && self.chars[self.pos..end].iter().copied().eq(s.chars())
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(self.pos, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    /// `( inner )`, cursor on the `(`: counts the nesting and requires the `)`.
    fn group(
        &mut self,
        inner: impl FnOnce(&mut Self) -> Result<Query, ParseError>,
    ) -> Result<Query, ParseError> {
        let open = self.pos;
        self.pos += 1;
        self.enter()?;
        let q = inner(self)?;
        self.skip_ws();
        if self.peek() != Some(')') {
            return Err(self.err(open, "`(` is never closed"));
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(q)
    }

    fn or(&mut self) -> Result<Query, ParseError> {
        let mut parts = vec![self.and()?];
        loop {
            self.skip_ws();
            if self.keyword("OR") || self.symbol("||") {
                self.pos += 2;
            } else {
                break;
            }
            parts.push(self.and()?);
        }
        Ok(join_or(parts))
    }

    fn and(&mut self) -> Result<Query, ParseError> {
        let mut parts = vec![self.unary()?];
        loop {
            self.skip_ws();
            if self.at_end() || self.peek() == Some(')') || self.keyword("OR") || self.symbol("||")
            {
                break;
            }
            if self.keyword("AND") {
                self.pos += 3;
            } else if self.symbol("&&") {
                self.pos += 2;
            }
            parts.push(self.unary()?);
        }
        Ok(join_and(parts))
    }

    fn unary(&mut self) -> Result<Query, ParseError> {
        self.skip_ws();
        let negate = if self.keyword("NOT") {
            self.pos += 3;
            true
        } else if (self.peek() == Some('-')
            && self
                .chars
                .get(self.pos + 1)
                .is_some_and(|c| !c.is_whitespace()))
            || self.peek() == Some('!')
        {
            self.pos += 1;
            true
        } else {
            false
        };
        if negate {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Query::Not {
                query: Box::new(inner),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Query, ParseError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            None => Err(self.err(self.pos, "a term is missing at the end of the query")),
            Some('(') => self.group(|p| {
                p.skip_ws();
                if p.peek() == Some(')') {
                    return Err(p.err(p.pos, "empty parentheses"));
                }
                p.or()
            }),
            Some(')') => Err(self.unexpected()),
            Some('"') => {
                let text = self.phrase()?;
                Ok(self.implicit(Condition::Contains { value: text }))
            }
            Some(_) if self.keyword("AND") || self.keyword("OR") => {
                Err(self.err(self.pos, "a term is missing before this operator"))
            }
            Some(_) => {
                let (word, is_field) = self.word(true)?;
                if is_field {
                    let field = self.catalog.resolve(&word).map_err(|m| ParseError {
                        unknown_field: Some(word.clone()),
                        ..self.err(start, m)
                    })?;
                    if let Field::Column { name, .. } = &field
                        && self.catalog.is_time(name)
                    {
                        return Err(self.err(
                            start,
                            format!(
                                "`{name}` is the time range: give it as from/to, not in the search"
                            ),
                        ));
                    }
                    self.field_value(field)
                } else {
                    self.bare(word, start)
                }
            }
        }
    }

    /// A quoted phrase (cursor on the opening quote); `\"` and `\\` escape.
    fn phrase(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.err(start, "the quote `\"` is never closed")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') if self.pos + 1 < self.chars.len() => {
                    out.push(self.chars[self.pos + 1]);
                    self.pos += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// A word up to a delimiter, and whether it is a field name. With
    /// `allow_field`, a `:` that separates a field name from its value ends
    /// the word (and is consumed); a `:` in `http://…` or `host:8080`, or an
    /// escaped `\:`, stays in the word.
    fn word(&mut self, allow_field: bool) -> Result<(String, bool), ParseError> {
        let start = self.pos;
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if is_delim(c) {
                break;
            }
            match c {
                '\\' => {
                    let Some(&next) = self.chars.get(self.pos + 1) else {
                        return Err(self.err(self.pos, "`\\` at the end escapes nothing"));
                    };
                    out.push(next);
                    self.pos += 2;
                    continue;
                }
                ':' if allow_field && !out.is_empty() && !self.colon_is_value(&out) => {
                    self.pos += 1;
                    return Ok((out, true));
                }
                '~' => {
                    return Err(self.err(self.pos, "fuzzy matching (`~`) is not supported"));
                }
                '^' => {
                    return Err(self.err(self.pos, "boosts (`^`) are not supported"));
                }
                '/' if out.is_empty() => {
                    return Err(self.err(
                        self.pos,
                        "regular expressions (`/…/`) are not supported; use a quoted phrase",
                    ));
                }
                _ => {}
            }
            out.push(c);
            self.pos += 1;
        }
        if out.is_empty() {
            return Err(self.err(start, "a term is missing here"));
        }
        Ok((out, false))
    }

    /// Is the `:` at the cursor part of a value (`http://x`, `host:8080`)?
    fn colon_is_value(&self, before: &str) -> bool {
        let rest: String = self.chars[self.pos + 1..]
            .iter()
            .take_while(|c| !is_delim(**c))
            .collect();
        if rest.starts_with("//") {
            return true;
        }
        // host:port: digits after a host-like name that is no field and no
        // near miss of one (a typo such as `http.status_cod:500` stays an
        // unknown-field error).
        let host_like = before.eq_ignore_ascii_case("localhost")
            || before.parse::<std::net::IpAddr>().is_ok()
            || (before.contains('.')
                && before.split('.').all(|l| !l.is_empty())
                && self.catalog.suggest(before).is_none());
        rest.len() >= 2
            && rest.chars().all(|c| c.is_ascii_digit())
            && host_like
            && self.catalog.resolve(before).is_err()
    }

    fn implicit(&self, condition: Condition) -> Query {
        Query::Term(Term {
            field: self
                .catalog
                .column(self.catalog.implicit_column())
                .expect("the implicit column exists"),
            condition,
        })
    }

    /// A bare word: token match in the implicit column.
    fn bare(&mut self, word: String, start: usize) -> Result<Query, ParseError> {
        if word == "*" {
            return Ok(Query::All);
        }
        if word.contains('*') || word.contains('?') {
            return Err(self.err(
                start,
                "wildcards inside a term are not supported; a bare term already matches a whole word, `field:value` a substring",
            ));
        }
        let tokens = tokens(&word);
        if tokens.is_empty() {
            // Only separators, e.g. `--`: a substring then.
            return Ok(self.implicit(Condition::Contains { value: word }));
        }
        let substring = (tokens.len() > 1 || tokens[0].len() != word.chars().count())
            .then(|| word.to_lowercase());
        Ok(self.implicit(Condition::Token { tokens, substring }))
    }

    /// What follows `field:`.
    fn field_value(&mut self, field: Field) -> Result<Query, ParseError> {
        let start = self.pos;
        let term = |condition| {
            Query::Term(Term {
                field: field.clone(),
                condition,
            })
        };
        match self.peek() {
            None => Err(self.err(start, "a value is missing after `:`")),
            Some(c) if c.is_whitespace() => Err(self.err(start, "a value is missing after `:`")),
            Some('"') => Ok(equals(&field, self.phrase()?)),
            // field:(a b OR c): the field applies to each inner term.
            Some('(') => self.group(|p| p.value_group(&field)),
            Some('[') | Some('{') => self.range(field),
            Some('>') | Some('<') => {
                let op = if self.symbol(">=") {
                    CompareOp::Ge
                } else if self.symbol("<=") {
                    CompareOp::Le
                } else if self.symbol(">") {
                    CompareOp::Gt
                } else {
                    CompareOp::Lt
                };
                self.pos += op.symbol().len();
                let at = self.pos;
                let (text, _) = self.word(false)?;
                let value = number(&text).ok_or_else(|| {
                    self.err(at, format!("`{text}` is not a number to compare with"))
                })?;
                Ok(term(Condition::Compare { op, value }))
            }
            Some(_) => {
                let (text, _) = self.word(false)?;
                // A number against a numeric column is equality, not a substring.
                if let Field::Column { numeric: true, .. } = field
                    && number(&text).is_some()
                {
                    return Ok(term(Condition::Equals { value: text }));
                }
                Ok(term(value_condition(&text)))
            }
        }
    }

    /// Inside `field:( … )`: values combined like terms.
    fn value_group(&mut self, field: &Field) -> Result<Query, ParseError> {
        let mut ors = Vec::new();
        let mut ands = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None | Some(')') => break,
                _ => {}
            }
            if self.keyword("OR") || self.symbol("||") {
                self.pos += 2;
                ors.push(join_and(std::mem::take(&mut ands)));
                continue;
            }
            if self.keyword("AND") || self.symbol("&&") {
                self.pos += if self.keyword("AND") { 3 } else { 2 };
                continue;
            }
            let negate = if self.keyword("NOT") {
                self.pos += 3;
                self.skip_ws();
                true
            } else if self.peek() == Some('-') {
                self.pos += 1;
                true
            } else {
                false
            };
            let q = self.field_value(field.clone())?;
            ands.push(if negate {
                Query::Not { query: Box::new(q) }
            } else {
                q
            });
        }
        if ands.is_empty() && ors.is_empty() {
            return Err(self.err(self.pos, "empty parentheses"));
        }
        if ands.is_empty() {
            return Err(self.err(self.pos, "a term is missing after OR"));
        }
        ors.push(join_and(ands));
        Ok(join_or(ors))
    }

    /// `[lo TO hi]`, `{lo TO hi}`, mixed brackets, `*` for an open end.
    fn range(&mut self, field: Field) -> Result<Query, ParseError> {
        let start = self.pos;
        let low_inclusive = self.peek() == Some('[');
        self.pos += 1;
        self.skip_ws();
        let (text, at) = self.bound_text();
        let low = self.bound(text, at, low_inclusive)?;
        self.skip_ws();
        if !self.keyword("TO") {
            return Err(self.err(self.pos, "a range needs `TO`, as in [1 TO 5]"));
        }
        self.pos += 2;
        self.skip_ws();
        let (text, at) = self.bound_text();
        let high_inclusive = match self.peek() {
            Some(']') => true,
            Some('}') => false,
            _ => return Err(self.err(start, "the range is never closed with `]` or `}`")),
        };
        let high = self.bound(text, at, high_inclusive)?;
        self.pos += 1; // the closing bracket
        if let (Some(l), Some(h)) = (low, high)
            && l.value > h.value
        {
            return Err(self.err(start, "the range's lower end is above its upper end"));
        }
        Ok(Query::Term(Term {
            field,
            condition: Condition::Range { low, high },
        }))
    }

    /// A range end's text (up to a space or a closing bracket) and where it starts.
    fn bound_text(&mut self) -> (String, usize) {
        let at = self.pos;
        let text: String = self.chars[self.pos..]
            .iter()
            .take_while(|c| !c.is_whitespace() && !"]}".contains(**c))
            .collect();
        self.pos += text.chars().count();
        (text, at)
    }

    fn bound(&self, text: String, at: usize, inclusive: bool) -> Result<Option<Bound>, ParseError> {
        if text == "*" {
            return Ok(None);
        }
        let value = number(&text).ok_or_else(|| {
            self.err(at, format!("`{text}` is not a number (or `*`) for a range"))
        })?;
        Ok(Some(Bound { value, inclusive }))
    }
}

/// One part stands alone; several are joined.
fn join_and(mut parts: Vec<Query>) -> Query {
    if parts.len() == 1 {
        parts.pop().unwrap()
    } else {
        Query::And { of: parts }
    }
}

fn join_or(mut parts: Vec<Query>) -> Query {
    if parts.len() == 1 {
        parts.pop().unwrap()
    } else {
        Query::Or { of: parts }
    }
}

/// `field:"value"`. SpanKind and StatusCode hold the collector's current
/// spelling (`Server`, `Error`) or, from older collectors, the enum name
/// (`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`): either spelling finds both.
fn equals(field: &Field, value: String) -> Query {
    let term = |value| {
        Query::Term(Term {
            field: field.clone(),
            condition: Condition::Equals { value },
        })
    };
    let prefix = match field {
        Field::Column {
            name: "SpanKind", ..
        } => "SPAN_KIND_",
        Field::Column {
            name: "StatusCode", ..
        } => "STATUS_CODE_",
        _ => return term(value),
    };
    let short = match value.get(..prefix.len()) {
        Some(p) if p.eq_ignore_ascii_case(prefix) => value[prefix.len()..].to_string(),
        _ => value.clone(),
    };
    if short.is_empty() || !short.chars().all(|c| c.is_ascii_alphabetic()) {
        return term(value);
    }
    let mut current = short.to_ascii_lowercase();
    current[..1].make_ascii_uppercase();
    Query::Or {
        of: vec![
            term(current),
            term(format!("{prefix}{}", short.to_ascii_uppercase())),
        ],
    }
}

/// `field:value` (unquoted): presence, a boolean, or a substring.
fn value_condition(text: &str) -> Condition {
    match text {
        "*" => Condition::Exists,
        "true" => Condition::Bool { value: true },
        "false" => Condition::Bool { value: false },
        _ => Condition::Contains {
            value: text.to_string(),
        },
    }
}

fn number(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Tokens as the full-text match sees them: maximal alphanumeric runs,
/// lower-cased.
/// The regular expression (RE2 and Rust `regex` syntax alike) that finds
/// `token` as a whole token, ignoring case: not preceded or followed by a
/// letter, mark or digit. Tokens are alphanumeric, so they carry no regex
/// syntax of their own.
pub fn token_pattern(token: &str) -> String {
    format!(r"(?i)(?:^|[^\pL\pM\pN]){token}(?:$|[^\pL\pM\pN])")
}

pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

//! `has_token(text, token)`: whether `text` holds `token` as a whole token,
//! ignoring case — the search language's bare term (letters, marks and
//! digits; `otelhouse_search::token_pattern`), like ClickHouse's `hasToken`.
//!
//! One function instead of a LIKE prefilter and a regex, so the token
//! index can recognise the condition in a plan (`parts_table`) and SQL
//! mode can write it. The answer is the regex's by construction: ASCII
//! rows take a case-insensitive substring search with a boundary check
//! (for ASCII text and an ASCII token the two agree), every other row the
//! regex itself.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use aho_corasick::AhoCorasick;
use arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::lit;

pub const NAME: &str = "has_token";

/// The longest token accepted: a search term cannot be longer than its
/// query, and building the matcher for a megabyte-long token takes minutes.
pub const MAX_TOKEN_BYTES: usize = otelhouse_search::MAX_QUERY_BYTES;

/// Matchers kept per thread, most recently used last: a query has a few
/// terms, and each is matched against many batches.
const CACHED_MATCHERS: usize = 8;

thread_local! {
    static MATCHERS: RefCell<Vec<Arc<Matcher>>> = const { RefCell::new(Vec::new()) };
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HasToken {
    signature: Signature,
}

/// The function, to register in a session.
pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(HasToken {
        signature: Signature::exact(vec![DataType::Utf8, DataType::Utf8], Volatility::Immutable),
    })
}

/// `has_token(text, token)` as an expression.
pub fn has_token(text: Expr, token: &str) -> Expr {
    udf().call(vec![text, lit(token)])
}

/// Decides one token against many texts.
#[derive(Debug)]
pub struct Matcher {
    token: String,
    ascii: Option<AhoCorasick>,
    /// Compiled on the first non-ASCII text: compiling it costs more than
    /// matching a batch of ASCII texts (12 % of a rare-token query when it
    /// was compiled per batch).
    regex: OnceLock<std::result::Result<regex::Regex, String>>,
}

impl Matcher {
    pub fn new(token: &str) -> std::result::Result<Matcher, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!(
                "{NAME}: the token is {} bytes long; at most {MAX_TOKEN_BYTES} are accepted",
                token.len()
            ));
        }
        if token.is_empty() || !token.chars().all(char::is_alphanumeric) {
            return Err(format!(
                "{NAME} takes one token of letters and digits, not {token:?}"
            ));
        }
        let ascii = token
            .is_ascii()
            .then(|| {
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build([token])
            })
            .transpose()
            .map_err(|e| format!("{NAME}: {e}"))?;
        Ok(Matcher {
            token: token.to_owned(),
            ascii,
            regex: OnceLock::new(),
        })
    }

    /// The matcher for `token`, built once per thread and reused across
    /// batches: building the automaton per batch cost more than matching a
    /// batch of short texts.
    pub fn cached(token: &str) -> std::result::Result<Arc<Matcher>, String> {
        MATCHERS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(i) = cache.iter().position(|m| m.token == token) {
                let m = cache.remove(i);
                cache.push(m.clone());
                return Ok(m);
            }
            let m = Arc::new(Matcher::new(token)?);
            if cache.len() == CACHED_MATCHERS {
                cache.remove(0);
            }
            cache.push(m.clone());
            Ok(m)
        })
    }

    fn regex(&self) -> std::result::Result<&regex::Regex, String> {
        self.regex
            .get_or_init(|| {
                regex::Regex::new(&otelhouse_search::token_pattern(&self.token))
                    .map_err(|e| format!("{NAME}: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// An error only if the token's regex, needed for non-ASCII text, does
    /// not compile (a token past the regex size limit).
    pub fn is_match(&self, text: &str) -> std::result::Result<bool, String> {
        Ok(match &self.ascii {
            Some(ac) if text.is_ascii() => {
                let bytes = text.as_bytes();
                // Non-overlapping occurrences suffice: an occurrence that
                // overlaps an earlier one is preceded by a token byte.
                ac.find_iter(text).any(|m| {
                    (m.start() == 0 || !bytes[m.start() - 1].is_ascii_alphanumeric())
                        && bytes
                            .get(m.end())
                            .is_none_or(|b| !b.is_ascii_alphanumeric())
                })
            }
            _ => self.regex()?.is_match(text),
        })
    }
}

impl ScalarUDFImpl for HasToken {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let token = match &args.args[1] {
            ColumnarValue::Scalar(ScalarValue::Utf8(Some(t))) => t.clone(),
            ColumnarValue::Scalar(ScalarValue::Utf8(None)) => {
                return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(None)));
            }
            _ => return exec_err!("{NAME}'s second argument must be a constant"),
        };
        let matcher = match Matcher::cached(&token) {
            Ok(m) => m,
            Err(e) => return exec_err!("{e}"),
        };
        let texts: ArrayRef = match &args.args[0] {
            ColumnarValue::Array(a) => a.clone(),
            ColumnarValue::Scalar(s) => s.to_array()?,
        };
        let Some(texts) = texts.as_any().downcast_ref::<StringArray>() else {
            return exec_err!("{NAME} takes text");
        };
        let out: BooleanArray = match texts
            .iter()
            .map(|t| t.map(|t| matcher.is_match(t)).transpose())
            .collect::<std::result::Result<_, String>>()
        {
            Ok(out) => out,
            Err(e) => return exec_err!("{e}"),
        };
        Ok(match &args.args[0] {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(out)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_agrees_with_the_regex() {
        let texts = [
            "timeout",
            "TimeOut while reading",
            "a timeout.",
            "timeouts",
            "xtimeout",
            "timeout9",
            "(timeout)",
            "time out",
            "timetimeout timeout",
            "aatimeout timeoutaa",
            "\u{212A}ernel timeout",
            "ſtimeout",
            "é timeout",
            "timeoutė",
            "",
        ];
        for token in ["timeout", "TIMEOUT", "kernel", "t1meout", "é"] {
            let m = Matcher::new(token).unwrap();
            let re = regex::Regex::new(&otelhouse_search::token_pattern(token)).unwrap();
            for t in texts {
                assert_eq!(m.is_match(t), Ok(re.is_match(t)), "{token} in {t:?}");
            }
        }
        assert_eq!(
            Matcher::new("kernel").unwrap().is_match("\u{212A}ERNEL"),
            Ok(true)
        );
        assert!(Matcher::new("a-b").is_err());
        assert!(Matcher::new("").is_err());
    }

    #[test]
    fn a_token_past_the_limit_is_refused_with_its_length() {
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        let err = Matcher::new(&long).unwrap_err();
        assert!(
            err.contains(&format!("{} bytes", MAX_TOKEN_BYTES + 1)),
            "{err}"
        );
        // The longest accepted token still matches, on both paths.
        let longest = "é".repeat(MAX_TOKEN_BYTES / 2);
        let m = Matcher::new(&longest).unwrap();
        assert_eq!(m.is_match(&format!("x {longest} y")), Ok(true));
        assert_eq!(m.is_match(&format!("x {longest}é y")), Ok(false));
        let longest = "a".repeat(MAX_TOKEN_BYTES);
        let m = Matcher::new(&longest).unwrap();
        assert_eq!(m.is_match(&format!("x {longest} y")), Ok(true));
        assert_eq!(m.is_match(&format!("{longest}a")), Ok(false));
    }

    #[test]
    fn the_cache_gives_back_the_same_matcher_and_forgets_the_oldest() {
        let first = Matcher::cached("first").unwrap();
        assert!(Arc::ptr_eq(&first, &Matcher::cached("first").unwrap()));
        for i in 0..CACHED_MATCHERS {
            Matcher::cached(&format!("t{i}")).unwrap();
        }
        let again = Matcher::cached("first").unwrap();
        assert!(!Arc::ptr_eq(&first, &again));
        assert_eq!(again.is_match("the first one"), Ok(true));
        assert!(Matcher::cached("a b").is_err());
    }
}

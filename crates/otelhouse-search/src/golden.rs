//! Golden tests: every row of `shared/design/search-syntax.md`, each as the
//! input and the query it must mean (in its plain-English form, which
//! names every field, operator and value), plus the errors.

use otelhouse_schema::Signal;

use crate::{Catalog, Condition, Query, explain, parse};

fn logs() -> Catalog {
    Catalog::new(
        Signal::Logs,
        ["http.status_code".to_string(), "user.id".to_string()],
    )
}

fn means(input: &str, expected: &str) {
    let q = parse(input, &logs()).unwrap_or_else(|e| panic!("{input}: {e}"));
    assert_eq!(explain(&q), expected, "input: {input}");
}

fn fails(input: &str, message: &str, position: usize) {
    let e = parse(input, &logs()).expect_err(input);
    assert_eq!(
        (e.message.as_str(), e.position),
        (message, position),
        "input: {input}"
    );
}

#[test]
fn terms() {
    // `timeout`: bare term, a token of the implicit column.
    means(
        "timeout",
        "Body contains the word “timeout” (ignoring case)",
    );
    means(
        "TimeOut",
        "Body contains the word “timeout” (ignoring case)",
    );
    // A term with separators also requires the substring.
    means(
        "conn-reset",
        "Body contains the words “conn” and “reset” and the text “conn-reset” (ignoring case)",
    );
    means(
        "a.b",
        "Body contains the words “a” and “b” and the text “a.b” (ignoring case)",
    );
    // "connection reset": phrase without a field, a substring.
    means(
        "\"connection reset\"",
        "Body contains “connection reset” (ignoring case)",
    );
    // field:value, substring; field:"value", exact.
    means("service:api", "ServiceName contains “api” (ignoring case)");
    means("service:\"api\"", "ServiceName is exactly “api”");
    // field:* presence.
    means("trace_id:*", "TraceId is present and not empty");
    // Comparisons.
    means("SeverityNumber:>5", "SeverityNumber is greater than 5");
    means("SeverityNumber:>=5", "SeverityNumber is at least 5");
    means("SeverityNumber:<5", "SeverityNumber is less than 5");
    means("SeverityNumber:<=5.5", "SeverityNumber is at most 5.5");
    // Ranges: inclusive, exclusive, open ends, mixed brackets.
    means(
        "SeverityNumber:[1 TO 5]",
        "SeverityNumber is at least 1 and at most 5",
    );
    means(
        "SeverityNumber:{1 TO 5}",
        "SeverityNumber is above 1 and below 5",
    );
    means("SeverityNumber:[1 TO *]", "SeverityNumber is at least 1");
    means("SeverityNumber:{* TO 5]", "SeverityNumber is at most 5");
    // field:(a b): the field applies to each inner term.
    means(
        "service:(api web)",
        "ServiceName contains “api” (ignoring case) and ServiceName contains “web” (ignoring case)",
    );
    means(
        "level:(error OR warn)",
        "SeverityText contains “error” (ignoring case) or SeverityText contains “warn” (ignoring case)",
    );
}

#[test]
fn boolean_operators() {
    let ab =
        "Body contains the word “a” (ignoring case) and Body contains the word “b” (ignoring case)";
    means("a b", ab);
    means("a AND b", ab);
    means("a && b", ab);
    means(
        "a OR b",
        "Body contains the word “a” (ignoring case) or Body contains the word “b” (ignoring case)",
    );
    means(
        "a || b",
        "Body contains the word “a” (ignoring case) or Body contains the word “b” (ignoring case)",
    );
    means("NOT a", "not Body contains the word “a” (ignoring case)");
    means("-a", "not Body contains the word “a” (ignoring case)");
    means(
        "-service:api",
        "not ServiceName contains “api” (ignoring case)",
    );
    // AND binds tighter than OR; parentheses group.
    means(
        "a OR b c",
        "Body contains the word “a” (ignoring case) or (Body contains the word “b” (ignoring case) and Body contains the word “c” (ignoring case))",
    );
    means(
        "(a OR b) c",
        "(Body contains the word “a” (ignoring case) or Body contains the word “b” (ignoring case)) and Body contains the word “c” (ignoring case)",
    );
    // Lower-case `and`/`or` are words, as in Lucene.
    means(
        "a or b",
        "Body contains the word “a” (ignoring case) and Body contains the word “or” (ignoring case) and Body contains the word “b” (ignoring case)",
    );
}

#[test]
fn colons_in_values() {
    // An escaped colon, a URL and host:port are values, not field:value.
    means(
        "a\\:b",
        "Body contains the words “a” and “b” and the text “a:b” (ignoring case)",
    );
    let q = parse("http://example.com/x", &logs()).unwrap();
    let Query::Term(t) = q else { panic!() };
    assert!(
        matches!(t.condition, Condition::Token { substring: Some(ref s), .. } if s == "http://example.com/x")
    );
    means(
        "db.internal:5432",
        "Body contains the words “db”, “internal” and “5432” and the text “db.internal:5432” (ignoring case)",
    );
    fails(
        "http.status_cod:500",
        "unknown field `http.status_cod`; did you mean `http.status_code`?",
        1,
    );
    means(
        "localhost:8080",
        "Body contains the words “localhost” and “8080” and the text “localhost:8080” (ignoring case)",
    );
    means("body:\"GET http://x\"", "Body is exactly “GET http://x”");
}

#[test]
fn fields_and_attributes() {
    means(
        "level:error",
        "SeverityText contains “error” (ignoring case)",
    );
    means(
        "severity:error",
        "SeverityText contains “error” (ignoring case)",
    );
    means(
        "http.status_code:500",
        "attribute `http.status_code` (in LogAttributes, then ResourceAttributes) contains “500” (ignoring case)",
    );
    means(
        "http.status_code:>=500",
        "attribute `http.status_code` (in LogAttributes, then ResourceAttributes) is at least 500",
    );
    means(
        "ResourceAttributes.host.name:web-1",
        "attribute `host.name` (in ResourceAttributes) contains “web-1” (ignoring case)",
    );
    means(
        "LogAttributes.cache.hit:true",
        "attribute `cache.hit` (in LogAttributes) is true",
    );
    // A number against a numeric column is equality.
    means("SeverityNumber:9", "SeverityNumber is exactly “9”");
    let spans = Catalog::new(Signal::Traces, []);
    let q = parse("name:checkout duration:>1000000 status:Error", &spans).unwrap();
    assert_eq!(
        explain(&q),
        "SpanName contains “checkout” (ignoring case) and Duration is greater than 1000000 and StatusCode contains “Error” (ignoring case)"
    );
    assert_eq!(
        explain(&parse("timeout", &spans).unwrap()),
        "SpanName contains the word “timeout” (ignoring case)"
    );
    // Both spellings of SpanKind and StatusCode, from either one.
    for q in ["kind:\"server\"", "SpanKind:\"SPAN_KIND_SERVER\""] {
        assert_eq!(
            explain(&parse(q, &spans).unwrap()),
            "SpanKind is exactly “Server” or SpanKind is exactly “SPAN_KIND_SERVER”",
            "{q}"
        );
    }
    assert_eq!(
        explain(&parse("status:\"Error\"", &spans).unwrap()),
        "StatusCode is exactly “Error” or StatusCode is exactly “STATUS_CODE_ERROR”"
    );
}

#[test]
fn errors_point_at_the_position() {
    fails("level:error )", "unexpected `)`", 13);
    fails("(level:error", "`(` is never closed", 1);
    fails(
        "service:api timestamp:>5",
        "`Timestamp` is the time range: give it as from/to, not in the search",
        13,
    );
    fails(
        "servce:api",
        "unknown field `servce`; did you mean `service`?",
        1,
    );
    fails(
        "a AND (b OR nosuchfield:1)",
        "unknown field `nosuchfield`",
        13,
    );
    fails("\"open", "the quote `\"` is never closed", 1);
    fails("level:", "a value is missing after `:`", 7);
    fails(
        "SeverityNumber:>abc",
        "`abc` is not a number to compare with",
        17,
    );
    fails(
        "SeverityNumber:[1 5]",
        "a range needs `TO`, as in [1 TO 5]",
        19,
    );
    fails(
        "SeverityNumber:[5 TO 1]",
        "the range's lower end is above its upper end",
        16,
    );
    fails("a OR", "a term is missing at the end of the query", 5);
    fails("AND a", "a term is missing before this operator", 1);
    fails("()", "empty parentheses", 2);
    fails(
        "time*",
        "wildcards inside a term are not supported; a bare term already matches a whole word, `field:value` a substring",
        1,
    );
    fails("timeout~2", "fuzzy matching (`~`) is not supported", 8);
    fails("timeout^2", "boosts (`^`) are not supported", 8);
    fails(
        "/time.*/",
        "regular expressions (`/…/`) are not supported; use a quoted phrase",
        1,
    );
}

#[test]
fn limits() {
    let long = "a ".repeat(3000);
    let e = parse(&long, &logs()).unwrap_err();
    assert!(e.message.contains("at most 4096"), "{e}");
    let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
    let e = parse(&deep, &logs()).unwrap_err();
    assert!(e.message.contains("nested deeper than 32"), "{e}");
    let nots = format!("{}a", "NOT ".repeat(40));
    assert!(
        parse(&nots, &logs())
            .unwrap_err()
            .message
            .contains("nested deeper")
    );
    assert_eq!(parse("   ", &logs()).unwrap(), Query::All);
    assert_eq!(parse("*", &logs()).unwrap(), Query::All);
}

#[test]
fn hostile_values_stay_values() {
    // Quotes, backslashes, SQL, comments, unicode and NUL are values: the
    // parser keeps them verbatim for binding and never treats them as fields.
    for (input, value) in [
        (
            "body:\"'; DROP TABLE otel_logs; --\"",
            "'; DROP TABLE otel_logs; --",
        ),
        ("body:\"a\\\"b\\\\c\"", "a\"b\\c"),
        ("body:\"/* x */ ü 日本\"", "/* x */ ü 日本"),
        ("body:\"nul\u{0}byte\"", "nul\u{0}byte"),
    ] {
        let Query::Term(t) = parse(input, &logs()).unwrap() else {
            panic!("{input}")
        };
        assert_eq!(
            t.condition,
            Condition::Equals {
                value: value.into()
            },
            "{input}"
        );
    }
    assert!(parse("`ServiceName`:x", &logs()).is_err());
    assert!(parse("ServiceName);DROP:x", &logs()).is_err());
}

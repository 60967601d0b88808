//! Bucket widths for charts: chosen from the range (about `target`
//! buckets, rounded to a width people read easily) or given, and bounded.

use std::time::Duration;

use crate::{Error, bad};

const SECOND: i64 = 1_000_000_000;

/// Widths a chosen bucket is rounded up to.
const NICE: &[i64] = &[
    SECOND,
    2 * SECOND,
    5 * SECOND,
    10 * SECOND,
    15 * SECOND,
    30 * SECOND,
    60 * SECOND,
    2 * 60 * SECOND,
    5 * 60 * SECOND,
    10 * 60 * SECOND,
    15 * 60 * SECOND,
    30 * 60 * SECOND,
    3600 * SECOND,
    2 * 3600 * SECOND,
    3 * 3600 * SECOND,
    6 * 3600 * SECOND,
    12 * 3600 * SECOND,
    24 * 3600 * SECOND,
    7 * 24 * 3600 * SECOND,
];

/// The bucket width for a range of `span` nanoseconds: `given` (checked
/// against `max_buckets`) or the nice width giving at most `target` buckets.
pub fn choose(
    span: i64,
    given: Option<Duration>,
    target: usize,
    max_buckets: usize,
) -> Result<i64, Error> {
    if let Some(d) = given {
        let width = d.as_nanos().min(i64::MAX as u128) as i64;
        if width < SECOND {
            return Err(bad("`interval` must be at least 1s"));
        }
        // Buckets start at a multiple of the width, so one more may show.
        let buckets = span / width + 2;
        if buckets as usize > max_buckets {
            return Err(bad(format!(
                "`interval` {} gives {buckets} buckets over this range; at most {max_buckets} (use a wider interval or a shorter range)",
                humantime::format_duration(d)
            )));
        }
        return Ok(width);
    }
    let target = target.clamp(1, max_buckets) as i64;
    let raw = (span / target).max(1);
    Ok(NICE.iter().copied().find(|w| *w >= raw).unwrap_or_else(|| {
        let week = NICE[NICE.len() - 1];
        (raw + week - 1) / week * week
    }))
}

/// `1m`, `30s`, `none` …
pub fn parse(text: &str) -> Result<Option<Duration>, Error> {
    match text {
        "" | "auto" => Ok(None),
        t => humantime::parse_duration(t)
            .map(Some)
            .map_err(|e| bad(format!("`interval`: {e} (e.g. 30s, 1m, 1h, or auto)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_are_nice_and_bounded() {
        let h = 3600 * SECOND;
        assert_eq!(choose(h, None, 60, 1000).unwrap(), 60 * SECOND);
        assert_eq!(choose(24 * h, None, 60, 1000).unwrap(), 30 * 60 * SECOND);
        assert_eq!(choose(10 * SECOND, None, 60, 1000).unwrap(), SECOND);
        assert_eq!(
            choose(h, Some(Duration::from_secs(10)), 60, 1000).unwrap(),
            10 * SECOND
        );
        let e = choose(24 * h, Some(Duration::from_secs(1)), 60, 1000).unwrap_err();
        assert!(e.to_string().contains("at most 1000"), "{e}");
        assert!(choose(h, Some(Duration::from_millis(10)), 60, 1000).is_err());
        assert_eq!(parse("auto").unwrap(), None);
        assert!(parse("soon").is_err());
    }
}

//! Cursors are opaque to callers: the position where a page ended (see
//! `otelhouse_storage::Cursor`) with the signal and order it belongs to,
//! as base64url JSON. A cursor used with another order is refused rather
//! than silently returning the wrong rows.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use otelhouse_schema::Signal;
use otelhouse_storage::{Cursor, Sort, SortValue};
use serde::{Deserialize, Serialize};

use crate::{Error, bad};

/// Longest cursor accepted (a text sort value travels inside).
pub const MAX_CURSOR_BYTES: usize = 16 * 1024;

#[derive(Serialize, Deserialize)]
struct Wire {
    signal: String,
    sort: String,
    desc: bool,
    value: SortValue,
    skip: usize,
}

pub fn encode(c: &Cursor, signal: Signal, sort: Sort) -> String {
    let wire = Wire {
        signal: signal.as_str().into(),
        sort: sort.column.into(),
        desc: sort.descending,
        value: c.value.clone(),
        skip: c.skip,
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).expect("plain data"))
}

pub fn decode(text: &str, signal: Signal, sort: Sort) -> Result<Cursor, Error> {
    let invalid = || bad("`cursor` is not a cursor this API returned");
    if text.len() > MAX_CURSOR_BYTES {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if wire.signal != signal.as_str() || wire.sort != sort.column || wire.desc != sort.descending {
        return Err(bad(format!(
            "`cursor` belongs to a search of {} sorted by {} {}; repeat that search's signal and sort",
            wire.signal,
            wire.sort,
            if wire.desc { "descending" } else { "ascending" }
        )));
    }
    Ok(Cursor {
        value: wire.value,
        skip: wire.skip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_refuses_another_order_or_garbage() {
        let c = Cursor {
            value: SortValue::Int(1_700_000_000_000_000_000),
            skip: 3,
        };
        let sort = Sort::default();
        let text = encode(&c, Signal::Logs, sort);
        assert_eq!(decode(&text, Signal::Logs, sort).unwrap(), c);
        let other = Sort {
            descending: false,
            ..sort
        };
        assert!(
            decode(&text, Signal::Logs, other)
                .unwrap_err()
                .to_string()
                .contains("sorted by Timestamp descending")
        );
        assert!(decode(&text, Signal::Traces, sort).is_err());
        for junk in ["", "!!", "e30", &"A".repeat(MAX_CURSOR_BYTES + 1)] {
            assert!(decode(junk, Signal::Logs, sort).is_err(), "{junk:.20}");
        }
    }
}

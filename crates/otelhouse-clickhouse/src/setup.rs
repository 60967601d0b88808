//! The tables at start: ClickStack's DDL for the server's version, each
//! table created if missing, and retention kept in step with
//! `ALTER TABLE … MODIFY TTL` whenever the configured one differs from the
//! table's.

use std::time::Duration;

use otelhouse_schema::Table;

use crate::client::{ClickHouseError, Client, Statement};
use crate::ddl::{self, Layout, Version};

/// ClickHouse's ACCESS_DENIED: the user lacks a grant.
const ACCESS_DENIED: u32 = 497;

/// `SELECT version()`.
pub async fn server_version(client: &Client) -> Result<Version, ClickHouseError> {
    let st = Statement {
        sql: "SELECT version()".into(),
        params: Vec::new(),
    };
    let text = client.query(&st, &[]).await?;
    let text = String::from_utf8_lossy(&text);
    Version::parse(&text).ok_or_else(|| {
        ClickHouseError::Config(format!("cannot read the ClickHouse version from {text:?}"))
    })
}

/// `name → CREATE statement` of the database's tables the user can see.
async fn existing_tables(
    client: &Client,
    database: &str,
) -> Result<Vec<(String, String)>, ClickHouseError> {
    let mut st = Statement::default();
    let db = st.bind("String", database);
    st.sql = format!(
        "SELECT name, create_table_query FROM system.tables WHERE database = {db} FORMAT JSONCompactEachRow"
    );
    let body = client.query(&st, &[]).await?;
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<(String, String)>(l)
                .map_err(|e| ClickHouseError::Config(format!("system.tables answer: {e}")))
        })
        .collect()
}

/// Creates what is missing (the database, when the user may; every
/// table) and brings each table's TTL to `retention`. Returns the layout
/// the tables follow.
pub async fn ensure_tables(
    client: &Client,
    cluster: Option<&str>,
    retention: impl Fn(Table) -> Duration,
) -> Result<Layout, ClickHouseError> {
    let server = client.without_database();
    let layout = Layout {
        database: client.database().to_string(),
        version: server_version(&server).await?,
        cluster: cluster.map(str::to_string),
    };
    let mut st = Statement::default();
    let db = st.bind("String", &layout.database);
    st.sql = format!("SELECT count() FROM system.databases WHERE name = {db}");
    let found = server.query(&st, &[]).await?;
    if found.trim_ascii() == b"0" {
        let create = ddl::create_all(&layout, &retention)
            .into_iter()
            .next()
            .expect("CREATE DATABASE first");
        run(&server, &create).await.map_err(|e| match e {
            ClickHouseError::Server { code, message } if code == ACCESS_DENIED => {
                ClickHouseError::Config(format!(
                    "the database `{}` does not exist and this user may not create it: run `otelhouse clickhouse provision` ({message})",
                    layout.database
                ))
            }
            e => e,
        })?;
    }
    let existing = existing_tables(client, &layout.database).await?;
    for table in Table::ALL {
        let have = |name: &str| existing.iter().any(|(n, _)| n == name);
        if have(table.name()) && have(&ddl::storage_table(&layout, table)) {
            continue;
        }
        for sql in ddl::create_table(&layout, table, retention(table)) {
            run(client, &sql).await?;
        }
        tracing::info!(table = table.name(), database = %layout.database, "created ClickHouse table");
    }
    sync_retention(client, &layout, retention).await?;
    Ok(layout)
}

/// Runs `ALTER TABLE … MODIFY TTL` on each table whose TTL is not
/// `retention`; returns the tables changed. Without the grant to alter
/// (the ingestion user of `otelhouse clickhouse provision` has none), the
/// error names the statement for an administrator to run.
pub async fn sync_retention(
    client: &Client,
    layout: &Layout,
    retention: impl Fn(Table) -> Duration,
) -> Result<Vec<Table>, ClickHouseError> {
    let existing = existing_tables(client, &layout.database).await?;
    let mut changed = Vec::new();
    for table in Table::ALL {
        let name = ddl::storage_table(layout, table);
        let Some((_, create)) = existing.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        let want = ddl::ttl_seconds_for(retention(table));
        let have = ttl_seconds(create);
        if have == Some(want) {
            continue;
        }
        let sql = ddl::modify_ttl(layout, table, retention(table));
        run(client, &sql).await.map_err(|e| match e {
            ClickHouseError::Server { code, message } if code == ACCESS_DENIED => {
                ClickHouseError::Config(format!(
                    "retention of {name} changed, but this ClickHouse user may not alter it; an administrator can run: {sql} ({message})"
                ))
            }
            e => e,
        })?;
        tracing::info!(
            table = %name,
            from_seconds = have.map_or(-1, |s| s as i64),
            to_seconds = want,
            "ClickHouse retention changed (ALTER TABLE … MODIFY TTL)"
        );
        changed.push(table);
    }
    Ok(changed)
}

async fn run(client: &Client, sql: &str) -> Result<(), ClickHouseError> {
    let st = Statement {
        sql: sql.to_string(),
        params: Vec::new(),
    };
    client.query(&st, &[]).await.map(|_| ())
}

/// The retention in a table's CREATE statement: the sum of the
/// `toInterval<Unit>(n)` terms of its `TTL` clause (ClickStack writes
/// `toIntervalDay(3)`, we write seconds). None when there is no TTL or it
/// has another shape (then it is replaced).
pub fn ttl_seconds(create: &str) -> Option<u64> {
    let ttl = create.split_once(" TTL ")?.1;
    let ttl = ttl.split(" SETTINGS ").next()?;
    let mut total = 0u64;
    let mut found = false;
    for part in ttl.split("toInterval").skip(1) {
        let (unit, rest) = part.split_once('(')?;
        let n: u64 = rest.split_once(')')?.0.trim().parse().ok()?;
        let secs = match unit {
            "Second" => 1,
            "Minute" => 60,
            "Hour" => 3600,
            "Day" => 86_400,
            "Week" => 7 * 86_400,
            _ => return None,
        };
        total += n * secs;
        found = true;
    }
    found.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_clauses_read_back_in_seconds() {
        let ours = "CREATE TABLE otel.otel_logs (`x` UInt8) ENGINE = MergeTree ORDER BY x TTL toDateTime(TimestampTime) + toIntervalSecond(259200) SETTINGS index_granularity = 8192";
        assert_eq!(ttl_seconds(ours), Some(259_200));
        let clickstack = "CREATE TABLE otel.otel_logs (`x` UInt8) ENGINE = MergeTree ORDER BY x TTL TimestampTime + toIntervalDay(3) SETTINGS ttl_only_drop_parts = 1";
        assert_eq!(ttl_seconds(clickstack), Some(259_200));
        assert_eq!(
            ttl_seconds("CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x"),
            None
        );
        assert_eq!(
            ttl_seconds("CREATE TABLE t ENGINE = MergeTree TTL x + toIntervalMonth(1)"),
            None
        );
    }
}

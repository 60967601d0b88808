//! Least-privilege ClickHouse access for otelhouse (`otelhouse clickhouse
//! provision`), and the proof that it holds (`otelhouse clickhouse verify`).
//!
//! Two users: the ingestion user creates the tables and inserts (exactly
//! SELECT, INSERT, CREATE TABLE, CREATE VIEW on the database); the query
//! user holds the reader role (SELECT on the database) and a settings
//! profile with `readonly = 1` where only the settings the app sends per
//! query are `CHANGEABLE_IN_READONLY`, each with a MAX bound. Passwords
//! travel and print only as salted SHA-256 hashes (`sha256_hash … SALT`).
//! Every statement is idempotent: re-running converges users, grants,
//! profile and quota to this description (`WITH REPLACE OPTION`).

use sha2::{Digest, Sha256};

use crate::client::{ClickHouseError, Client, Statement};
use crate::compile::ident;

/// Names and limits of what `provision` creates.
#[derive(Debug, Clone)]
pub struct Plan {
    pub database: String,
    pub cluster: Option<String>,
    pub ingest_user: String,
    pub query_user: String,
    pub reader_role: String,
    pub profile: String,
    pub quota: String,
    /// `HOST IP` of both users (`--allow-from`); None: any host.
    pub allow_from: Vec<String>,
    pub limits: QueryLimits,
}

/// Bounds of the query user's settings profile and quota.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    pub max_execution_time_secs: u64,
    pub max_rows_to_read: u64,
    pub max_memory_usage: u64,
    pub max_result_rows: u64,
    pub queries_per_minute: u64,
    pub read_rows_per_hour: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_execution_time_secs: 300,
            max_rows_to_read: 10_000_000_000,
            max_memory_usage: 8_000_000_000,
            max_result_rows: 1_000_000,
            queries_per_minute: 6_000,
            read_rows_per_hour: 1_000_000_000_000,
        }
    }
}

impl Plan {
    pub fn new(database: &str, ingest_user: &str, query_user: &str) -> Plan {
        Plan {
            database: database.to_string(),
            cluster: None,
            ingest_user: ingest_user.to_string(),
            query_user: query_user.to_string(),
            reader_role: "otelhouse_reader".into(),
            profile: "otelhouse_query_profile".into(),
            quota: "otelhouse_query_quota".into(),
            allow_from: Vec::new(),
            limits: QueryLimits::default(),
        }
    }

    fn host(&self) -> String {
        if self.allow_from.is_empty() {
            " HOST ANY".into()
        } else {
            let ips: Vec<String> = self.allow_from.iter().map(|c| literal(c)).collect();
            format!(" HOST IP {}", ips.join(", "))
        }
    }

    /// The settings the query user's profile fixes or lets the app change.
    /// Every per-query setting `reads.rs` sends must be here, or ClickHouse
    /// refuses the query under `readonly = 1`.
    fn profile_settings(&self) -> Vec<String> {
        let l = &self.limits;
        vec![
            "readonly = 1".into(),
            format!(
                "max_execution_time = 30 MIN 1 MAX {} CHANGEABLE_IN_READONLY",
                l.max_execution_time_secs
            ),
            "timeout_overflow_mode = 'throw' CHANGEABLE_IN_READONLY".into(),
            format!(
                "max_rows_to_read = 2000000000 MIN 1 MAX {} CHANGEABLE_IN_READONLY",
                l.max_rows_to_read
            ),
            "read_overflow_mode = 'throw' CHANGEABLE_IN_READONLY".into(),
            "cancel_http_readonly_queries_on_client_close = 1 CHANGEABLE_IN_READONLY".into(),
            "wait_end_of_query = 1 CHANGEABLE_IN_READONLY".into(),
            format!(
                "max_result_rows = {0} MIN 1 MAX {0} CHANGEABLE_IN_READONLY",
                l.max_result_rows
            ),
            "result_overflow_mode = 'throw' CHANGEABLE_IN_READONLY".into(),
            "output_format_json_quote_64bit_integers CHANGEABLE_IN_READONLY".into(),
            "date_time_output_format CHANGEABLE_IN_READONLY".into(),
            "session_timezone CHANGEABLE_IN_READONLY".into(),
            // SQL mode cuts each signal table to the requested time range.
            "additional_table_filters CHANGEABLE_IN_READONLY".into(),
            format!("max_memory_usage = {0} MAX {0}", l.max_memory_usage),
        ]
    }

    /// The statements, in order. `passwords`: (ingest, query) plaintext,
    /// turned into salted hashes here; `tables`: the DDL to create the
    /// signal tables (run as the administrator, so the ingestion user
    /// never needs `ON CLUSTER` rights).
    pub fn statements(
        &self,
        passwords: (&str, &str),
        salts: (&str, &str),
        tables: &[String],
    ) -> Vec<String> {
        let db = ident(&self.database);
        let on = crate::ddl::on_cluster(self.cluster.as_deref());
        let (role, profile, quota) = (
            ident(&self.reader_role),
            ident(&self.profile),
            ident(&self.quota),
        );
        let (ingest, query) = (ident(&self.ingest_user), ident(&self.query_user));
        let l = &self.limits;
        let identified = |password: &str, salt: &str| {
            format!(
                "IDENTIFIED WITH sha256_hash BY {} SALT {}",
                literal(&sha256_hex(password, salt)),
                literal(salt)
            )
        };
        let mut out = vec![format!("CREATE DATABASE IF NOT EXISTS {db}{on}")];
        out.extend(tables.iter().cloned());
        out.extend([
            format!(
                "CREATE SETTINGS PROFILE OR REPLACE {profile}{on} SETTINGS {}",
                self.profile_settings().join(", ")
            ),
            format!("CREATE ROLE IF NOT EXISTS {role}{on}"),
            format!("GRANT{on} SELECT ON {db}.* TO {role} WITH REPLACE OPTION"),
            format!(
                "CREATE USER IF NOT EXISTS {query}{on} {}{} DEFAULT ROLE NONE",
                identified(passwords.1, salts.1),
                self.host()
            ),
            format!(
                "ALTER USER {query}{on} {}{} SETTINGS PROFILE {profile}",
                identified(passwords.1, salts.1),
                self.host()
            ),
            format!("GRANT{on} {role} TO {query} WITH REPLACE OPTION"),
            format!("ALTER USER {query}{on} DEFAULT ROLE {role}"),
            format!(
                "CREATE QUOTA OR REPLACE {quota}{on} FOR INTERVAL 1 minute MAX queries = {}, FOR INTERVAL 1 hour MAX read_rows = {}, execution_time = {} TO {role}",
                l.queries_per_minute,
                l.read_rows_per_hour,
                // An hour of query time per hour: bounds a runaway client.
                3600
            ),
            format!(
                "CREATE USER IF NOT EXISTS {ingest}{on} {}{}",
                identified(passwords.0, salts.0),
                self.host()
            ),
            format!(
                "ALTER USER {ingest}{on} {}{}",
                identified(passwords.0, salts.0),
                self.host()
            ),
            format!(
                "GRANT{on} SELECT, INSERT, CREATE TABLE, CREATE VIEW ON {db}.* TO {ingest} WITH REPLACE OPTION"
            ),
        ]);
        out
    }

    /// The privileges each user must end up with, as `SHOW GRANTS FINAL`
    /// lists them: (privilege, on).
    pub fn expected_grants(&self, user: &str) -> Vec<(String, String)> {
        let on = format!("{}.*", self.database);
        let privs: &[&str] = if user == self.ingest_user {
            &["SELECT", "INSERT", "CREATE TABLE", "CREATE VIEW"]
        } else {
            &["SELECT"]
        };
        privs.iter().map(|p| (p.to_string(), on.clone())).collect()
    }
}

/// A SQL string literal (only for our own generated values: hashes, salts,
/// CIDRs checked by [`check_cidr`]).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `n` random bytes from the OS as hex: generated passwords and salts.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// ClickHouse's `sha256_hash`: hex SHA-256 of the password followed by the salt.
pub fn sha256_hex(password: &str, salt: &str) -> String {
    let mut h = Sha256::new();
    h.update(password.as_bytes());
    h.update(salt.as_bytes());
    hex::encode(h.finalize())
}

/// A user, role or cluster name: quoted as an identifier, so it may hold
/// no backtick; kept to what names need.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} `{name}`: use 1–64 letters, digits, `_`, `-` or `.`"
        ))
    }
}

/// `--allow-from` values: an IPv4 or IPv6 address with an optional prefix.
pub fn check_cidr(s: &str) -> Result<(), String> {
    let (ip, prefix) = s.split_once('/').unwrap_or((s, ""));
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address or CIDR such as 10.0.0.0/8"))?;
    if !prefix.is_empty() {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(p) if p <= max => {}
            _ => return Err(format!("`{s}`: the prefix must be 0–{max}")),
        }
    }
    Ok(())
}

/// One grant line of `SHOW GRANTS`: `GRANT SELECT, INSERT ON otel.* TO u`
/// → [("SELECT", "otel.*"), ("INSERT", "otel.*")]. Role grants
/// (`GRANT role TO user`) and REVOKE lines give nothing.
pub fn parse_grant(line: &str) -> Vec<(String, String)> {
    let Some(rest) = line.trim().strip_prefix("GRANT ") else {
        return Vec::new();
    };
    let Some((privs, rest)) = rest.split_once(" ON ") else {
        return Vec::new();
    };
    let on = rest
        .split(" TO ")
        .next()
        .unwrap_or("")
        .trim()
        .replace('`', "");
    privs
        .split(',')
        .map(|p| (p.trim().to_string(), on.clone()))
        .collect()
}

/// What a user may do beyond, or lacks against, its expected grants.
#[derive(Debug, Default, PartialEq)]
pub struct GrantDiff {
    pub missing: Vec<String>,
    pub excess: Vec<String>,
}

/// Whether the grant `have` gives the privilege `want`: the same or a
/// parent privilege (`ALL`, `CREATE` for `CREATE TABLE`) on the same or a
/// wider object (`*.*`, `db.*` for `db.t`).
fn covers(have: &(String, String), want: &(String, String)) -> bool {
    let (hp, hon) = have;
    let (wp, won) = want;
    let privilege = hp == wp || hp == "ALL" || wp.starts_with(&format!("{hp} "));
    let db = |on: &str| on.split('.').next().unwrap_or("").to_string();
    let object = hon == won || hon == "*.*" || (hon.ends_with(".*") && db(hon) == db(won));
    privilege && object
}

pub fn diff_grants(have: &[(String, String)], want: &[(String, String)]) -> GrantDiff {
    let show = |(p, on): &(String, String)| format!("{p} ON {on}");
    GrantDiff {
        missing: want
            .iter()
            .filter(|w| !have.iter().any(|h| covers(h, w)))
            .map(show)
            .collect(),
        excess: have
            .iter()
            .filter(|h| !want.contains(h))
            .map(show)
            .collect(),
    }
}

/// One finding of `verify`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub user: String,
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

async fn run(
    client: &Client,
    sql: &str,
    settings: &[(&str, String)],
) -> Result<String, ClickHouseError> {
    let st = Statement {
        sql: sql.into(),
        params: Vec::new(),
    };
    client
        .query(&st, settings)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
}

/// ClickHouse refused for lack of rights or read-only mode (not an outage).
fn refused(e: &ClickHouseError) -> bool {
    // ACCESS_DENIED, READONLY, SETTING_CONSTRAINT_VIOLATION, QUERY_IS_PROHIBITED.
    matches!(e, ClickHouseError::Server { code, .. } if matches!(code, 497 | 164 | 452 | 392))
}

fn finding(user: &str, check: &str, ok: bool, detail: impl Into<String>) -> Finding {
    Finding {
        user: user.into(),
        check: check.into(),
        ok,
        detail: detail.into(),
    }
}

/// A probe that must be refused for lack of rights: passed when it was,
/// failed when it ran (`allowed` says what that means) or failed otherwise.
fn must_refuse(
    user: &str,
    check: &str,
    result: Result<String, ClickHouseError>,
    refused_detail: String,
    allowed: String,
) -> Finding {
    match result {
        Err(e) if refused(&e) => finding(user, check, true, refused_detail),
        Err(e) => finding(
            user,
            check,
            false,
            format!("failed for another reason: {e}"),
        ),
        Ok(_) => finding(user, check, false, allowed),
    }
}

/// Logs in as `client`'s user and compares `SHOW GRANTS FINAL` (every
/// privilege, roles included) with what the plan gives that user.
async fn check_grants(plan: &Plan, user: &str, client: &Client) -> Finding {
    match run(client, "SHOW GRANTS FINAL", &[]).await {
        Ok(text) => {
            let have: Vec<(String, String)> = text.lines().flat_map(parse_grant).collect();
            let diff = diff_grants(&have, &plan.expected_grants(user));
            let mut detail = Vec::new();
            if !diff.missing.is_empty() {
                detail.push(format!("missing grant: {}", diff.missing.join("; ")));
            }
            if !diff.excess.is_empty() {
                detail.push(format!("excess grant: {}", diff.excess.join("; ")));
            }
            let ok = detail.is_empty();
            if ok {
                detail.push(format!(
                    "exactly {}",
                    plan.expected_grants(user)
                        .iter()
                        .map(|(p, on)| format!("{p} ON {on}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            finding(user, "grants", ok, detail.join("; "))
        }
        Err(e) => finding(
            user,
            "grants",
            false,
            format!("SHOW GRANTS FINAL failed: {e}"),
        ),
    }
}

/// `otelhouse clickhouse verify`: proves each user's privileges by using
/// them. Nothing it tries writes a row, even where a check fails.
pub async fn verify(
    plan: &Plan,
    ingest: &Client,
    query: &Client,
    app_settings: &[(&str, String)],
) -> Vec<Finding> {
    let db = ident(&plan.database);
    let (iu, qu) = (plan.ingest_user.as_str(), plan.query_user.as_str());
    let mut out = Vec::new();
    let logs = format!("{db}.`otel_logs`");

    // Nothing else means anything until the user can see the database.
    let mut st = Statement::default();
    let name = st.bind("String", &plan.database);
    st.sql =
        format!("SELECT count() FROM system.tables WHERE database = {name} AND name = 'otel_logs'");
    match query.without_database().query(&st, &[]).await {
        Ok(b) if String::from_utf8_lossy(&b).trim() == "1" => {}
        Ok(_) => {
            out.push(finding(qu, "sees the tables", false, format!(
                "{}.otel_logs does not exist or this user may not see it: run `otelhouse clickhouse provision`",
                plan.database
            )));
            return out;
        }
        Err(e) => {
            out.push(finding(qu, "connects", false, e.to_string()));
            return out;
        }
    }

    // The query user: reads with the app's settings...
    out.push(
        match run(
            query,
            &format!("SELECT count() FROM {logs} WHERE 0"),
            app_settings,
        )
        .await
        {
            Ok(_) => finding(
                qu,
                "reads with the app's settings",
                true,
                "SELECT with max_execution_time, max_rows_to_read, read_overflow_mode, … accepted",
            ),
            Err(e) => finding(qu, "reads with the app's settings", false, e.to_string()),
        },
    );
    // ...cannot write (an INSERT of no rows: harmless if it were allowed)...
    let insert = format!("INSERT INTO {logs} SELECT * FROM {logs} LIMIT 0");
    out.push(must_refuse(
        qu,
        "cannot write",
        run(query, &insert, &[]).await,
        "INSERT refused".into(),
        format!("INSERT into {logs} was allowed: excess grant INSERT or readonly is off"),
    ));
    // ...cannot lift its own limits...
    let lift = [("readonly", "0".to_string())];
    out.push(must_refuse(
        qu,
        "cannot leave read-only mode",
        run(query, "SELECT 1", &lift).await,
        "readonly=0 refused".into(),
        "readonly=0 was accepted: the settings profile is missing".into(),
    ));
    let beyond = [(
        "max_execution_time",
        (plan.limits.max_execution_time_secs + 1).to_string(),
    )];
    out.push(must_refuse(
        qu,
        "settings are bounded",
        run(query, "SELECT 1", &beyond).await,
        "max_execution_time above its MAX refused".into(),
        "max_execution_time above the profile's MAX was accepted".into(),
    ));
    // ...and sees no other database.
    out.push(other_databases(qu, query, &plan.database).await);
    out.push(check_grants(plan, qu, query).await);

    // The ingestion user: inserts (no rows) and reads its tables...
    out.push(match run(ingest, &insert, &[]).await {
        Ok(_) => finding(iu, "inserts", true, format!("INSERT into {logs} allowed")),
        Err(e) => finding(iu, "inserts", false, e.to_string()),
    });
    out.push(other_databases(iu, ingest, &plan.database).await);
    out.push(check_grants(plan, iu, ingest).await);
    out
}

/// Tables of other databases the user can see (`system.tables` lists only
/// what a user may access).
async fn other_databases(user: &str, client: &Client, database: &str) -> Finding {
    let mut st = Statement::default();
    let db = st.bind("String", database);
    st.sql = format!(
        "SELECT arrayStringConcat(groupArray(10)(concat(database, '.', name)), ', ') FROM system.tables WHERE database NOT IN ({db}, 'system', 'information_schema', 'INFORMATION_SCHEMA')"
    );
    match client.query(&st, &[]).await {
        Ok(body) => {
            let seen = String::from_utf8_lossy(&body).trim().to_string();
            if seen.is_empty() {
                finding(
                    user,
                    "sees no other database",
                    true,
                    format!("only {database} (and system)"),
                )
            } else {
                finding(
                    user,
                    "sees no other database",
                    false,
                    format!("excess grant: it can read {seen}"),
                )
            }
        }
        Err(e) => finding(user, "sees no other database", false, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_and_differences_are_named() {
        assert_eq!(
            parse_grant("GRANT SELECT, INSERT, CREATE TABLE ON otel.* TO otelhouse_ingest"),
            vec![
                ("SELECT".into(), "otel.*".into()),
                ("INSERT".into(), "otel.*".into()),
                ("CREATE TABLE".into(), "otel.*".into())
            ]
        );
        assert!(parse_grant("GRANT otelhouse_reader TO otelhouse_query").is_empty());
        let plan = Plan::new("otel", "otelhouse_ingest", "otelhouse_query");
        let have: Vec<_> = [
            "GRANT SELECT, INSERT ON otel.* TO otelhouse_ingest",
            "GRANT DROP TABLE ON otel.* TO otelhouse_ingest",
        ]
        .iter()
        .flat_map(|l| parse_grant(l))
        .collect();
        let d = diff_grants(&have, &plan.expected_grants("otelhouse_ingest"));
        assert_eq!(
            d.missing,
            vec!["CREATE TABLE ON otel.*", "CREATE VIEW ON otel.*"]
        );
        assert_eq!(d.excess, vec!["DROP TABLE ON otel.*"]);
        let all = parse_grant("GRANT ALL ON *.* TO default WITH GRANT OPTION");
        let d = diff_grants(&all, &plan.expected_grants("otelhouse_query"));
        assert_eq!(d.excess, vec!["ALL ON *.*"]);
        assert!(d.missing.is_empty(), "ALL covers SELECT: {:?}", d.missing);
        // Wider grants give what is wanted, and are named as excess.
        let wide: Vec<_> = ["GRANT SELECT, INSERT, CREATE ON *.* TO otelhouse_ingest"]
            .iter()
            .flat_map(|l| parse_grant(l))
            .collect();
        let d = diff_grants(&wide, &plan.expected_grants("otelhouse_ingest"));
        assert!(
            d.missing.is_empty(),
            "CREATE covers CREATE VIEW: {:?}",
            d.missing
        );
        assert_eq!(
            d.excess,
            vec!["SELECT ON *.*", "INSERT ON *.*", "CREATE ON *.*"]
        );
    }

    #[test]
    fn passwords_are_sent_only_as_salted_hashes() {
        let plan = Plan::new("otel", "otelhouse_ingest", "otelhouse_query");
        let sql = plan
            .statements(("ingest-secret-1", "query-secret-2"), ("s1", "s2"), &[])
            .join("\n");
        assert!(!sql.contains("ingest-secret-1") && !sql.contains("query-secret-2"));
        assert!(sql.contains(&sha256_hex("query-secret-2", "s2")));
        // sha256("abc") — the salt is appended to the password.
        assert_eq!(
            sha256_hex("ab", "c"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("user", "otelhouse_ingest").is_ok());
        assert!(check_name("cluster", "prod-eu.1").is_ok());
        assert!(check_name("user", "a`b").unwrap_err().contains("letters"));
        assert!(check_name("user", "").is_err());
    }

    #[test]
    fn cidrs_are_checked() {
        assert!(check_cidr("10.0.0.0/8").is_ok());
        assert!(check_cidr("2001:db8::/32").is_ok());
        assert!(check_cidr("10.0.0.5").is_ok());
        assert!(check_cidr("10.0.0.0/33").unwrap_err().contains("0–32"));
        assert!(check_cidr("0.0.0.0/0'; DROP").is_err());
        assert!(check_cidr("example.com").unwrap_err().contains("not an IP"));
    }
}

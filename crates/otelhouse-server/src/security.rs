//! The startup gate: when any listener binds a non-loopback address,
//! otelhouse refuses to start on insecure settings. Each refusal names the
//! setting and the fix; each check has an explicit override, logged at every
//! start and reported at `GET /api/v1/security` and in `/metrics`.

use std::net::SocketAddr;

use serde::Serialize;

use crate::config::ServeConfig;

/// One check's outcome.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    /// Stable name, also the `check` label in /metrics.
    pub check: &'static str,
    /// The production-checklist ids it covers.
    pub checklist: &'static str,
    pub passed: bool,
    /// Failed, but the operator overrode it explicitly.
    pub overridden: bool,
    /// What was found (never a secret's value).
    pub detail: String,
    /// How to fix it, and the override that silences it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

impl Check {
    /// A check that passed (`failure` None, described by `ok`), or failed
    /// with what was found and the fix; `allowed`: its override is given.
    fn new(
        check: &'static str,
        checklist: &'static str,
        ok: String,
        failure: Option<(String, String)>,
        allowed: bool,
    ) -> Check {
        let (passed, detail, fix) = match failure {
            None => (true, ok, String::new()),
            Some((found, fix)) => (false, found, fix),
        };
        Check {
            check,
            checklist,
            passed,
            overridden: !passed && allowed,
            detail,
            fix,
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct GateReport {
    /// Some listener binds a non-loopback address, so failures refuse the start.
    pub public: bool,
    pub checks: Vec<Check>,
}

impl GateReport {
    /// Failed checks that stop the start.
    pub fn refusals(&self) -> Vec<&Check> {
        if !self.public {
            return Vec::new();
        }
        self.checks
            .iter()
            .filter(|c| !c.passed && !c.overridden)
            .collect()
    }

    pub fn overrides(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed && c.overridden)
    }

    /// The error a refused start prints: every refusal with its fix.
    pub fn refusal_message(&self) -> Option<String> {
        let refusals = self.refusals();
        if refusals.is_empty() {
            return None;
        }
        let mut msg = format!(
            "refusing to start: otelhouse listens on a non-loopback address and {} check{} failed:",
            refusals.len(),
            if refusals.len() == 1 { "" } else { "s" }
        );
        for c in refusals {
            msg += &format!("\n  - [{}] {}\n    fix: {}", c.checklist, c.detail, c.fix);
        }
        Some(msg)
    }

    /// Logs overrides (at every start) and, on loopback-only servers, the
    /// failures that would refuse a public start.
    pub fn log(&self) {
        for c in self.overrides() {
            tracing::warn!(
                check = c.check,
                checklist = c.checklist,
                "security override in effect: {}",
                c.detail
            );
        }
        if !self.public {
            for c in self.checks.iter().filter(|c| !c.passed && !c.overridden) {
                tracing::info!(
                    check = c.check,
                    "would refuse a non-loopback start: {} (fix: {})",
                    c.detail,
                    c.fix
                );
            }
        }
    }
}

/// A listener as the gate sees it.
pub struct Listener {
    pub flag: &'static str,
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Facts the gate judges, gathered by the caller.
pub struct Facts {
    pub listeners: Vec<Listener>,
    pub session_secret_source: String,
    pub session_secret_weaknesses: Vec<String>,
    /// Admins with a default or weak password; None when not checked
    /// (a loopback-only server skips the slow password hashing).
    pub weak_admins: Option<Vec<String>>,
}

pub fn is_public(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

pub fn evaluate(config: &ServeConfig, facts: &Facts) -> GateReport {
    let sec = &config.security;
    let public = facts.listeners.iter().any(|l| is_public(&l.addr));
    let mut checks = Vec::new();

    let plaintext: Vec<String> = facts
        .listeners
        .iter()
        .filter(|l| is_public(&l.addr) && !l.tls)
        .map(|l| format!("--{} {}", l.flag, l.addr))
        .collect();
    checks.push(Check::new(
        "tls_on_public_listeners",
        "ING-2, TLS-1",
        "every non-loopback listener uses TLS".into(),
        (!plaintext.is_empty()).then(|| (
            format!("TLS is off on non-loopback listener(s): {}", plaintext.join(", ")),
            "give --tls-cert FILE --tls-key FILE (make them with `otelhouse certs init-ca` and `otelhouse certs issue --dns HOST`), or bind 127.0.0.1; if a TLS proxy terminates in front of otelhouse, --allow-plaintext-behind-proxy".into(),
        )),
        sec.allow_plaintext_behind_proxy,
    ));

    let weak = &facts.session_secret_weaknesses;
    checks.push(Check::new(
        "session_secret",
        "SEC-1",
        format!("session secret from {} is strong", facts.session_secret_source),
        (!weak.is_empty()).then(|| (
            format!("the session secret from {}: {}", facts.session_secret_source, weak.join("; ")),
            "unset OTELHOUSE_SESSION_SECRET(_FILE) to use the generated one in the data directory, or supply 32 random bytes (`openssl rand -hex 32`) in a 0600 file via OTELHOUSE_SESSION_SECRET_FILE; override: --allow-weak-session-secret".into(),
        )),
        sec.allow_weak_session_secret,
    ));

    // No setting turns ingestion keys off, so this cannot fail; it is
    // reported so the audit shows it was checked.
    checks.push(Check::new(
        "ingestion_keys_required",
        "ING-1",
        "every OTLP request needs an ingestion key (there is no setting to turn this off)".into(),
        None,
        false,
    ));

    let (ok, weak_admins) = match &facts.weak_admins {
        Some(w) => ("no admin has a default or weak password", w.as_slice()),
        None => ("not checked: every listener is on loopback", &[][..]),
    };
    checks.push(Check::new(
        "admin_passwords",
        "APP-1",
        ok.into(),
        weak_admins.first().map(|first| (
            format!("admin(s) with a default or weak password: {}", weak_admins.join(", ")),
            format!("`otelhouse users set-password --email {first}` (reads the new password from stdin); override: --allow-weak-admin-password"),
        )),
        sec.allow_weak_admin_password,
    ));

    if let Some(url) = &config.clickhouse.url {
        let ch = &config.clickhouse;
        let failure = clickhouse_link_weakness(url, ch.insecure_skip_verify);
        checks.push(Check::new(
            "clickhouse_tls",
            "TLS-4, CH-2",
            format!("ClickHouse at {url} is reached over verified TLS (or on loopback)"),
            failure.map(|found| (
                found,
                "use an https:// --clickhouse-url with --clickhouse-ca FILE (or a certificate from the system's roots) and drop --clickhouse-insecure-skip-verify; override: --allow-insecure-clickhouse".into(),
            )),
            ch.allow_insecure_clickhouse,
        ));
    }

    GateReport { public, checks }
}

/// Why the link to ClickHouse at `url` is not verified TLS, if it is not:
/// plaintext to a host other than loopback, or verification turned off.
pub fn clickhouse_link_weakness(url: &str, insecure_skip_verify: bool) -> Option<String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if scheme.eq_ignore_ascii_case("https") {
        insecure_skip_verify.then(|| format!(
            "ClickHouse at {url}: certificate verification is off (--clickhouse-insecure-skip-verify)"
        ))
    } else if loopback {
        None
    } else {
        Some(format!(
            "ClickHouse at {url} is reached in plaintext ({scheme}://): telemetry and passwords cross the network unencrypted"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(addr: &str, tls: bool) -> Facts {
        Facts {
            listeners: vec![Listener {
                flag: "otlp-grpc-addr",
                addr: addr.parse().unwrap(),
                tls,
            }],
            session_secret_source: "test".into(),
            session_secret_weaknesses: vec![],
            weak_admins: Some(vec![]),
        }
    }

    #[test]
    fn loopback_never_refuses() {
        let mut f = facts("127.0.0.1:4317", false);
        f.session_secret_weaknesses = vec!["it is a publicly known default".into()];
        let r = evaluate(&ServeConfig::default(), &f);
        assert!(!r.public && r.refusal_message().is_none());
        let r = evaluate(&ServeConfig::default(), &facts("[::1]:4317", false));
        assert!(r.refusal_message().is_none());
    }

    #[test]
    fn each_refusal_names_setting_and_fix_and_has_an_override() {
        let mut config = ServeConfig::default();
        let mut f = facts("0.0.0.0:4317", false);
        f.session_secret_weaknesses = vec!["it is a publicly known default".into()];
        f.weak_admins = Some(vec!["admin@otelhouse.local".into()]);
        let msg = evaluate(&config, &f).refusal_message().unwrap();
        assert!(msg.contains("3 checks failed"), "{msg}");
        assert!(
            msg.contains("--otlp-grpc-addr 0.0.0.0:4317") && msg.contains("--tls-cert"),
            "{msg}"
        );
        assert!(
            msg.contains("publicly known default") && msg.contains("OTELHOUSE_SESSION_SECRET_FILE"),
            "{msg}"
        );
        assert!(
            msg.contains("users set-password --email admin@otelhouse.local"),
            "{msg}"
        );

        config.security.allow_plaintext_behind_proxy = true;
        let msg = evaluate(&config, &f).refusal_message().unwrap();
        assert!(
            msg.contains("2 checks failed") && !msg.contains("--tls-cert"),
            "{msg}"
        );
        config.security.allow_weak_session_secret = true;
        config.security.allow_weak_admin_password = true;
        let r = evaluate(&config, &f);
        assert!(r.refusal_message().is_none());
        assert_eq!(r.overrides().count(), 3);

        let ok = evaluate(&ServeConfig::default(), &facts("10.0.0.5:4317", true));
        assert!(ok.refusal_message().is_none() && ok.overrides().count() == 0);
    }

    #[test]
    fn clickhouse_must_be_reached_over_verified_tls() {
        assert_eq!(
            clickhouse_link_weakness("https://ch.example:8443", false),
            None
        );
        assert_eq!(
            clickhouse_link_weakness("http://127.0.0.1:8123", false),
            None
        );
        assert_eq!(clickhouse_link_weakness("http://[::1]:8123/", false), None);
        assert_eq!(
            clickhouse_link_weakness("http://localhost:8123", false),
            None
        );
        let w = clickhouse_link_weakness("http://ch.example:8123", false).unwrap();
        assert!(w.contains("plaintext"), "{w}");
        let w = clickhouse_link_weakness("http://user@10.0.0.9:8123", false).unwrap();
        assert!(w.contains("plaintext"), "{w}");
        let w = clickhouse_link_weakness("https://ch.example:8443", true).unwrap();
        assert!(w.contains("verification is off"), "{w}");

        let mut config = ServeConfig::default();
        config.clickhouse.url = Some("http://ch.internal:8123".into());
        let msg = evaluate(&config, &facts("0.0.0.0:4317", true))
            .refusal_message()
            .unwrap();
        assert!(
            msg.contains("[TLS-4, CH-2]") && msg.contains("--allow-insecure-clickhouse"),
            "{msg}"
        );
        config.clickhouse.allow_insecure_clickhouse = true;
        let r = evaluate(&config, &facts("0.0.0.0:4317", true));
        assert!(r.refusal_message().is_none() && r.overrides().count() == 1);
    }
}

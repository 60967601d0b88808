//! `otelhouse certs`: our own CA and certificates, and inspection of any
//! certificate file or TLS endpoint.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use otelhouse_tls::ca::{Ca, CaPaths, IssueRequest, init_ca};
use otelhouse_tls::inspect::{CertInfo, format_time, now_secs, roots, verify_chain};

#[derive(Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    action: CertsAction,
}

/// Where the CA lives and how to unlock its key.
#[derive(Args)]
struct CaDir {
    /// Directory holding ca.crt and ca.key
    #[arg(long, env = "OTELHOUSE_CA_DIR", default_value = "./otelhouse-ca")]
    ca_dir: PathBuf,
    /// File holding the CA key's passphrase (or OTELHOUSE_CA_PASSPHRASE)
    #[arg(long, env = "OTELHOUSE_CA_PASSPHRASE_FILE")]
    passphrase_file: Option<PathBuf>,
}

impl CaDir {
    fn passphrase(&self) -> anyhow::Result<Option<String>> {
        if let Some(p) = &self.passphrase_file {
            let text = otelhouse_server::config::read_secret_file(p)
                .with_context(|| format!("reading the passphrase file {}", p.display()))?;
            return Ok(Some(text));
        }
        Ok(std::env::var("OTELHOUSE_CA_PASSPHRASE").ok())
    }

    fn load(&self) -> anyhow::Result<Ca> {
        Ok(Ca::load(&self.ca_dir, self.passphrase()?.as_deref())?)
    }
}

#[derive(Subcommand)]
enum CertsAction {
    /// Create a CA (ca.crt 0644, ca.key 0600); install ca.crt in every client's trust store.
    InitCa {
        #[command(flatten)]
        ca: CaDir,
        /// The CA's name (not a host name)
        #[arg(long, default_value = "otelhouse CA")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a server certificate (or a client certificate with --client) signed by the CA.
    Issue {
        #[command(flatten)]
        ca: CaDir,
        /// DNS name clients use (repeatable)
        #[arg(long)]
        dns: Vec<String>,
        /// IP address clients use (repeatable)
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// A client certificate for mTLS (e.g. an OpenTelemetry collector)
        #[arg(long)]
        client: bool,
        /// Subject common name [default: the first --dns or --ip]
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Certificate file to write; the key goes next to it as .key [default: <ca-dir>/<name>.crt]
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show a certificate file or what a TLS server presents, and verify it.
    Show {
        /// A PEM file, or HOST:PORT
        target: String,
        /// Verify against this CA instead of the system roots
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Host name to verify a file's certificate for
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Re-issue a certificate (same names, new key) once less than a third of its lifetime remains.
    Renew {
        #[command(flatten)]
        ca: CaDir,
        /// The certificate to renew; its key is the .key next to it
        cert: PathBuf,
        /// Renew even if not yet due
        #[arg(long)]
        force: bool,
        /// New lifetime [default: the old one]
        #[arg(long)]
        days: Option<u32>,
    },
}

fn key_path(cert: &Path) -> PathBuf {
    cert.with_extension("key")
}

pub async fn run(args: CertsArgs) -> anyhow::Result<()> {
    match args.action {
        CertsAction::InitCa { ca, name, days } => {
            let passphrase = ca.passphrase()?;
            let info = init_ca(&ca.ca_dir, &name, days, passphrase.as_deref())?;
            let paths = CaPaths::in_dir(&ca.ca_dir);
            println!("created CA \"{}\"", info.common_name().unwrap_or(&name));
            println!(
                "  certificate {} (distribute to clients)",
                paths.cert.display()
            );
            println!(
                "  private key {} (0600{}; keep it off the servers)",
                paths.key.display(),
                if passphrase.is_some() {
                    ", passphrase-protected"
                } else {
                    ""
                }
            );
            println!("  valid until {}", format_time(info.not_after));
            Ok(())
        }
        CertsAction::Issue {
            ca,
            dns,
            ip,
            client,
            name,
            days,
            out,
        } => {
            let loaded = ca.load()?;
            let req = IssueRequest {
                dns,
                ips: ip,
                client,
                common_name: name,
                days,
                not_before: None,
            };
            let stem = req.subject_name().unwrap_or_else(|| "client".into());
            let cert = out.unwrap_or_else(|| ca.ca_dir.join(format!("{stem}.crt")));
            let key = key_path(&cert);
            let info = loaded.issue(&req, &cert, &key)?;
            print_info(&info, None);
            println!("certificate {}", cert.display());
            println!("key         {} (0600)", key.display());
            if info.not_after < now_secs() + days as i64 * 86_400 - 3_600 {
                println!(
                    "note: shortened to end with the CA on {}",
                    format_time(info.not_after)
                );
            }
            Ok(())
        }
        CertsAction::Show {
            target,
            ca,
            host,
            json,
        } => show(&target, ca.as_deref(), host, json).await,
        CertsAction::Renew {
            ca,
            cert,
            force,
            days,
        } => {
            let loaded = ca.load()?;
            match loaded.renew(&cert, &key_path(&cert), force, days)? {
                Some(info) => {
                    println!("renewed {} (new key)", cert.display());
                    print_info(&info, None);
                }
                None => {
                    let old = CertInfo::parse(&otelhouse_tls::files::read_certs(&cert)?[0])?;
                    println!(
                        "not due: {}; it renews once less than a third of its lifetime remains (--force to renew now)",
                        old.expiry(now_secs())
                    );
                }
            }
            Ok(())
        }
    }
}

/// `certs show FILE|HOST:PORT`: the chain, each certificate's dates, and
/// whether it verifies (with the reason when not). Exit status 1 when it
/// does not verify or any certificate is expired.
async fn show(
    target: &str,
    ca: Option<&Path>,
    host: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let path = Path::new(target);
    let (chain, name, version) = if path.exists() {
        (otelhouse_tls::files::read_certs(path)?, host, None)
    } else {
        let (h, p) = target
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .with_context(|| format!("`{target}` is neither a file nor HOST:PORT"))?;
        let presented = otelhouse_tls::probe::fetch_chain(h, p, Duration::from_secs(10)).await?;
        (
            presented.chain,
            Some(host.unwrap_or_else(|| h.to_string())),
            Some(presented.version),
        )
    };
    let infos: Vec<CertInfo> = chain
        .iter()
        .map(|c| CertInfo::parse(c))
        .collect::<Result<_, _>>()?;
    let now = now_secs();
    let store = roots(ca)?;
    // A file may hold a client certificate: verify it as one when it cannot serve.
    let as_name = if infos[0].server_auth {
        name.as_deref()
    } else {
        None
    };
    let verdict = if infos[0].server_auth && as_name.is_none() {
        Err("no host name to verify against (give --host NAME)".to_string())
    } else {
        verify_chain(
            &chain,
            store,
            as_name,
            otelhouse_tls::rustls::pki_types::UnixTime::now(),
        )
    };
    let against = ca.map_or("the system roots".to_string(), |c| c.display().to_string());
    if json {
        let out = serde_json::json!({
            "chain": infos.iter().map(|i| {
                let mut v = serde_json::to_value(i).unwrap();
                v["expiry"] = serde_json::to_value(i.expiry(now)).unwrap();
                v
            }).collect::<Vec<_>>(),
            "protocol": version,
            "verified_against": against,
            "verified_for": as_name,
            "verified": verdict.is_ok(),
            "error": verdict.as_ref().err(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if let Some(v) = version.filter(|v| !v.is_empty()) {
            println!("protocol: {v}");
        }
        for (i, info) in infos.iter().enumerate() {
            println!("[{i}]");
            print_info(info, Some(now));
        }
        match &verdict {
            Ok(()) => println!(
                "verification: OK against {against}{}",
                as_name.map(|n| format!(" for {n}")).unwrap_or_default()
            ),
            Err(e) => println!("verification: FAILED against {against}: {e}"),
        }
    }
    let expired = infos.iter().any(|i| i.expiry(now).is_unusable());
    if verdict.is_err() || expired {
        bail!("the certificate does not verify or is not within its validity");
    }
    Ok(())
}

fn print_info(info: &CertInfo, now: Option<i64>) {
    println!("  subject   {}", info.subject);
    println!("  issuer    {}", info.issuer);
    if !info.sans.is_empty() {
        println!("  names     {}", info.sans.join(", "));
    }
    let purpose = match (info.is_ca, info.server_auth, info.client_auth) {
        (true, _, _) => "CA",
        (false, true, true) => "server and client",
        (false, true, false) => "server",
        (false, false, true) => "client",
        _ => "other",
    };
    println!("  purpose   {purpose}");
    println!(
        "  valid     {} .. {}",
        format_time(info.not_before),
        format_time(info.not_after)
    );
    println!("  status    {}", info.expiry(now.unwrap_or_else(now_secs)));
    println!("  sha256    {}", info.sha256);
}

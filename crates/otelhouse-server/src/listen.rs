//! Our three listeners: addresses checked before binding (NET-3: a port
//! listed twice, or taken by another program, named with its owner and the
//! flag that changes it), then served in plaintext or TLS.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use otelhouse_tls::{ReloadingConfig, TlsIncoming};
use tokio::net::{TcpListener, TcpStream};

/// One listener's setting, with the flag and variable that change it, so
/// errors can say how to fix them.
pub struct ListenerSpec<'a> {
    /// The listener's name in listen.json and in metric labels.
    pub name: &'static str,
    pub addr: &'a str,
    pub flag: &'static str,
    pub env: &'static str,
}

/// Parses the addresses and refuses one port used by two of our listeners
/// (including 0.0.0.0:P next to 127.0.0.1:P, which overlap).
pub fn parse_addrs(specs: &[ListenerSpec<'_>]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for s in specs {
        let addr: SocketAddr = s.addr.parse().with_context(|| {
            format!(
                "{} {:?} is not an address like 127.0.0.1:4317 (set --{} or {})",
                s.flag, s.addr, s.flag, s.env
            )
        })?;
        if addr.port() != 0
            && let Some(i) = addrs.iter().position(|a| {
                a.port() == addr.port()
                    && (a.ip() == addr.ip()
                        || a.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            })
        {
            bail!(
                "--{} and --{} both use port {} ({} and {}); give each listener its own port",
                specs[i].flag,
                s.flag,
                addr.port(),
                addrs[i],
                addr
            );
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

pub async fn bind_all(
    specs: &[ListenerSpec<'_>],
    addrs: &[SocketAddr],
) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for (s, addr) in specs.iter().zip(addrs) {
        let l = TcpListener::bind(addr).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                let owner = port_owner(addr.port())
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default();
                anyhow::anyhow!(
                    "port {} ({addr}) is already in use by another program{owner}; choose another with --{} or {}",
                    addr.port(),
                    s.flag,
                    s.env
                )
            } else {
                anyhow::anyhow!("cannot listen on {addr} (--{}): {e}", s.flag)
            }
        })?;
        listeners.push(l);
    }
    Ok(listeners)
}

/// Which process listens on a TCP port: the socket's inode from
/// /proc/net/tcp{,6}, then the process holding it. Best effort (Linux; other
/// users' processes are only visible to root). No crate does this lookup
/// without pulling in a whole process-inspection library.
fn port_owner(port: u16) -> Option<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            if f.len() > 9
                && f[3] == "0A"
                && f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    == Some(port)
            {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for proc in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = proc.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                let comm = std::fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid}, {}", comm.trim()));
            }
        }
    }
    Some("owned by another user's process".into())
}

/// A bound listener, plaintext or TLS.
pub enum Bound {
    Plain(TcpListener),
    Tls(TlsIncoming),
}

impl Bound {
    pub fn new(
        tcp: TcpListener,
        tls: Option<Arc<ReloadingConfig>>,
        on_failure: otelhouse_tls::listener::FailureHook,
    ) -> Self {
        match tls {
            Some(config) => Bound::Tls(TlsIncoming::new(tcp, config, on_failure)),
            None => Bound::Plain(tcp),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Bound::Plain(l) => l.local_addr(),
            Bound::Tls(t) => Ok(t.local_addr()),
        }
    }
}

/// `TlsIncoming` as an axum listener.
struct AxumTls(TlsIncoming);

impl axum::serve::Listener for AxumTls {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.0.accept().await {
            Some(c) => c,
            // The accept task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.0.local_addr())
    }
}

/// Serves an axum router on a listener until `stop` resolves.
pub fn serve_axum(
    bound: Bound,
    router: axum::Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    match bound {
        Bound::Plain(l) => tokio::spawn(
            axum::serve(l.tap_io(no_delay), router)
                .with_graceful_shutdown(stop)
                .into_future(),
        ),
        Bound::Tls(t) => tokio::spawn(
            axum::serve(AxumTls(t), router)
                .with_graceful_shutdown(stop)
                .into_future(),
        ),
    }
}

/// Serves gRPC routes on a listener until `stop` resolves.
pub fn serve_grpc(
    bound: Bound,
    routes: tonic::service::Routes,
    max_request_bytes: usize,
    stop: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    let router = tonic::transport::Server::builder()
        .layer(crate::otlp_grpc::cap_request_bytes(max_request_bytes))
        .add_routes(routes);
    match bound {
        Bound::Plain(l) => tokio::spawn(router.serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true)),
            stop,
        )),
        Bound::Tls(t) => {
            let incoming = futures::stream::unfold(t, |mut t| async move {
                let (stream, _) = t.accept().await?;
                Some((Ok::<_, std::io::Error>(stream), t))
            });
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop))
        }
    }
}

/// Small responses (acks) go out at once instead of waiting on Nagle.
fn no_delay(tcp: &mut TcpStream) {
    let _ = tcp.set_nodelay(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &'static str, addr: &'static str) -> ListenerSpec<'static> {
        ListenerSpec {
            name,
            addr,
            flag: name,
            env: "X",
        }
    }

    #[test]
    fn overlapping_ports_are_refused() {
        let e = parse_addrs(&[spec("a", "127.0.0.1:4317"), spec("b", "0.0.0.0:4317")]).unwrap_err();
        assert!(
            e.to_string().contains("--a and --b both use port 4317"),
            "{e}"
        );
        parse_addrs(&[spec("a", "127.0.0.1:4317"), spec("b", "127.0.0.2:4317")]).unwrap();
        let e = parse_addrs(&[spec("a", "localhost")]).unwrap_err();
        assert!(e.to_string().contains("not an address"));
    }

    #[tokio::test]
    async fn a_taken_port_names_its_owner_and_the_flag() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let specs = [ListenerSpec {
            name: "http",
            addr: &addr,
            flag: "http-addr",
            env: "OTELHOUSE_HTTP_ADDR",
        }];
        let addrs = parse_addrs(&specs).unwrap();
        let e = bind_all(&specs, &addrs).await.unwrap_err().to_string();
        assert!(
            e.contains("already in use") && e.contains("--http-addr"),
            "{e}"
        );
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
    }
}

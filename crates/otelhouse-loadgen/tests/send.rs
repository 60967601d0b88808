//! End-to-end `send::run` against mock OTLP servers that throttle their first request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use otelhouse_loadgen::send::{self, Limit, Protocol, SendConfig};
use otelhouse_loadgen::{Payload, Signal, build_payloads, r#gen};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::codegen::tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

const KEY: &str = "secret-key";

/// Counts received records; answers the first request with "unavailable".
#[derive(Clone, Default)]
struct Counter {
    requests: Arc<AtomicUsize>,
    records: Arc<AtomicUsize>,
}

impl Counter {
    /// Ok(()) to accept `records`, Err(()) to throttle.
    fn receive(&self, records: usize) -> Result<(), ()> {
        if self.requests.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(());
        }
        self.records.fetch_add(records, Ordering::SeqCst);
        Ok(())
    }
}

#[tonic::async_trait]
impl LogsService for Counter {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        if request
            .metadata()
            .get("authorization")
            .is_none_or(|v| v != KEY)
        {
            return Err(Status::unauthenticated("bad key"));
        }
        match self.receive(r#gen::log_count(request.get_ref())) {
            Ok(()) => Ok(Response::new(ExportLogsServiceResponse::default())),
            Err(()) => Err(Status::unavailable("busy")),
        }
    }
}

async fn serve_grpc(listener: TcpListener, service: LogsServiceServer<Counter>) {
    let incoming = TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(incoming)
        .await
        .unwrap();
}

fn config(protocol: Protocol, endpoint: String) -> SendConfig {
    SendConfig {
        signal: Signal::Logs,
        protocol,
        endpoint,
        key: Some(KEY.into()),
        concurrency: 3,
        limit: Limit::Records(2_000),
        server_pid: Some(std::process::id()),
    }
}

fn payloads(gzip: bool) -> Vec<Payload> {
    build_payloads(Signal::Logs, 9, 4, 100, gzip)
}

#[tokio::test]
async fn grpc_gzip_counts_acks_and_throttling() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = Counter::default();
    let service =
        LogsServiceServer::new(counter.clone()).accept_compressed(CompressionEncoding::Gzip);
    tokio::spawn(serve_grpc(listener, service));

    let report = send::run(&config(Protocol::Grpc, addr.to_string()), payloads(true))
        .await
        .unwrap();
    assert_eq!(
        (
            report.records,
            report.batches,
            report.throttled,
            report.errors
        ),
        (2_000, 20, 1, 0)
    );
    assert_eq!(counter.records.load(Ordering::SeqCst), 2_000);
    assert!(
        report.ack_ms(0.99) > 0.0
            && report.server_cpu_seconds.is_some()
            && report.server_peak_rss_mb.is_some()
    );
}

#[tokio::test]
async fn grpc_bad_key_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = LogsServiceServer::new(Counter::default());
    tokio::spawn(serve_grpc(listener, service));
    let config = SendConfig {
        key: Some("wrong".into()),
        ..config(Protocol::Grpc, addr.to_string())
    };
    let report = send::run(&config, payloads(false)).await.unwrap();
    assert_eq!((report.records, report.errors), (0, 20));
}

#[tokio::test]
async fn http_counts_acks_and_throttling() {
    for gzip in [false, true] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counter = Counter::default();
        tokio::spawn(serve_http(listener, counter.clone()));
        let report = send::run(
            &config(Protocol::Http, format!("http://{addr}")),
            payloads(gzip),
        )
        .await
        .unwrap();
        assert_eq!(
            (report.records, report.throttled, report.errors),
            (2_000, 1, 0),
            "gzip={gzip}"
        );
        assert_eq!(counter.records.load(Ordering::SeqCst), 2_000);
    }
}

/// A bare-bones HTTP/1.1 keep-alive server accepting OTLP/HTTP protobuf log exports.
async fn serve_http(listener: TcpListener, counter: Counter) {
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let counter = counter.clone();
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            while let Some(response) = http_exchange(&mut stream, &counter).await {
                stream
                    .get_mut()
                    .write_all(response.as_bytes())
                    .await
                    .unwrap();
            }
        });
    }
}

async fn http_exchange(
    stream: &mut BufReader<tokio::net::TcpStream>,
    counter: &Counter,
) -> Option<String> {
    let mut request_line = String::new();
    stream
        .read_line(&mut request_line)
        .await
        .ok()
        .filter(|&n| n > 0)?;
    let (mut length, mut gzip, mut authorized) = (0, false, false);
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.ok()?;
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        match (name.trim(), value.trim()) {
            ("content-length", v) => length = v.parse().ok()?,
            ("content-encoding", v) => gzip = v == "gzip",
            ("authorization", v) => authorized = v == KEY,
            _ => {}
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    let payload = Payload {
        body: body.into(),
        gzip,
        records: 0,
    };
    let mut scratch = Vec::new();
    let records = Signal::Logs
        .decode_count(payload.protobuf(&mut scratch).ok()?)
        .ok()?;
    let reply = |status: &str, extra: &str| {
        format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n{extra}\r\n")
    };
    Some(
        if !request_line.starts_with("POST /v1/logs ") || !authorized {
            reply("401 Unauthorized", "")
        } else if counter.receive(records).is_ok() {
            reply("200 OK", "content-type: application/x-protobuf\r\n")
        } else {
            reply("503 Service Unavailable", "retry-after: 0\r\n")
        },
    )
}

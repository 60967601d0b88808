//! Deterministic generator of realistic OTLP log and span batches.
//!
//! A [`Generator`] owns a seeded RNG and a fixed fleet of ~20 services with three
//! instances (pods) each. Batches group records per resource and scope like an SDK
//! or collector would. Spans are emitted as whole traces (parent/child trees across
//! services); the generator remembers recent spans per service, and log records that
//! carry trace context reuse those trace and span ids, so for a joint data set
//! generate spans for a time slice before the logs of the same slice.

use std::collections::{BTreeMap, VecDeque};
use std::f64::consts::TAU;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, index};
use rand::{Rng, SeedableRng};

/// Attributes per log record or span.
pub const ATTRIBUTES: std::ops::RangeInclusive<usize> = 10..=20;
/// Log body length in bytes.
pub const BODY_LEN: std::ops::RangeInclusive<usize> = 100..=400;

/// (service.name, service.namespace, telemetry.sdk.language). The first two are trace entry points.
const SERVICES: [(&str, &str, &str); 20] = [
    ("frontend", "shop", "nodejs"),
    ("gateway", "platform", "go"),
    ("checkout", "shop", "go"),
    ("payments", "payments", "java"),
    ("cart", "shop", "dotnet"),
    ("catalog", "shop", "go"),
    ("shipping", "shop", "rust"),
    ("email", "platform", "python"),
    ("recommendation", "shop", "python"),
    ("ads", "shop", "java"),
    ("currency", "payments", "cpp"),
    ("auth", "platform", "go"),
    ("user-profile", "platform", "java"),
    ("inventory", "shop", "rust"),
    ("search", "shop", "java"),
    ("notification", "platform", "nodejs"),
    ("orders", "shop", "go"),
    ("pricing", "shop", "python"),
    ("fraud-detection", "payments", "java"),
    ("quote", "shop", "php"),
];
const INSTANCES_PER_SERVICE: usize = 3;
const RECENT_SPANS_PER_SERVICE: usize = 256;
/// Share of log records carrying a trace context.
const TRACED_LOGS: f64 = 0.7;

/// How a value of an attribute is drawn.
#[derive(Clone, Copy)]
enum Spec {
    Str(&'static [&'static str]),
    Int(i64, i64),
    Ints(&'static [i64]),
    Float(f64, f64),
    Bool(f64),
    /// `prefix` + a number below the bound.
    Id(&'static str, u32),
    /// Random hex string of that many bytes.
    Hex(usize),
    Token(&'static str),
}

const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"];
const STATUS_CODES: &[i64] = &[200, 200, 200, 200, 200, 201, 204, 400, 404, 500, 503];
const ROUTES: &[&str] = &[
    "/api/cart",
    "/api/cart/items",
    "/api/checkout",
    "/api/products",
    "/api/products/{id}",
    "/api/users/{id}",
    "/api/orders",
    "/api/orders/{id}",
    "/api/search",
    "/api/recommendations",
    "/api/payments/charge",
    "/api/shipping/quote",
    "/healthz",
    "/api/login",
    "/api/currency/convert",
];
const TABLES: &[&str] = &[
    "orders",
    "users",
    "products",
    "payments",
    "sessions",
    "inventory",
    "carts",
    "shipments",
];
const DB_OPS: &[&str] = &["SELECT", "SELECT", "SELECT", "INSERT", "UPDATE", "DELETE"];
const ERRORS: &[&str] = &[
    "connection reset by peer",
    "context deadline exceeded",
    "upstream connect error",
    "card declined",
    "out of stock",
    "invalid argument: quantity must be positive",
    "permission denied",
    "too many connections",
    "record not found",
    "lock wait timeout exceeded",
];
const EXCEPTION_TYPES: &[&str] = &[
    "java.net.SocketTimeoutException",
    "io.grpc.StatusRuntimeException",
    "TimeoutError",
    "ConnectionRefusedError",
    "sqlx::Error::PoolTimedOut",
    "System.InvalidOperationException",
];
const INTERNAL_OPS: &[&str] = &[
    "compute_price",
    "render_template",
    "validate_cart",
    "serialize_response",
    "apply_discounts",
    "load_config",
    "check_feature_flags",
    "resolve_user",
    "score_candidates",
    "build_query",
];
const RPC_OPS: &[&str] = &[
    "Get", "List", "Create", "Update", "Charge", "Convert", "Quote", "Check",
];
const EVENTS: &[&str] = &[
    "cache.miss",
    "retry",
    "message.sent",
    "checkpoint",
    "db.pool.wait",
];
const REGIONS: &[&str] = &["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-1"];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "okhttp/4.12.0",
    "python-requests/2.31.0",
    "Go-http-client/2.0",
    "curl/8.5.0",
];

/// Key pool of record attributes with mixed value types.
const ATTRS: &[(&str, Spec)] = &[
    ("http.request.method", Spec::Str(METHODS)),
    ("http.response.status_code", Spec::Ints(STATUS_CODES)),
    ("http.route", Spec::Str(ROUTES)),
    ("url.path", Spec::Token("url")),
    ("url.scheme", Spec::Str(&["https", "http"])),
    ("server.address", Spec::Token("host")),
    ("server.port", Spec::Int(8000, 8090)),
    ("client.address", Spec::Token("ip")),
    ("user_agent.original", Spec::Str(USER_AGENTS)),
    ("http.request.body.size", Spec::Int(0, 65_536)),
    ("http.response.body.size", Spec::Int(0, 262_144)),
    ("user.id", Spec::Id("u-", 1_000_000)),
    ("session.id", Spec::Hex(12)),
    ("request.id", Spec::Token("id")),
    ("tenant.id", Spec::Id("t-", 500)),
    (
        "customer.tier",
        Spec::Str(&["free", "free", "pro", "enterprise"]),
    ),
    (
        "db.system",
        Spec::Str(&["postgresql", "redis", "mysql", "mongodb"]),
    ),
    ("db.operation.name", Spec::Str(DB_OPS)),
    ("db.collection.name", Spec::Str(TABLES)),
    ("db.response.returned_rows", Spec::Int(0, 5000)),
    ("duration_ms", Spec::Float(0.1, 2500.0)),
    ("retry.count", Spec::Int(0, 5)),
    ("cache.hit", Spec::Bool(0.8)),
    ("feature_flag.new_checkout", Spec::Bool(0.3)),
    (
        "experiment.group",
        Spec::Str(&["control", "variant-a", "variant-b"]),
    ),
    ("order.id", Spec::Id("ord-", 100_000_000)),
    ("order.amount", Spec::Float(1.0, 2000.0)),
    (
        "order.currency",
        Spec::Str(&["USD", "EUR", "GBP", "JPY", "CHF"]),
    ),
    ("cart.items", Spec::Int(1, 40)),
    (
        "payment.method",
        Spec::Str(&["card", "paypal", "apple_pay", "bank_transfer"]),
    ),
    ("thread.id", Spec::Int(1, 512)),
    (
        "thread.name",
        Spec::Str(&[
            "main",
            "worker-1",
            "worker-2",
            "worker-3",
            "tokio-runtime-worker",
            "pool-4-thread-1",
        ]),
    ),
    ("code.function.name", Spec::Str(INTERNAL_OPS)),
    ("code.line.number", Spec::Int(10, 2000)),
    ("error.type", Spec::Str(EXCEPTION_TYPES)),
    ("messaging.system", Spec::Str(&["kafka", "rabbitmq", "sqs"])),
    (
        "messaging.destination.name",
        Spec::Str(&["orders", "payments.events", "emails", "inventory.updates"]),
    ),
    ("rpc.system", Spec::Str(&["grpc", "grpc", "connect_rpc"])),
    ("rpc.method", Spec::Str(RPC_OPS)),
    ("queue.depth", Spec::Int(0, 10_000)),
    ("cloud.availability_zone", Spec::Str(&["a", "b", "c"])),
    ("sampled", Spec::Bool(0.1)),
    ("latency_budget_ms", Spec::Float(50.0, 1000.0)),
    ("items.skipped", Spec::Int(0, 100)),
    ("region", Spec::Str(REGIONS)),
];

/// (severity_number, severity_text, weight in %, template group).
const SEVERITIES: [(i32, &str, u32, usize); 5] = [
    (1, "TRACE", 2, 0),
    (5, "DEBUG", 13, 0),
    (9, "INFO", 65, 1),
    (13, "WARN", 13, 2),
    (17, "ERROR", 7, 3),
];

/// Body templates per group (debug, info, warn, error); `{token}`s are filled by [`Generator::token`].
const TEMPLATES: [&[&str]; 4] = [
    &[
        "cache lookup key=product:{n} hit=false ttl={n}s fetching from backend {svc}",
        "acquired db connection from pool in {ms}ms (active={n}, idle={n}, waiting={n})",
        "parsed request body for {url}: {n} bytes, content-type=application/json",
        "feature flag evaluation new_checkout=false for user {user} (rule={n}, bucket={n})",
        "sql: SELECT * FROM {table} WHERE id = $1 LIMIT {n} -- args=[{n}] took {ms}ms",
        "outgoing request to {svc} {url} with headers accept=application/json x-request-id={id}",
        "span context propagated trace_id={hex} parent={hex} sampled=true",
        "rendering template product_page.html with {k} items for session {hex}",
        "retry policy: attempt {k} for {svc} backoff={ms}ms jitter=true",
        "kafka consumer poll returned {n} records from partition {k} offset {n}",
        "gc pause young generation {ms}ms heap_used={n}MB heap_committed={n}MB",
        "resolved config value checkout.timeout_ms={n} from environment override",
    ],
    &[
        "{method} {url} completed with status {code} in {ms}ms for user {user} (request_id={id})",
        "order {id} placed by user {user}: {k} items, total {amount} USD, payment method card",
        "user {user} logged in from {ip} using password auth, session {hex} created",
        "payment {id} authorized for {amount} EUR via provider stripe in {ms}ms",
        "shipment {id} created for order {id} carrier=ups eta_days={k} weight={amount}kg",
        "sent confirmation email to user {user} for order {id} template=order_confirmation",
        "inventory reserved for order {id}: sku-{n} x{k}, remaining stock {n}",
        "search query 'wireless headphones' returned {n} results in {ms}ms page={k}",
        "recommendation model v{k} served {n} candidates for user {user} in {ms}ms",
        "currency conversion {amount} USD -> {amount} EUR using rate table updated {n}s ago",
        "cart {hex} updated by user {user}: added sku-{n} quantity {k}",
        "health check passed: db={ms}ms cache={ms}ms upstream {svc}={ms}ms",
        "processed batch of {n} messages from topic orders in {ms}ms, lag={n}",
        "scheduled job cleanup_expired_sessions removed {n} sessions in {ms}ms",
        "cache refreshed for {table}: {n} entries loaded in {ms}ms",
        "accepted connection from {ip}:{n} tls=TLSv1.3 alpn=h2",
        "quote {id} computed for {k} items: subtotal {amount}, shipping {amount}, tax {amount}",
        "user {user} updated profile fields email,address from {ip}",
        "published event order.created id={id} to topic orders partition {k}",
        "ad campaign {n} served to user {user} context=product_page position={k}",
        "price list {n} applied to cart {hex}: {k} discounts, saving {amount} USD",
        "token refreshed for client {id}, expires in {n}s, scopes=read,write",
        "grpc call {svc}/Get finished code=OK duration={ms}ms peer={ip}",
        "request {id} routed to {svc} via {url} upstream latency {ms}ms",
    ],
    &[
        "slow query on {table} took {ms}ms (threshold 500ms): SELECT ... WHERE user_id = {n}",
        "retrying request to {svc} {url} after error: {err} (attempt {k})",
        "connection pool nearly exhausted: active={n} max={n} waiting={n} for {svc}",
        "rate limit approaching for tenant t-{n}: {n} requests in last 60s (limit {n})",
        "deprecated API {url} called by client {ip} user-agent okhttp/4.12.0",
        "response from {svc} took {ms}ms, exceeding latency budget of {n}ms",
        "inventory low for sku-{n}: {n} units left, reorder threshold {n}",
        "circuit breaker for {svc} half-open after {n} failures, probing with request {id}",
        "payment {id} flagged for manual review: risk score {amount} above threshold",
    ],
    &[
        "{method} {url} failed with status {code} after {ms}ms: {err} (request_id={id})",
        "payment {id} for user {user} failed: {err}; amount {amount} USD",
        "unhandled exception in {svc} handler: {err} at {url}, trace_id={hex}",
        "failed to publish event to kafka topic orders: {err}; {n} messages buffered",
        "database error on {table}: {err} (query took {ms}ms, retries exhausted)",
        "could not reserve inventory for order {id}: {err}",
        "upstream {svc} unavailable: {err}; returning 503 to client {ip}",
    ],
];
/// Fragments appended to bodies until the drawn length is reached.
const SUFFIXES: &[&str] = &[
    "request_id={id}",
    "user={user}",
    "duration={ms}ms",
    "peer={ip}",
    "route={url}",
    "attempt={k}",
    "bytes={n}",
    "upstream={svc}",
    "span={hex}",
    "region=eu-west-1",
    "thread=worker-{k}",
    "referer=https://shop.example.com{url}",
    "client_version=web-2.{k}.{n}",
    "tenant=t-{n}",
    "db.time={ms}ms",
    "queue_wait={ms}ms",
    "cache=miss",
    "status={code}",
];

/// A span remembered so that later log records can reference it.
#[derive(Clone, Copy)]
struct SpanRef {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    start: u64,
    end: u64,
}

/// One instance (pod) of a service: its resource and two instrumentation scopes
/// (0: HTTP/RPC instrumentation library, 1: the application's own logger/tracer).
struct Instance {
    service: usize,
    resource: Resource,
    scopes: [InstrumentationScope; 2],
}

/// Seeded, deterministic generator of OTLP requests.
pub struct Generator {
    rng: StdRng,
    instances: Vec<Instance>,
    recent: Vec<VecDeque<SpanRef>>,
}

/// A time range of `seconds` ending now, in unix nanoseconds.
pub fn recent_range(seconds: u64) -> (u64, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (now.saturating_sub(seconds * 1_000_000_000), now)
}

/// Number of log records in a request.
pub fn log_count(req: &ExportLogsServiceRequest) -> usize {
    let scopes = req.resource_logs.iter().flat_map(|r| &r.scope_logs);
    scopes.map(|s| s.log_records.len()).sum()
}

/// Number of spans in a request.
pub fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn str_kv(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        let mut g = Generator {
            rng: StdRng::seed_from_u64(seed),
            instances: Vec::new(),
            recent: vec![VecDeque::new(); SERVICES.len()],
        };
        for service in 0..SERVICES.len() {
            for _ in 0..INSTANCES_PER_SERVICE {
                let instance = g.instance(service);
                g.instances.push(instance);
            }
        }
        g
    }

    /// A logs request with exactly `records` records spread over 3–8 service instances,
    /// timestamps within `time_range` (unix nanos, inclusive).
    pub fn logs_request(
        &mut self,
        records: usize,
        time_range: (u64, u64),
    ) -> ExportLogsServiceRequest {
        let batch = self.batch_instances();
        let mut items = Vec::with_capacity(records);
        for _ in 0..records {
            let r: f64 = self.rng.random();
            let instance = batch[(r * r * batch.len() as f64) as usize];
            let scope = usize::from(self.rng.random_bool(0.8));
            let record = self.log_record(self.instances[instance].service, time_range);
            items.push((instance, scope, record));
        }
        let resource_logs = self.group(
            items,
            |scope, mut log_records: Vec<LogRecord>| {
                log_records.sort_by_key(|r| r.time_unix_nano);
                ScopeLogs {
                    scope: Some(scope),
                    log_records,
                    schema_url: String::new(),
                }
            },
            |resource, scope_logs| ResourceLogs {
                resource: Some(resource),
                scope_logs,
                schema_url: String::new(),
            },
        );
        ExportLogsServiceRequest { resource_logs }
    }

    /// A traces request with exactly `spans` spans, made of whole traces of 1–12 spans
    /// (the last one possibly cut) starting at `frontend` or `gateway` and fanning out
    /// over other services; every span lies within `time_range`.
    pub fn spans_request(
        &mut self,
        spans: usize,
        time_range: (u64, u64),
    ) -> ExportTraceServiceRequest {
        let mut items = Vec::with_capacity(spans);
        while items.len() < spans {
            let size = self.rng.random_range(1..=12).min(spans - items.len());
            self.trace(size, time_range, &mut items);
        }
        let resource_spans = self.group(
            items,
            |scope, spans| ScopeSpans {
                scope: Some(scope),
                spans,
                schema_url: String::new(),
            },
            |resource, scope_spans| ResourceSpans {
                resource: Some(resource),
                scope_spans,
                schema_url: String::new(),
            },
        );
        ExportTraceServiceRequest { resource_spans }
    }

    fn instance(&mut self, service: usize) -> Instance {
        let (name, namespace, language) = SERVICES[service];
        let version = format!(
            "1.{}.{}",
            self.rng.random_range(0..30),
            self.rng.random_range(0..10)
        );
        let pod = format!("{name}-{}-{}", self.hex(5), &self.hex(3)[..5]);
        let node = format!("node-{:02}", self.rng.random_range(1..=12));
        let resource = Resource {
            attributes: vec![
                str_kv("service.name", name),
                str_kv("service.namespace", namespace),
                str_kv("service.version", version.clone()),
                str_kv("service.instance.id", self.uuid()),
                str_kv("host.name", node.clone()),
                str_kv("host.arch", "amd64"),
                str_kv("os.type", "linux"),
                str_kv("k8s.pod.name", pod),
                str_kv("k8s.namespace.name", namespace),
                str_kv("k8s.node.name", node),
                str_kv("k8s.deployment.name", name),
                str_kv("container.id", self.hex(32)),
                str_kv("deployment.environment", "production"),
                str_kv("cloud.provider", "aws"),
                str_kv("cloud.region", *REGIONS.choose(&mut self.rng).unwrap()),
                str_kv("telemetry.sdk.name", "opentelemetry"),
                str_kv("telemetry.sdk.language", language),
                str_kv("telemetry.sdk.version", "1.27.0"),
            ],
            ..Default::default()
        };
        let scope = |name: String, version: &str| InstrumentationScope {
            name,
            version: version.to_owned(),
            ..Default::default()
        };
        Instance {
            service,
            resource,
            scopes: [
                scope(format!("io.opentelemetry.{language}.http"), "2.9.0"),
                scope(format!("com.example.{namespace}.{name}"), &version),
            ],
        }
    }

    /// 3–8 distinct instances making up one batch.
    fn batch_instances(&mut self) -> Vec<usize> {
        let k = self.rng.random_range(3..=8);
        index::sample(&mut self.rng, self.instances.len(), k).into_vec()
    }

    /// Groups `(instance, scope, item)` per resource and scope, deterministically ordered.
    fn group<T, S, R>(
        &self,
        items: Vec<(usize, usize, T)>,
        make_scope: impl Fn(InstrumentationScope, Vec<T>) -> S,
        make_resource: impl Fn(Resource, Vec<S>) -> R,
    ) -> Vec<R> {
        let mut grouped: BTreeMap<usize, BTreeMap<usize, Vec<T>>> = BTreeMap::new();
        for (instance, scope, item) in items {
            grouped
                .entry(instance)
                .or_default()
                .entry(scope)
                .or_default()
                .push(item);
        }
        let build = |(instance, scopes): (usize, BTreeMap<usize, Vec<T>>)| {
            let inst = &self.instances[instance];
            let scopes = scopes
                .into_iter()
                .map(|(s, items)| make_scope(inst.scopes[s].clone(), items));
            make_resource(inst.resource.clone(), scopes.collect())
        };
        grouped.into_iter().map(build).collect()
    }

    fn log_record(&mut self, service: usize, range: (u64, u64)) -> LogRecord {
        let (severity_number, severity_text, group) = self.severity();
        let mut record = LogRecord {
            severity_number,
            severity_text: severity_text.to_owned(),
            body: Some(AnyValue {
                value: Some(Value::StringValue(self.body(group))),
            }),
            attributes: self.attributes(),
            ..Default::default()
        };
        record.time_unix_nano = if self.rng.random_bool(TRACED_LOGS) {
            let span = self.recent_span(service).unwrap_or_else(|| {
                let t = self.time_in(range);
                SpanRef {
                    trace_id: self.id(),
                    span_id: self.id(),
                    start: t,
                    end: t,
                }
            });
            record.trace_id = span.trace_id.to_vec();
            record.span_id = span.span_id.to_vec();
            record.flags = 1;
            let lo = span.start.clamp(range.0, range.1.max(range.0));
            self.time_in((lo, span.end.clamp(lo, range.1.max(lo))))
        } else {
            self.time_in(range)
        };
        record.observed_time_unix_nano =
            record.time_unix_nano + self.rng.random_range(0..50_000_000);
        record
    }

    fn recent_span(&mut self, service: usize) -> Option<SpanRef> {
        let recent = &self.recent[service];
        (!recent.is_empty()).then(|| recent[self.rng.random_range(0..recent.len())])
    }

    fn severity(&mut self) -> (i32, &'static str, usize) {
        let mut roll = self.rng.random_range(0..100);
        for (number, text, weight, group) in SEVERITIES {
            if roll < weight {
                return (number, text, group);
            }
            roll -= weight;
        }
        unreachable!("severity weights sum to 100")
    }

    fn body(&mut self, group: usize) -> String {
        let template = *TEMPLATES[group].choose(&mut self.rng).unwrap();
        let mut body = String::with_capacity(*BODY_LEN.end() + 64);
        self.fill(template, &mut body);
        let target = self.rng.random_range(BODY_LEN);
        // Distinct context fields in random order, appended until the target length.
        let mut order = index::sample(&mut self.rng, SUFFIXES.len(), SUFFIXES.len())
            .into_iter()
            .cycle();
        while body.len() < target {
            body.push(' ');
            self.fill(SUFFIXES[order.next().unwrap()], &mut body);
        }
        body.truncate(*BODY_LEN.end()); // all text is ASCII
        body
    }

    fn fill(&mut self, template: &str, out: &mut String) {
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let close = open + rest[open..].find('}').expect("unclosed token");
            out.push_str(&rest[..open]);
            self.token(&rest[open + 1..close], out);
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
    }

    /// Writes a random value for a template token.
    fn token(&mut self, name: &str, out: &mut String) {
        let r = &mut self.rng;
        let _ = match name {
            "user" => write!(out, "u-{:06}", r.random_range(0..1_000_000)),
            "id" => {
                let id = self.uuid();
                write!(out, "{id}")
            }
            "hex" => {
                let hex = self.hex(8);
                write!(out, "{hex}")
            }
            "ms" => {
                let ms = self.lognormal(25.0, 1.2);
                write!(out, "{ms:.1}")
            }
            "n" => write!(out, "{}", r.random_range(1..5000)),
            "k" => write!(out, "{}", r.random_range(1..=12)),
            "amount" => write!(out, "{:.2}", r.random_range(1.0..2000.0)),
            "ip" => write!(
                out,
                "10.{}.{}.{}",
                r.random_range(0..8),
                r.random_range(0..256),
                r.random_range(1..255)
            ),
            "host" => write!(out, "{}.svc.cluster.local", SERVICES.choose(r).unwrap().0),
            "svc" => write!(out, "{}", SERVICES.choose(r).unwrap().0),
            "method" => write!(out, "{}", METHODS.choose(r).unwrap()),
            "code" => write!(out, "{}", STATUS_CODES.choose(r).unwrap()),
            "table" => write!(out, "{}", TABLES.choose(r).unwrap()),
            "err" => write!(out, "{}", ERRORS.choose(r).unwrap()),
            "url" => {
                let route = ROUTES.choose(r).unwrap();
                let id = r.random_range(1..100_000).to_string();
                write!(out, "{}", route.replace("{id}", &id))
            }
            other => unreachable!("unknown template token {other}"),
        };
    }

    fn attributes(&mut self) -> Vec<KeyValue> {
        let n = self.rng.random_range(ATTRIBUTES);
        let keys = index::sample(&mut self.rng, ATTRS.len(), n);
        keys.into_iter()
            .map(|i| kv(ATTRS[i].0, self.value(ATTRS[i].1)))
            .collect()
    }

    fn value(&mut self, spec: Spec) -> Value {
        let r = &mut self.rng;
        match spec {
            Spec::Str(options) => Value::StringValue((*options.choose(r).unwrap()).to_owned()),
            Spec::Int(lo, hi) => Value::IntValue(r.random_range(lo..=hi)),
            Spec::Ints(options) => Value::IntValue(*options.choose(r).unwrap()),
            Spec::Float(lo, hi) => Value::DoubleValue(r.random_range(lo..hi)),
            Spec::Bool(p) => Value::BoolValue(r.random_bool(p)),
            Spec::Id(prefix, bound) => {
                Value::StringValue(format!("{prefix}{}", r.random_range(0..bound)))
            }
            Spec::Hex(bytes) => Value::StringValue(self.hex(bytes)),
            Spec::Token(token) => {
                let mut s = String::new();
                self.token(token, &mut s);
                Value::StringValue(s)
            }
        }
    }

    /// Appends one trace of `size` spans to `out` as `(instance, scope, span)`.
    fn trace(&mut self, size: usize, range: (u64, u64), out: &mut Vec<(usize, usize, Span)>) {
        let trace_id = self.id();
        let len = range.1.saturating_sub(range.0);
        let duration = ((self.lognormal(40e6, 1.0) as u64).max(10_000)).min(len);
        let start = range.0 + self.rng.random_range(0..=len - duration);
        let entry = self.rng.random_range(0..2) * INSTANCES_PER_SERVICE
            + self.rng.random_range(0..INSTANCES_PER_SERVICE);
        let first = out.len();
        let name = self.server_name();
        out.push(self.span(
            entry,
            trace_id,
            &[],
            SpanKind::Server,
            name,
            start,
            duration,
        ));
        while out.len() - first < size {
            let (parent_instance, _, parent) = &out[self.rng.random_range(first..out.len())];
            let (instance, parent_id) = (*parent_instance, parent.span_id.clone());
            let offset = (parent.end_time_unix_nano - parent.start_time_unix_nano) as f64
                * self.rng.random_range(0.0..0.3);
            let start = parent.start_time_unix_nano + offset as u64;
            let duration = ((parent.end_time_unix_nano - start) as f64
                * self.rng.random_range(0.05..0.95)) as u64;
            let rpc = out.len() - first + 2 <= size && self.rng.random_bool(0.5);
            if rpc {
                let callee = self
                    .rng
                    .random_range(2 * INSTANCES_PER_SERVICE..self.instances.len());
                let name = format!(
                    "{}/{}",
                    SERVICES[callee / INSTANCES_PER_SERVICE].0,
                    RPC_OPS.choose(&mut self.rng).unwrap()
                );
                let client = self.span(
                    instance,
                    trace_id,
                    &parent_id,
                    SpanKind::Client,
                    name.clone(),
                    start,
                    duration,
                );
                let client_id = client.2.span_id.clone();
                out.push(client);
                let (start, duration) = (start + duration / 20, duration - duration / 10);
                out.push(self.span(
                    callee,
                    trace_id,
                    &client_id,
                    SpanKind::Server,
                    name,
                    start,
                    duration,
                ));
            } else {
                let (kind, name) = match self.rng.random_range(0..10) {
                    0..5 => (
                        SpanKind::Internal,
                        (*INTERNAL_OPS.choose(&mut self.rng).unwrap()).to_owned(),
                    ),
                    5..9 => {
                        let op = DB_OPS.choose(&mut self.rng).unwrap();
                        (
                            SpanKind::Client,
                            format!("{op} {}", TABLES.choose(&mut self.rng).unwrap()),
                        )
                    }
                    _ => (SpanKind::Producer, "orders publish".to_owned()),
                };
                out.push(self.span(instance, trace_id, &parent_id, kind, name, start, duration));
            }
        }
    }

    fn server_name(&mut self) -> String {
        format!(
            "{} {}",
            METHODS.choose(&mut self.rng).unwrap(),
            ROUTES.choose(&mut self.rng).unwrap()
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        instance: usize,
        trace_id: [u8; 16],
        parent: &[u8],
        kind: SpanKind,
        name: String,
        start: u64,
        duration: u64,
    ) -> (usize, usize, Span) {
        let span_id: [u8; 8] = self.id();
        let end = start + duration;
        let mut span = Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.to_vec(),
            flags: 1,
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: self.attributes(),
            ..Default::default()
        };
        if self.rng.random_bool(0.03) {
            let message = *ERRORS.choose(&mut self.rng).unwrap();
            span.status = Some(Status {
                message: message.to_owned(),
                code: StatusCode::Error as i32,
            });
            let attributes = vec![
                str_kv(
                    "exception.type",
                    *EXCEPTION_TYPES.choose(&mut self.rng).unwrap(),
                ),
                str_kv("exception.message", message),
            ];
            span.events.push(Event {
                time_unix_nano: end,
                name: "exception".into(),
                attributes,
                ..Default::default()
            });
        } else if self.rng.random_bool(0.1) {
            let name = (*EVENTS.choose(&mut self.rng).unwrap()).to_owned();
            let attributes = vec![kv("attempt", Value::IntValue(self.rng.random_range(1..4)))];
            let time_unix_nano = self.rng.random_range(start..=end);
            span.events.push(Event {
                time_unix_nano,
                name,
                attributes,
                ..Default::default()
            });
        }
        let recent = &mut self.recent[self.instances[instance].service];
        if recent.len() == RECENT_SPANS_PER_SERVICE {
            recent.pop_front();
        }
        recent.push_back(SpanRef {
            trace_id,
            span_id,
            start,
            end,
        });
        let scope = usize::from(matches!(kind, SpanKind::Internal | SpanKind::Producer));
        (instance, scope, span)
    }

    fn time_in(&mut self, (lo, hi): (u64, u64)) -> u64 {
        self.rng.random_range(lo..=hi.max(lo))
    }

    /// Log-normal sample with the given median.
    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        let u1 = 1.0 - self.rng.random::<f64>();
        let u2: f64 = self.rng.random();
        median * (sigma * (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()).exp()
    }

    /// A random non-zero id.
    fn id<const N: usize>(&mut self) -> [u8; N] {
        let mut id = [0u8; N];
        self.rng.fill(&mut id[..]);
        id[0] |= u8::from(id == [0; N]);
        id
    }

    fn hex(&mut self, bytes: usize) -> String {
        (0..bytes).fold(String::with_capacity(bytes * 2), |mut s, _| {
            let _ = write!(s, "{:02x}", self.rng.random::<u8>());
            s
        })
    }

    fn uuid(&mut self) -> String {
        let h = self.hex(16);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
}

/// About `n` generated rows of `table` (logs or spans; whole requests of
/// 500), converted to Arrow as the server converts them: the input of the
/// storage and shipping benchmarks.
pub fn table_rows(
    table: otelhouse_schema::Table,
    n: usize,
) -> Vec<arrow::record_batch::RecordBatch> {
    let mut g = Generator::new(7);
    let range = recent_range(3600);
    let mut out = Vec::new();
    let mut made = 0;
    while made < n {
        let batches = match table {
            otelhouse_schema::Table::Logs => {
                otelhouse_otlp::convert::logs(&g.logs_request(500, range))
            }
            _ => otelhouse_otlp::convert::traces(&g.spans_request(500, range)),
        };
        for (t, b) in batches {
            if t == table {
                made += b.num_rows();
                out.push(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: (u64, u64) = (1_700_000_000_000_000_000, 1_700_000_010_000_000_000);

    fn records(req: &ExportLogsServiceRequest) -> impl Iterator<Item = &LogRecord> {
        req.resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
    }

    fn spans(req: &ExportTraceServiceRequest) -> impl Iterator<Item = &Span> {
        req.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
    }

    #[test]
    fn logs_have_requested_count_and_shape() {
        let mut g = Generator::new(7);
        for n in [1, 10, 500] {
            let req = g.logs_request(n, RANGE);
            assert_eq!(log_count(&req), n);
            assert!(req.resource_logs.len() <= 8);
            for r in records(&req) {
                assert!(ATTRIBUTES.contains(&r.attributes.len()));
                let Some(Value::StringValue(body)) = r.body.as_ref().and_then(|b| b.value.as_ref())
                else {
                    panic!("string body expected")
                };
                assert!(
                    BODY_LEN.contains(&body.len()),
                    "body of {} bytes: {body}",
                    body.len()
                );
                assert!((RANGE.0..=RANGE.1).contains(&r.time_unix_nano));
                assert!(matches!(
                    (r.trace_id.len(), r.span_id.len()),
                    (0, 0) | (16, 8)
                ));
                assert!(matches!(r.severity_number, 1 | 5 | 9 | 13 | 17));
            }
        }
    }

    #[test]
    fn batches_hold_several_services_with_resource_attributes() {
        let req = Generator::new(3).logs_request(1000, RANGE);
        assert!(req.resource_logs.len() >= 3);
        for rl in &req.resource_logs {
            let keys: Vec<_> = rl
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .map(|kv| kv.key.as_str())
                .collect();
            for key in [
                "service.name",
                "service.version",
                "host.name",
                "k8s.pod.name",
                "k8s.namespace.name",
            ] {
                assert!(keys.contains(&key), "{key} missing");
            }
        }
        let info = records(&req).filter(|r| r.severity_text == "INFO").count();
        assert!(info > 500 && info < 800, "{info} INFO records of 1000");
    }

    #[test]
    fn spans_have_requested_count_ids_and_trees() {
        let mut g = Generator::new(11);
        let req = g.spans_request(1000, RANGE);
        assert_eq!(span_count(&req), 1000);
        let all: Vec<&Span> = spans(&req).collect();
        let ids: std::collections::HashSet<&[u8]> =
            all.iter().map(|s| s.span_id.as_slice()).collect();
        assert_eq!(ids.len(), all.len());
        let roots = all.iter().filter(|s| s.parent_span_id.is_empty()).count();
        assert!(roots > 50 && roots < 500, "{roots} roots");
        for s in &all {
            assert_eq!((s.trace_id.len(), s.span_id.len()), (16, 8));
            assert!(s.parent_span_id.is_empty() || ids.contains(s.parent_span_id.as_slice()));
            assert!(ATTRIBUTES.contains(&s.attributes.len()));
            assert!(
                RANGE.0 <= s.start_time_unix_nano && s.start_time_unix_nano <= s.end_time_unix_nano
            );
            assert!(s.end_time_unix_nano <= RANGE.1);
        }
        assert!(all.iter().any(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.code == StatusCode::Error as i32)
        }));
        assert!(req.resource_spans.len() > 10);
    }

    #[test]
    fn logs_share_trace_ids_with_earlier_spans() {
        let mut g = Generator::new(5);
        let traces = g.spans_request(2000, RANGE);
        let trace_ids: std::collections::HashSet<&[u8]> =
            spans(&traces).map(|s| s.trace_id.as_slice()).collect();
        let logs = g.logs_request(500, RANGE);
        let traced: Vec<_> = records(&logs).filter(|r| !r.trace_id.is_empty()).collect();
        assert!(traced.len() > 250);
        assert!(
            traced
                .iter()
                .all(|r| trace_ids.contains(r.trace_id.as_slice()))
        );
    }

    #[test]
    fn same_seed_same_output() {
        let run = |seed| {
            let mut g = Generator::new(seed);
            (g.spans_request(200, RANGE), g.logs_request(200, RANGE))
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn narrow_time_range() {
        let mut g = Generator::new(1);
        let t = RANGE.0;
        assert!(
            spans(&g.spans_request(50, (t, t)))
                .all(|s| s.start_time_unix_nano == t && s.end_time_unix_nano == t)
        );
        assert!(records(&g.logs_request(50, (t, t))).all(|r| r.time_unix_nano == t));
    }
}

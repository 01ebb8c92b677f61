//! `http_request`: HTTP requests through tern-http's real axum router.
//!
//! Input layout (fields after the first three bytes are separated by `\n`; the body is the rest
//! and may hold anything):
//!
//! ```text
//! byte 0   method: METHODS[b % 8]
//! byte 1   bits 0-1  Content-Type: none, application/json, application/octet-stream, the field
//!          bits 2-3  Authorization: the right bearer token, none, "Bearer " + field, the field
//!          bit 4     Content-Length: the body's length
//!          bit 5     Content-Length: 2^40 (overrides bit 4)
//!          bit 6     the path is ROUTES[byte 2] with its `{parameters}` taken, in order, from
//!                    the path field split at '/'; otherwise the path field is the path
//! byte 2   route index
//! path \n query \n content-type \n authorization \n body
//! ```
//!
//! Bytes a URI may not hold are percent-encoded (a `%` is kept, so the fuzzer writes its own
//! escapes); a header value that `http` refuses is left out.
//!
//! One current-thread tokio runtime and one engine serve every input ([`Fixture`]): the engine
//! runs on the simulated disk (`SimStorage`, nothing touches the file system), with 64 KiB
//! segments, a manual clock and no background services, and is replaced by a fresh one every
//! [`EXECS_PER_ENGINE`] inputs or once it holds [`TOPICS_PER_ENGINE_MAX`] topics, so memory
//! stays bounded and a finding replayed alone usually meets the same state.
//!
//! Properties checked:
//! * no input panics the router, a handler or the engine;
//! * no answer is a 5xx: the engine never fails here (simulated disk, disk use fixed at 0), so
//!   the documented 5xx cases (503 store stopped or request timeout, 507 disk full, 500
//!   internal) cannot legitimately happen;
//! * every answer has a Content-Type; an answer that claims JSON is valid JSON; a text answer
//!   is UTF-8; a Content-Length, when present, is the body's length;
//! * every 4xx is the documented error body `{code, name, message, retriable}` with a
//!   registered code whose name and retriable flag match the registry and whose own status is
//!   a 4xx too;
//! * a 200 to a send lists one result per message, and each message not scheduled is in the
//!   engine where the result says (queue, queue offset, message id; for a raw send, the body).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use axum::Router;
use tern_engine::{Engine, EngineConfig, FixedUsage, FlushMode, ManualClock, SimStorage};
use tern_http::codes::ErrorCode;
use tern_http::error::ErrorBody;
use tern_http::model::{hex, SendResponse};
use tern_http::HttpOptions;
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

/// The bearer token the server requires.
pub const TOKEN: &str = "fuzz-token";
/// The engine is replaced after this many inputs.
pub const EXECS_PER_ENGINE: u32 = 2_048;
/// … or once it holds this many topics (each input may create one).
pub const TOPICS_PER_ENGINE_MAX: usize = 64;
/// Largest request body the server reads.
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// Largest answer body read back.
const RESPONSE_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Methods, by byte 0.
pub const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "TRACE",
];

/// The router's paths (`lib.rs`), by byte 2 when flag bit 6 is set.
pub const ROUTES: &[&str] = &[
    "/",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/metrics",
    "/v1/topics",
    "/v1/topics/{topic}",
    "/v1/topics/{topic}/messages",
    "/v1/topics/{topic}/queues/{queue_id}/messages",
    "/v1/groups",
    "/v1/groups/{group}",
    "/v1/groups/{group}/pull",
    "/v1/groups/{group}/offsets/{topic}/{queue_id}",
    "/v1/groups/{group}/consume-failed",
    "/v1/messages/{commitlog_offset}",
    "/v1/messages/{commitlog_offset}/body",
    "/v1/messages/by-id/{message_id}",
    "/v1/stats",
];

/// Flag bits of byte 1.
pub mod flags {
    pub const CONTENT_TYPE_MASK: u8 = 0b11;
    pub const CONTENT_TYPE_JSON: u8 = 1;
    pub const CONTENT_TYPE_RAW: u8 = 2;
    pub const CONTENT_TYPE_FIELD: u8 = 3;
    pub const AUTH_SHIFT: u8 = 2;
    pub const AUTH_NONE: u8 = 1 << AUTH_SHIFT;
    pub const AUTH_BEARER_FIELD: u8 = 2 << AUTH_SHIFT;
    pub const AUTH_FIELD: u8 = 3 << AUTH_SHIFT;
    pub const CONTENT_LENGTH: u8 = 1 << 4;
    pub const CONTENT_LENGTH_HUGE: u8 = 1 << 5;
    pub const ROUTE: u8 = 1 << 6;
}

/// One request, as laid out in the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    pub method: u8,
    pub flags: u8,
    pub route: u8,
    pub path: Vec<u8>,
    pub query: Vec<u8>,
    pub content_type: Vec<u8>,
    pub authorization: Vec<u8>,
    pub body: Vec<u8>,
}

impl Input {
    /// Split an input into its fields (`None` when shorter than the three fixed bytes).
    pub fn parse(data: &[u8]) -> Option<Input> {
        let (&[method, flags, route], rest) = data.split_first_chunk::<3>()?;
        let mut fields = rest.splitn(5, |&b| b == b'\n');
        let mut next = || fields.next().unwrap_or_default().to_vec();
        Some(Input {
            method,
            flags,
            route,
            path: next(),
            query: next(),
            content_type: next(),
            authorization: next(),
            body: next(),
        })
    }

    /// The input's bytes (fields must not hold `\n`, except the body).
    pub fn to_bytes(&self) -> Vec<u8> {
        for field in [
            &self.path,
            &self.query,
            &self.content_type,
            &self.authorization,
        ] {
            assert!(!field.contains(&b'\n'), "a field holds a newline");
        }
        let mut out = vec![self.method, self.flags, self.route];
        for field in [
            &self.path,
            &self.query,
            &self.content_type,
            &self.authorization,
        ] {
            out.extend_from_slice(field);
            out.push(b'\n');
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// The method byte for a method name.
    pub fn method_byte(name: &str) -> u8 {
        METHODS
            .iter()
            .position(|m| *m == name)
            .expect("a known method") as u8
    }

    /// The route byte for a route template.
    pub fn route_byte(template: &str) -> u8 {
        ROUTES
            .iter()
            .position(|r| *r == template)
            .expect("a known route") as u8
    }

    /// The path, percent-encoded where a URI needs it.
    fn path(&self) -> String {
        let mut out = String::new();
        if self.flags & flags::ROUTE != 0 {
            let template = ROUTES[usize::from(self.route) % ROUTES.len()];
            let mut params = self.path.split(|&b| b == b'/');
            for (i, piece) in template.split('/').enumerate() {
                if i > 0 {
                    out.push('/');
                }
                match piece.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    Some(name) => match params.next() {
                        Some(value) => encode(&mut out, value, b"%"),
                        None => out.push_str(default_param(name)),
                    },
                    None => out.push_str(piece),
                }
            }
        } else {
            if self.path.first() != Some(&b'/') {
                out.push('/');
            }
            encode(&mut out, &self.path, b"%/");
        }
        out
    }

    /// The request, or `None` when `http` refuses its URI or method.
    pub fn request(&self) -> Option<Request<Body>> {
        let mut uri = self.path();
        if !self.query.is_empty() {
            uri.push('?');
            encode(&mut uri, &self.query, b"%/?=&");
        }
        let uri: Uri = uri.parse().ok()?;
        let method = Method::from_bytes(METHODS[usize::from(self.method % 8)].as_bytes()).ok()?;
        let mut builder = Request::builder().method(method).uri(uri);
        let content_type: Option<&[u8]> = match self.flags & flags::CONTENT_TYPE_MASK {
            flags::CONTENT_TYPE_JSON => Some(b"application/json"),
            flags::CONTENT_TYPE_RAW => Some(b"application/octet-stream"),
            flags::CONTENT_TYPE_FIELD => Some(&self.content_type),
            _ => None,
        };
        if let Some(v) = content_type.and_then(|v| HeaderValue::from_bytes(v).ok()) {
            builder = builder.header(header::CONTENT_TYPE, v);
        }
        let bearer = |token: &[u8]| [b"Bearer ".as_slice(), token].concat();
        let authorization = match self.flags & (0b11 << flags::AUTH_SHIFT) {
            flags::AUTH_NONE => None,
            flags::AUTH_BEARER_FIELD => Some(bearer(&self.authorization)),
            flags::AUTH_FIELD => Some(self.authorization.clone()),
            _ => Some(bearer(TOKEN.as_bytes())),
        };
        if let Some(v) = authorization.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
            builder = builder.header(header::AUTHORIZATION, v);
        }
        if self.flags & flags::CONTENT_LENGTH_HUGE != 0 {
            builder = builder.header(header::CONTENT_LENGTH, 1u64 << 40);
        } else if self.flags & flags::CONTENT_LENGTH != 0 {
            builder = builder.header(header::CONTENT_LENGTH, self.body.len());
        }
        builder.body(Body::from(self.body.clone())).ok()
    }

    /// Is this a raw send (its body is the message body)?
    fn is_raw_send(&self) -> bool {
        self.flags & flags::CONTENT_TYPE_MASK == flags::CONTENT_TYPE_RAW
    }
}

/// A value for a route parameter the input does not give.
fn default_param(name: &str) -> &'static str {
    match name {
        "topic" => "fuzz",
        "group" => "g1",
        "message_id" => "00000000000000000000000000000000",
        _ => "0",
    }
}

/// Append `bytes`, percent-encoding all but unreserved characters and `keep`.
fn encode(out: &mut String, bytes: &[u8], keep: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 15)]));
        }
    }
}

/// The runtime, and the server every input goes to.
#[derive(Debug)]
struct Fixture {
    runtime: Runtime,
    server: Mutex<Option<Server>>,
}

#[derive(Debug)]
struct Server {
    engine: Arc<Engine>,
    router: Router,
    execs: u32,
}

/// The engine's configuration: simulated disk, small files, a clock that does not move.
pub fn engine_config() -> EngineConfig {
    let mut c = EngineConfig::new("/fuzz-http");
    c.segment_size_bytes = tern_engine::limits::SEGMENT_SIZE_BYTES_MIN;
    c.cq_entries_per_file = tern_engine::limits::CQ_ENTRIES_PER_FILE_MIN;
    c.write_buffer_bytes = tern_engine::limits::WRITE_BUFFER_BYTES_MIN;
    c.flush_mode = FlushMode::Async;
    c.default_queue_count = 2;
    c.clock = Arc::new(ManualClock::new(1_700_000_000_000));
    c.disk_usage = Arc::new(FixedUsage::new(0.0));
    c.background_services = false;
    c
}

/// The server's options: a token, small bodies, long polls of at most 1 ms.
pub fn http_options() -> HttpOptions {
    HttpOptions {
        token: Some(TOKEN.to_owned()),
        request_body_bytes_max: REQUEST_BODY_BYTES_MAX,
        request_timeout_ms: 5_000,
        long_poll_wait_ms_max: 1,
        pending_pulls_max: 4,
        requests_in_flight_max: 16,
        ..HttpOptions::default()
    }
}

impl Server {
    fn new() -> Server {
        let engine = Engine::open_with_storage(engine_config(), Arc::new(SimStorage::new()))
            .expect("opening an engine on an empty simulated disk");
        let engine = Arc::new(engine);
        let options = http_options();
        options.validate().expect("the fuzz server's options");
        Server {
            router: tern_http::router(engine.clone(), options),
            engine,
            execs: 0,
        }
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime"),
        server: Mutex::new(None),
    })
}

/// The check.
pub fn run(data: &[u8]) {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let Some(request) = input.request() else {
        return;
    };
    let fixture = fixture();
    let mut slot = fixture
        .server
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let stale = slot.as_ref().is_none_or(|s| {
        s.execs >= EXECS_PER_ENGINE || s.engine.topics().len() >= TOPICS_PER_ENGINE_MAX
    });
    if stale {
        // The old engine closes (and its threads end) before the new one opens.
        *slot = None;
        *slot = Some(Server::new());
    }
    let server = slot.as_mut().expect("a server was just installed");
    server.execs += 1;

    let what = format!("{} {}", request.method(), request.uri());
    let is_head = request.method() == Method::HEAD;
    let is_send = input.flags & flags::ROUTE != 0
        && ROUTES[usize::from(input.route) % ROUTES.len()] == "/v1/topics/{topic}/messages"
        && request.method() == Method::POST;
    let (response, body) = fixture.runtime.block_on(async {
        let response = server
            .router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, RESPONSE_BODY_BYTES_MAX)
            .await
            .unwrap_or_else(|e| panic!("{what}: reading the answer failed: {e}"));
        (Response::from_parts(parts, ()), body)
    });
    check_response(&what, is_head, &response, &body);
    if is_send && response.status() == StatusCode::OK {
        check_send(&what, &server.engine, &input, &body);
    }
}

fn check_response(what: &str, is_head: bool, response: &Response<()>, body: &[u8]) {
    let status = response.status();
    let show = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    assert!(
        !status.is_server_error(),
        "{what}: answered {status}: {}",
        show()
    );
    assert!(
        status.is_success() || status.is_client_error(),
        "{what}: answered {status}"
    );
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .unwrap_or_else(|| panic!("{what}: {status} without a Content-Type"))
        .to_str()
        .unwrap_or_else(|_| panic!("{what}: a Content-Type that is not text"));
    if let Some(length) = response.headers().get(header::CONTENT_LENGTH) {
        let length: usize = length
            .to_str()
            .ok()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("{what}: Content-Length {length:?}"));
        if !is_head {
            assert_eq!(length, body.len(), "{what}: Content-Length");
        }
    }
    if is_head {
        assert!(body.is_empty(), "{what}: a HEAD answer with a body");
        return;
    }
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence == "application/json" {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(body) {
            panic!("{what}: {status} claims JSON but is not ({e}): {}", show());
        }
    } else if essence.starts_with("text/") {
        assert!(
            std::str::from_utf8(body).is_ok(),
            "{what}: {content_type} that is not UTF-8"
        );
    }
    if status.is_client_error() {
        assert_eq!(
            essence,
            "application/json",
            "{what}: a {status} error that is not JSON: {}",
            show()
        );
        let error: ErrorBody = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "{what}: a {status} error body without the documented shape ({e}): {}",
                show()
            )
        });
        let code = ErrorCode(error.code);
        assert_ne!(code, ErrorCode::OK, "{what}: an error with code OK");
        assert_eq!(error.name, code.name(), "{what}: the code's name");
        assert_ne!(error.name, "UNKNOWN", "{what}: an unregistered code");
        assert_eq!(error.retriable, code.is_retriable(), "{what}: retriable");
        assert!(
            !error.message.is_empty(),
            "{what}: an error without a message"
        );
        assert!(
            code.http_status().is_client_error(),
            "{what}: a {status} with code {code}, whose own status is {}",
            code.http_status()
        );
    }
}

/// A 200 to a send: each message not scheduled is where its result says.
fn check_send(what: &str, engine: &Engine, input: &Input, body: &[u8]) {
    let answer: SendResponse = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what}: a send answer without the documented shape ({e})"));
    assert!(!answer.results.is_empty(), "{what}: a send with no result");
    if input.is_raw_send() {
        assert_eq!(
            answer.results.len(),
            1,
            "{what}: a raw send stores one message"
        );
    }
    // Async flush: a put returns once sequenced; the flush makes it readable.
    engine
        .flush()
        .unwrap_or_else(|e| panic!("{what}: flushing after a send failed: {e}"));
    for r in answer.results.iter().filter(|r| !r.scheduled) {
        let stored = engine
            .get_by_offset(r.commitlog_offset)
            .unwrap_or_else(|e| panic!("{what}: result {r:?} is not in the engine: {e}"));
        let v = stored.view();
        assert_eq!(
            (v.queue_id(), v.queue_offset()),
            (r.queue_id, r.queue_offset),
            "{what}: result {r:?}"
        );
        assert_eq!(hex(&v.message_id()), r.message_id, "{what}: message id");
        assert_eq!(u64::from(v.total_size()), u64::from(r.size), "{what}: size");
        if input.is_raw_send() {
            assert_eq!(v.body(), input.body, "{what}: the stored body");
        }
    }
}

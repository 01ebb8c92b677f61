//! The JSON bodies of the nameserver's HTTP API (documented in `docs/PROTOCOL.md`, section
//! "Nameserver") and their validation.
//!
//! Every body that comes from the network is checked by [`BrokerRegistration::validate`] /
//! [`BrokerKey::validate`] before it touches the tables; a refusal is an [`ApiError`] with a
//! stable numeric [`ErrorCode`] (codes are only ever added, never reused).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::limits::*;

/// Permission bit: producers may send to the topic's queues on this broker.
pub const PERM_WRITE: u8 = 2;
/// Permission bit: consumers may pull from them.
pub const PERM_READ: u8 = 4;
/// Read and write (RocketMQ's `PERM_READ | PERM_WRITE` = 6).
pub const PERM_READ_WRITE: u8 = PERM_READ | PERM_WRITE;

/// A nameserver error code. The registry (name, number, HTTP status) is in [`ErrorCode::ALL`];
/// numbers are only ever added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// The body is not JSON of the expected shape.
    pub const MALFORMED_REQUEST: ErrorCode = ErrorCode(1);
    /// A field is out of range (bad name, address, queue count ...).
    pub const INVALID_FIELD: ErrorCode = ErrorCode(2);
    /// The body is larger than the nameserver's limit.
    pub const PAYLOAD_TOO_LARGE: ErrorCode = ErrorCode(3);
    /// No live broker serves the topic.
    pub const TOPIC_NOT_FOUND: ErrorCode = ErrorCode(4);
    /// The broker name belongs to another cluster.
    pub const BROKER_NAME_CONFLICT: ErrorCode = ErrorCode(5);
    /// Unregistering a broker that is not registered.
    pub const NOT_REGISTERED: ErrorCode = ErrorCode(6);
    /// Unregistering with an instance id other than the registered one (a stale process).
    pub const INSTANCE_MISMATCH: ErrorCode = ErrorCode(7);
    /// The nameserver holds as many brokers as it may.
    pub const TOO_MANY_BROKERS: ErrorCode = ErrorCode(8);
    /// No such endpoint or method.
    pub const UNKNOWN_ENDPOINT: ErrorCode = ErrorCode(9);
    /// The body is not `application/json`.
    pub const UNSUPPORTED_MEDIA_TYPE: ErrorCode = ErrorCode(10);

    /// Every code: (code, name, HTTP status).
    pub const ALL: [(ErrorCode, &'static str, u16); 10] = [
        (ErrorCode::MALFORMED_REQUEST, "MALFORMED_REQUEST", 400),
        (ErrorCode::INVALID_FIELD, "INVALID_FIELD", 400),
        (ErrorCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", 413),
        (ErrorCode::TOPIC_NOT_FOUND, "TOPIC_NOT_FOUND", 404),
        (ErrorCode::BROKER_NAME_CONFLICT, "BROKER_NAME_CONFLICT", 409),
        (ErrorCode::NOT_REGISTERED, "NOT_REGISTERED", 404),
        (ErrorCode::INSTANCE_MISMATCH, "INSTANCE_MISMATCH", 409),
        (ErrorCode::TOO_MANY_BROKERS, "TOO_MANY_BROKERS", 503),
        (ErrorCode::UNKNOWN_ENDPOINT, "UNKNOWN_ENDPOINT", 404),
        (
            ErrorCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            415,
        ),
    ];

    /// The registered name (`"UNKNOWN"` for a code this build does not know).
    pub fn name(self) -> &'static str {
        ErrorCode::ALL
            .iter()
            .find(|(c, _, _)| *c == self)
            .map_or("UNKNOWN", |(_, n, _)| n)
    }

    /// The HTTP status sent with the code.
    pub fn http_status(self) -> u16 {
        ErrorCode::ALL
            .iter()
            .find(|(c, _, _)| *c == self)
            .map_or(500, |(_, _, s)| *s)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// A refusal: `{"error": {"code": 4, "name": "TOPIC_NOT_FOUND", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: u16,
    pub name: String,
    pub message: String,
}

/// A refusal before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::INVALID_FIELD, message)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.0,
                name: self.code.name().to_owned(),
                message: self.message.clone(),
            },
        }
    }
}

/// A topic as one broker announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    pub topic: String,
    pub read_queues: u32,
    pub write_queues: u32,
    /// [`PERM_READ`] | [`PERM_WRITE`].
    #[serde(default = "perm_default")]
    pub perm: u8,
}

fn perm_default() -> u8 {
    PERM_READ_WRITE
}

/// Which broker instance: RocketMQ's (cluster, broker name, broker id); id 0 is the master.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerKey {
    pub cluster: String,
    pub broker_name: String,
    pub broker_id: u64,
}

/// `POST /v1/brokers/register` (also the heartbeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerRegistration {
    pub cluster: String,
    pub broker_name: String,
    pub broker_id: u64,
    /// Random per broker process start: a restarted broker replaces its predecessor's entry,
    /// and only the registered instance may unregister it.
    pub instance_id: String,
    /// The broker's QUIC address (what producers and consumers connect to).
    pub quic_addr: String,
    /// The broker's HTTP address, if it serves one.
    #[serde(default)]
    pub http_addr: Option<String>,
    /// Every topic the broker holds.
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
}

/// `POST /v1/brokers/unregister`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerUnregistration {
    pub cluster: String,
    pub broker_name: String,
    pub broker_id: u64,
    pub instance_id: String,
}

/// Answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterReply {
    /// False when this call only refreshed the heartbeat of an unchanged registration.
    pub changed: bool,
    /// How long the nameserver keeps the broker without a new registration.
    pub broker_expiry_ms: u64,
}

/// A topic's queues on one broker (RocketMQ `QueueData`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueData {
    pub broker_name: String,
    pub read_queues: u32,
    pub write_queues: u32,
    pub perm: u8,
}

/// One broker instance's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerAddr {
    pub broker_id: u64,
    pub quic_addr: String,
    pub http_addr: Option<String>,
    pub instance_id: String,
}

/// A broker name and its instances (RocketMQ `BrokerData`), ids ascending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerData {
    pub cluster: String,
    pub broker_name: String,
    pub addrs: Vec<BrokerAddr>,
}

impl BrokerData {
    /// The master's (id 0) instance.
    pub fn master(&self) -> Option<&BrokerAddr> {
        self.addrs.iter().find(|a| a.broker_id == 0)
    }
}

/// `GET /v1/routes/{topic}` (RocketMQ `TopicRouteData`): queue data sorted by broker name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRoute {
    pub topic: String,
    pub queues: Vec<QueueData>,
    pub brokers: Vec<BrokerData>,
}

/// A live broker instance in the cluster table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveBroker {
    pub cluster: String,
    pub broker_name: String,
    pub broker_id: u64,
    pub quic_addr: String,
    pub http_addr: Option<String>,
    pub instance_id: String,
    /// The nameserver clock's time of the last registration, ms.
    pub last_heartbeat_ms: u64,
    pub topic_count: u64,
}

/// `GET /v1/clusters`: every cluster's broker names, and every live instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// (cluster, sorted broker names), sorted by cluster.
    pub clusters: Vec<(String, Vec<String>)>,
    /// Sorted by (cluster, broker name, broker id).
    pub brokers: Vec<LiveBroker>,
}

impl ClusterInfo {
    /// The masters (id 0) of `cluster`.
    pub fn masters(&self, cluster: &str) -> Vec<&LiveBroker> {
        self.brokers
            .iter()
            .filter(|b| b.cluster == cluster && b.broker_id == 0)
            .collect()
    }
}

fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(ApiError::invalid(format!(
            "{kind} of {} bytes (NAME_BYTES_MAX: 1..={NAME_BYTES_MAX} bytes of [A-Za-z0-9_.-])",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(ApiError::invalid(format!(
            "{kind} {name:?} contains {c:?} (allowed: [A-Za-z0-9_.-])"
        )));
    }
    Ok(())
}

fn check_addr(kind: &str, addr: &str) -> Result<(), ApiError> {
    addr.parse::<SocketAddr>()
        .map(|_| ())
        .map_err(|_| ApiError::invalid(format!("{kind} {addr:?} is not an IP:port address")))
}

fn check_instance(id: &str) -> Result<(), ApiError> {
    if id.is_empty()
        || id.len() > INSTANCE_ID_BYTES_MAX
        || !id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid(format!(
            "instance_id of {} bytes (INSTANCE_ID_BYTES_MAX: 1..={INSTANCE_ID_BYTES_MAX} printable ASCII bytes)",
            id.len()
        )));
    }
    Ok(())
}

/// Check a topic name as any topic the engine may hold (`%RETRY%{group}` included).
pub fn check_topic(topic: &str) -> Result<(), ApiError> {
    tern_engine::names::check_any_topic(topic).map_err(|e| ApiError::invalid(format!("topic: {e}")))
}

impl BrokerKey {
    /// Check every field.
    pub fn validate(&self) -> Result<(), ApiError> {
        check_name("cluster", &self.cluster)?;
        check_name("broker_name", &self.broker_name)
    }
}

impl BrokerRegistration {
    /// The instance this registration is for.
    pub fn key(&self) -> BrokerKey {
        BrokerKey {
            cluster: self.cluster.clone(),
            broker_name: self.broker_name.clone(),
            broker_id: self.broker_id,
        }
    }

    /// Check every field (names, addresses, topics, queue counts, permissions).
    pub fn validate(&self) -> Result<(), ApiError> {
        self.key().validate()?;
        check_instance(&self.instance_id)?;
        check_addr("quic_addr", &self.quic_addr)?;
        if let Some(h) = &self.http_addr {
            check_addr("http_addr", h)?;
        }
        if self.topics.len() > TOPICS_PER_REGISTRATION_MAX {
            return Err(ApiError::invalid(format!(
                "{} topics (TOPICS_PER_REGISTRATION_MAX = {TOPICS_PER_REGISTRATION_MAX})",
                self.topics.len()
            )));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.topics.len());
        for t in &self.topics {
            check_topic(&t.topic)?;
            if !seen.insert(t.topic.as_str()) {
                return Err(ApiError::invalid(format!(
                    "topic {:?} listed twice",
                    t.topic
                )));
            }
            if t.read_queues > QUEUES_PER_TOPIC_MAX || t.write_queues > QUEUES_PER_TOPIC_MAX {
                return Err(ApiError::invalid(format!(
                    "topic {:?}: {} read / {} write queues (QUEUES_PER_TOPIC_MAX = {QUEUES_PER_TOPIC_MAX})",
                    t.topic, t.read_queues, t.write_queues
                )));
            }
            if t.perm & !PERM_READ_WRITE != 0 {
                return Err(ApiError::invalid(format!(
                    "topic {:?}: perm {} (allowed bits: 2 write, 4 read)",
                    t.topic, t.perm
                )));
            }
        }
        Ok(())
    }
}

impl BrokerUnregistration {
    /// The instance to remove.
    pub fn key(&self) -> BrokerKey {
        BrokerKey {
            cluster: self.cluster.clone(),
            broker_name: self.broker_name.clone(),
            broker_id: self.broker_id,
        }
    }

    /// Check every field.
    pub fn validate(&self) -> Result<(), ApiError> {
        self.key().validate()?;
        check_instance(&self.instance_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> BrokerRegistration {
        BrokerRegistration {
            cluster: "c".into(),
            broker_name: "b".into(),
            broker_id: 0,
            instance_id: "i-1".into(),
            quic_addr: "127.0.0.1:7100".into(),
            http_addr: None,
            topics: vec![TopicConfig {
                topic: "t".into(),
                read_queues: 4,
                write_queues: 4,
                perm: PERM_READ_WRITE,
            }],
        }
    }

    #[test]
    fn validation_refuses_each_bad_field() {
        assert!(reg().validate().is_ok());
        type Edit = Box<dyn Fn(&mut BrokerRegistration)>;
        let cases: Vec<Edit> = vec![
            Box::new(|r| r.cluster = String::new()),
            Box::new(|r| r.broker_name = "a b".into()),
            Box::new(|r| r.broker_name = "x".repeat(NAME_BYTES_MAX + 1)),
            Box::new(|r| r.instance_id = String::new()),
            Box::new(|r| r.quic_addr = "localhost".into()),
            Box::new(|r| r.http_addr = Some("1.2.3.4".into())),
            Box::new(|r| r.topics[0].topic = "bad topic".into()),
            Box::new(|r| r.topics[0].write_queues = QUEUES_PER_TOPIC_MAX + 1),
            Box::new(|r| r.topics[0].perm = 1),
            Box::new(|r| {
                let t = r.topics[0].clone();
                r.topics.push(t)
            }),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut r = reg();
            f(&mut r);
            let e = r.validate().expect_err(&format!("case {i}"));
            assert_eq!(e.code, ErrorCode::INVALID_FIELD, "case {i}");
        }
    }

    #[test]
    fn codes_are_unique_and_named() {
        let mut nums: Vec<u16> = ErrorCode::ALL.iter().map(|(c, _, _)| c.0).collect();
        nums.sort_unstable();
        nums.dedup();
        assert_eq!(nums.len(), ErrorCode::ALL.len());
        assert_eq!(ErrorCode::TOPIC_NOT_FOUND.name(), "TOPIC_NOT_FOUND");
        assert_eq!(ErrorCode(999).name(), "UNKNOWN");
    }
}

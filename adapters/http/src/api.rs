//! The REST handlers. Each one decodes a request, calls the engine and encodes the answer.
//!
//! Invariants kept here:
//! * every name from a path or a body is checked against the engine's name rules before it is
//!   used, so a path-traversal topic (`../x`) is a 400 that never reaches the engine;
//! * every offset from outside is at most [`OFFSET_MAX`]; every count and size is bounded by
//!   [`crate::limits`];
//! * a refused request changes nothing: sends are validated whole before the engine appends
//!   any message (the engine validates a batch before writing it);
//! * long polls hold a permit of `pending_pulls_max` while they wait, and wait at most
//!   `long_poll_wait_ms_max`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tern_engine::{names, Filter, GetRequest, GetResult, GetStatus, Message};
use tokio::sync::OwnedSemaphorePermit;

use crate::arrivals::Subscription;
use crate::codes::ErrorCode;
use crate::error::{parse_json, ApiError, ApiPath, ApiQuery, ErrorBody};
use crate::limits::*;
use crate::model::*;
use crate::AppState;

type Shared = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

/// How often a send waiting for its messages to become readable re-checks the store's health.
const VISIBLE_RECHECK: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// Request helpers

/// Read a request body of at most `limit` bytes.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> ApiResult<Vec<u8>> {
    let too_large = || {
        ApiError::new(
            ErrorCode::FRAME_TOO_LARGE,
            format!("request body larger than {limit} bytes (HttpOptions::request_body_bytes_max)"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::new(
            ErrorCode::TRUNCATED,
            format!("could not read the request body: {e}"),
        )),
    }
}

/// What a request body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Raw,
}

fn body_kind(headers: &HeaderMap, raw_allowed: bool) -> ApiResult<BodyKind> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyKind::Json);
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyKind::Json),
        "application/octet-stream" if raw_allowed => Ok(BodyKind::Raw),
        _ => {
            let expected = if raw_allowed {
                "application/json or application/octet-stream"
            } else {
                "application/json"
            };
            Err(ApiError::malformed(format!(
                "unsupported Content-Type {:?}: expected {expected}",
                text.chars().take(100).collect::<String>()
            ))
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE))
        }
    }
}

async fn json_body<T: serde::de::DeserializeOwned>(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<T> {
    body_kind(headers, false)?;
    let bytes = read_body(headers, body, s.opts.request_body_bytes_max).await?;
    parse_json(&bytes)
}

fn check_topic(topic: &str) -> ApiResult<()> {
    names::check_any_topic(topic).map_err(ApiError::from)
}

fn check_user_topic(topic: &str) -> ApiResult<()> {
    names::check_user_topic(topic).map_err(ApiError::from)
}

fn check_group(group: &str) -> ApiResult<()> {
    names::check_group(group).map_err(ApiError::from)
}

fn check_offset(what: &str, offset: u64) -> ApiResult<()> {
    if offset > OFFSET_MAX {
        return Err(ApiError::invalid(format!(
            "{what} {offset} is larger than OFFSET_MAX (2^63 - 1)"
        )));
    }
    Ok(())
}

fn pull_bounds(max_messages: Option<u32>, max_bytes: Option<u64>) -> ApiResult<(u32, u64)> {
    let messages = max_messages.unwrap_or(PULL_MESSAGES_DEFAULT);
    if !(1..=PULL_MESSAGES_MAX).contains(&messages) {
        return Err(ApiError::invalid(format!(
            "max_messages {messages} is outside 1..={PULL_MESSAGES_MAX} (PULL_MESSAGES_MAX)"
        )));
    }
    let bytes = max_bytes.unwrap_or(PULL_BYTES_DEFAULT);
    if !(1..=PULL_BYTES_MAX).contains(&bytes) {
        return Err(ApiError::invalid(format!(
            "max_bytes {bytes} is outside 1..={PULL_BYTES_MAX} (PULL_BYTES_MAX)"
        )));
    }
    Ok((messages, bytes))
}

fn wait_of(s: &AppState, wait_ms: u64) -> ApiResult<Duration> {
    if wait_ms > WAIT_MS_MAX {
        return Err(ApiError::invalid(format!(
            "wait_ms {wait_ms} is larger than WAIT_MS_MAX ({WAIT_MS_MAX})"
        )));
    }
    Ok(Duration::from_millis(
        wait_ms.min(s.opts.long_poll_wait_ms_max),
    ))
}

fn topic_info(s: &AppState, name: &str) -> ApiResult<TopicInfo> {
    let count = s
        .engine
        .topic_queue_count(name)
        .ok_or_else(|| ApiError::from(tern_engine::Error::TopicNotFound { topic: name.into() }))?;
    let mut queues = Vec::with_capacity(count as usize);
    for q in 0..count {
        let (min_offset, max_offset) = s.engine.queue_offsets(name, q)?;
        queues.push(QueueInfo {
            queue_id: q,
            min_offset,
            max_offset,
        });
    }
    Ok(TopicInfo {
        name: name.to_owned(),
        queue_count: count,
        system: name.starts_with('%'),
        queues,
    })
}

fn count_gets(s: &AppState, messages: &[MessageOut], bodies: usize) {
    s.metrics
        .gets
        .fetch_add(messages.len() as u64, Ordering::Relaxed);
    s.metrics
        .get_bytes
        .fetch_add(bodies as u64, Ordering::Relaxed);
    s.metrics.get_requests.fetch_add(1, Ordering::Relaxed);
}

fn messages_out(result: &GetResult, encoding: BodyEncoding) -> (Vec<MessageOut>, usize) {
    let mut bytes = 0;
    let out = result
        .messages
        .iter()
        .map(|m| {
            bytes += m.view().body().len();
            MessageOut::from_stored(m, encoding)
        })
        .collect();
    (out, bytes)
}

// ---------------------------------------------------------------------------------------------
// Topics

/// List every topic (user and system) with its queue count and message count.
#[utoipa::path(get, path = "/v1/topics", tag = "topics",
    responses(
        (status = 200, description = "All topics, sorted by name", body = TopicList),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub(crate) async fn list_topics(State(s): Shared) -> ApiResult<Json<TopicList>> {
    let mut topics = Vec::new();
    for (name, queue_count) in s.engine.topics() {
        let mut messages = 0u64;
        for q in 0..queue_count {
            if let Ok((min, max)) = s.engine.queue_offsets(&name, q) {
                messages += max.saturating_sub(min);
            }
        }
        topics.push(TopicSummary {
            system: name.starts_with('%'),
            name,
            queue_count,
            messages,
        });
    }
    Ok(Json(TopicList { topics }))
}

/// Create a topic (idempotent for the same queue count).
#[utoipa::path(post, path = "/v1/topics", tag = "topics",
    request_body = CreateTopicRequest,
    responses(
        (status = 201, description = "Created", body = TopicInfo),
        (status = 200, description = "Already existed with this queue count", body = TopicInfo),
        (status = 400, description = "Invalid name, queue count or body", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 409, description = "Exists with another queue count (TOPIC_EXISTS)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub(crate) async fn create_topic(
    State(s): Shared,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<TopicInfo>)> {
    let req: CreateTopicRequest = json_body(&s, &headers, body).await?;
    check_user_topic(&req.name)?;
    if !(1..=TOPIC_QUEUES_MAX).contains(&req.queues) {
        return Err(ApiError::invalid(format!(
            "queues {} is outside 1..={TOPIC_QUEUES_MAX} (QUEUES_PER_TOPIC_MAX)",
            req.queues
        )));
    }
    let existed = s.engine.topic_queue_count(&req.name).is_some();
    s.engine.create_topic(&req.name, req.queues)?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(topic_info(&s, &req.name)?)))
}

/// A topic with its queues' min and max offsets.
#[utoipa::path(get, path = "/v1/topics/{topic}", tag = "topics",
    params(("topic" = String, Path, description = "Topic name (system topics percent-encoded, e.g. %25RETRY%25g1)", pattern = "^((%RETRY%|%DLQ%)?[A-Za-z0-9_-]{1,127}|%SCHEDULE%|%TIMER%)$")),
    responses(
        (status = 200, description = "The topic", body = TopicInfo),
        (status = 400, description = "Invalid topic name", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such topic (TOPIC_NOT_FOUND)", body = ErrorBody),
    ))]
pub(crate) async fn describe_topic(
    State(s): Shared,
    ApiPath(topic): ApiPath<String>,
) -> ApiResult<Json<TopicInfo>> {
    check_topic(&topic)?;
    Ok(Json(topic_info(&s, &topic)?))
}

// ---------------------------------------------------------------------------------------------
// Send

/// Send one or a batch of messages. A JSON body carries messages with their tag, keys,
/// properties, delay level or delivery time; an `application/octet-stream` body is one message's
/// raw body, its options in the query string.
#[utoipa::path(post, path = "/v1/topics/{topic}/messages", tag = "messages",
    params(("topic" = String, Path, description = "Topic name", pattern = "^[A-Za-z0-9_-]{1,127}$"), SendQuery),
    request_body(content(
        (SendRequest = "application/json"),
        ("application/octet-stream"),
    )),
    responses(
        (status = 200, description = "Stored (in sync flush mode: durable)", body = SendResponse),
        (status = 400, description = "Invalid input; nothing was stored", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such topic or queue (auto-creation off)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
        (status = 503, description = "Store stopped after an I/O error, or shutting down", body = ErrorBody),
        (status = 507, description = "Disk full (DISK_FULL)", body = ErrorBody),
    ))]
pub(crate) async fn send(
    State(s): Shared,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(raw): ApiQuery<SendQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<SendResponse>> {
    let kind = body_kind(&headers, true)?;
    check_user_topic(&topic)?;
    let bytes = read_body(&headers, body, s.opts.request_body_bytes_max).await?;
    let start = Instant::now();
    let mut body_bytes = 0u64;
    let raw_keys: Vec<String> = raw
        .keys
        .as_deref()
        .map(|k| {
            k.split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    // (requested queue, message); the query's options are the defaults of every message.
    let requested: Vec<(Option<u32>, Message)> = match kind {
        BodyKind::Raw => {
            body_bytes += bytes.len() as u64;
            vec![(
                raw.queue_id,
                Message {
                    topic: topic.clone(),
                    tag: raw.tag.clone().unwrap_or_default(),
                    keys: raw_keys,
                    body: bytes,
                    delay_level: raw.delay_level.unwrap_or(0),
                    deliver_at_ms: raw.deliver_at_ms.unwrap_or(0),
                    ..Message::default()
                },
            )]
        }
        BodyKind::Json => {
            let req: SendRequest = parse_json(&bytes)?;
            drop(bytes);
            if req.messages.is_empty() || req.messages.len() > SEND_BATCH_MESSAGES_MAX {
                return Err(ApiError::invalid(format!(
                    "{} messages in one request: send 1..={SEND_BATCH_MESSAGES_MAX} \
                     (SEND_BATCH_MESSAGES_MAX)",
                    req.messages.len()
                )));
            }
            let mut out = Vec::with_capacity(req.messages.len());
            for (i, m) in req.messages.into_iter().enumerate() {
                let body = decode_body(m.body, m.body_encoding, i)?;
                body_bytes += body.len() as u64;
                let tag = match (m.tag.is_empty(), &raw.tag) {
                    (true, Some(t)) => t.clone(),
                    _ => m.tag,
                };
                let keys = if m.keys.is_empty() {
                    raw_keys.clone()
                } else {
                    m.keys
                };
                out.push((
                    m.queue_id.or(raw.queue_id),
                    Message {
                        topic: topic.clone(),
                        tag,
                        keys,
                        properties: m.properties.into_iter().collect(),
                        body,
                        delay_level: if m.delay_level == 0 {
                            raw.delay_level.unwrap_or(0)
                        } else {
                            m.delay_level
                        },
                        deliver_at_ms: if m.deliver_at_ms == 0 {
                            raw.deliver_at_ms.unwrap_or(0)
                        } else {
                            m.deliver_at_ms
                        },
                        ..Message::default()
                    },
                ));
            }
            out
        }
    };
    // Messages without a queue id share one queue picked round-robin, so a batch stays adjacent.
    let shared_queue = requested
        .iter()
        .any(|(q, _)| q.is_none())
        .then(|| s.pick_queue(&topic));
    let msgs: Vec<Message> = requested
        .into_iter()
        .map(|(q, mut m)| {
            m.queue_id = q.or(shared_queue).unwrap_or(0);
            m
        })
        .collect();
    let count = msgs.len() as u64;
    // Which messages wait in the schedule (their put result is their place there).
    let now_ms = s.engine.now_ms();
    let placed: Vec<(u32, bool)> = msgs
        .iter()
        .map(|m| (m.queue_id, m.delay_level > 0 || m.deliver_at_ms > now_ms))
        .collect();
    let results = s.put_batch(msgs).await?;
    // With `visible=true`, answer once the messages are readable (read-your-writes).
    let mut last_offsets: Vec<(u32, u64)> = Vec::new();
    for (r, (_, scheduled)) in results.iter().zip(&placed) {
        if *scheduled {
            continue;
        }
        match last_offsets.iter_mut().find(|(q, _)| *q == r.queue_id) {
            Some(entry) => entry.1 = entry.1.max(r.queue_offset),
            None => last_offsets.push((r.queue_id, r.queue_offset)),
        }
    }
    if raw.visible == Some(true) {
        s.wait_visible(&topic, &last_offsets).await?;
    }
    let response = SendResponse {
        results: results
            .iter()
            .zip(&placed)
            .map(|(r, (queue_id, scheduled))| SendResult {
                queue_id: *queue_id,
                queue_offset: r.queue_offset,
                scheduled: *scheduled,
                commitlog_offset: r.commitlog_offset,
                message_id: hex(&r.message_id),
                store_timestamp_ms: r.store_timestamp_ms,
                size: r.size,
            })
            .collect(),
    };
    let m = &s.metrics;
    m.puts.fetch_add(count, Ordering::Relaxed);
    m.put_bytes.fetch_add(body_bytes, Ordering::Relaxed);
    m.put_requests.fetch_add(1, Ordering::Relaxed);
    m.put_latency.record(start.elapsed());
    Ok(Json(response))
}

// ---------------------------------------------------------------------------------------------
// Pull

/// Read a queue from an offset, filtered by an expression; with `wait_ms`, an empty answer waits
/// (long polling) until a matching message arrives or the wait ends.
#[utoipa::path(get, path = "/v1/topics/{topic}/queues/{queue_id}/messages", tag = "messages",
    params(
        ("topic" = String, Path, description = "Topic name", pattern = "^((%RETRY%|%DLQ%)?[A-Za-z0-9_-]{1,127}|%SCHEDULE%|%TIMER%)$"),
        ("queue_id" = u32, Path, description = "Queue id"),
        PullQuery,
    ),
    responses(
        (status = 200, description = "Messages (possibly none) and the next offset", body = PullResponse),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such topic or queue", body = ErrorBody),
        (status = 429, description = "Too many long polls pending", body = ErrorBody),
    ))]
pub(crate) async fn pull(
    State(s): Shared,
    ApiPath((topic, queue_id)): ApiPath<(String, u32)>,
    ApiQuery(q): ApiQuery<PullQuery>,
) -> ApiResult<Json<PullResponse>> {
    check_topic(&topic)?;
    check_offset("offset", q.offset)?;
    let (max_messages, max_bytes) = pull_bounds(q.max_messages, q.max_bytes)?;
    let wait = wait_of(&s, q.wait_ms.unwrap_or(0))?;
    let filter = s.engine.filter(q.expression.as_deref().unwrap_or("*"))?;
    let result = s
        .get_or_wait(
            &topic,
            queue_id,
            q.offset,
            max_messages,
            max_bytes,
            &filter,
            wait,
        )
        .await?;
    let (messages, bodies) = messages_out(&result, q.body_encoding.unwrap_or_default());
    count_gets(&s, &messages, bodies);
    Ok(Json(PullResponse {
        status: result.status.into(),
        next_offset: result.next_offset,
        min_offset: result.min_offset,
        max_offset: result.max_offset,
        messages,
    }))
}

impl AppState {
    /// Wait until each (queue, offset) of `topic` is readable (the engine's writer thread makes
    /// entries visible right after it writes them, in async mode, or syncs them, in sync mode).
    pub(crate) async fn wait_visible(&self, topic: &str, waits: &[(u32, u64)]) -> ApiResult<()> {
        let visible = || {
            waits.iter().all(|(q, offset)| {
                self.engine
                    .queue_offsets(topic, *q)
                    .map_or(true, |(_, max)| max > *offset)
            })
        };
        if visible() {
            return Ok(());
        }
        let subscription = self.arrivals.subscribe(topic);
        loop {
            let notified = subscription.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if visible() {
                return Ok(());
            }
            if let Some(cause) = self.engine.failure() {
                return Err(ApiError::new(
                    ErrorCode::STORE_STOPPED,
                    format!("appends stopped after an I/O error: {cause}"),
                ));
            }
            // Re-check now and then: a writer that fails notifies nobody.
            let _woken = tokio::time::timeout(VISIBLE_RECHECK, notified).await;
        }
    }

    /// One get, and while it finds nothing and the wait lasts, another after each arrival.
    #[allow(
        clippy::too_many_arguments,
        reason = "one get request's fields, passed through"
    )]
    pub(crate) async fn get_or_wait(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_messages: u32,
        max_bytes: u64,
        filter: &Filter,
        wait: Duration,
    ) -> ApiResult<GetResult> {
        let get = |offset: u64| {
            self.engine.get(&GetRequest {
                topic,
                queue_id,
                offset,
                max_messages,
                max_bytes,
                filter,
            })
        };
        let first = get(offset)?;
        let done =
            |r: &GetResult| matches!(r.status, GetStatus::Found | GetStatus::OffsetOutOfRange);
        if done(&first) || wait.is_zero() {
            return Ok(first);
        }
        let _permit = self.pending_pull_permit()?;
        let subscription = self.arrivals.subscribe(topic);
        let deadline = tokio::time::Instant::now() + wait;
        let mut last = first;
        loop {
            let notified = subscription.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            last = get(last.next_offset)?;
            if done(&last) {
                return Ok(last);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(last);
            }
        }
    }

    fn pending_pull_permit(&self) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
        self.pending_pulls.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                ErrorCode::TOO_MANY_PENDING_PULLS,
                format!(
                    "{} long polls already pending (HttpOptions::pending_pulls_max); retry later",
                    self.opts.pending_pulls_max
                ),
            )
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Groups

/// Pull for a consumer group from its committed offsets (the queue's min offset for a queue the
/// group has not committed in), and by default commit the offsets after the returned messages.
/// Pulls of one (group, topic) are serialised, so members of a group never receive the same
/// messages from one committed offset.
#[utoipa::path(post, path = "/v1/groups/{group}/pull", tag = "groups",
    params(("group" = String, Path, description = "Consumer group", pattern = "^[A-Za-z0-9_-]{1,127}$")),
    request_body = GroupPullRequest,
    responses(
        (status = 200, description = "Messages (possibly none) and the queues' positions", body = GroupPullResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such topic or queue", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many long polls pending", body = ErrorBody),
    ))]
pub(crate) async fn group_pull(
    State(s): Shared,
    ApiPath(group): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<GroupPullResponse>> {
    check_group(&group)?;
    let req: GroupPullRequest = json_body(&s, &headers, body).await?;
    check_topic(&req.topic)?;
    let (max_messages, max_bytes) = pull_bounds(req.max_messages, req.max_bytes)?;
    let wait = wait_of(&s, req.wait_ms)?;
    let filter = s.engine.filter(req.expression.as_deref().unwrap_or("*"))?;
    let count = s.engine.topic_queue_count(&req.topic).ok_or_else(|| {
        ApiError::from(tern_engine::Error::TopicNotFound {
            topic: req.topic.clone(),
        })
    })?;
    let queues: Vec<u32> = match req.queue_id {
        Some(q) => {
            s.engine.queue_offsets(&req.topic, q)?;
            vec![q]
        }
        None => {
            let first = s.round_robin.fetch_add(1, Ordering::Relaxed) % count;
            (0..count).map(|i| (first + i) % count).collect()
        }
    };
    let lock = s.group_lock(&group, &req.topic);
    let deadline = tokio::time::Instant::now() + wait;
    let mut waiting: Option<(OwnedSemaphorePermit, Subscription)> = None;
    loop {
        let notify = waiting.as_ref().map(|(_, sub)| sub.notify.clone());
        let mut notified = notify.as_deref().map(|n| Box::pin(n.notified()));
        if let Some(n) = notified.as_mut() {
            n.as_mut().enable();
        }
        let response = {
            let _guard = lock.lock().await;
            s.group_read(&group, &req, &queues, &filter, max_messages, max_bytes)?
        };
        let out_of_time = tokio::time::Instant::now() >= deadline;
        if response.status == PullStatus::Found || wait.is_zero() || out_of_time {
            return Ok(Json(response));
        }
        match notified {
            None => {
                // Nothing yet: become a long poll, then read again with the wake-up armed.
                waiting = Some((s.pending_pull_permit()?, s.arrivals.subscribe(&req.topic)));
            }
            Some(n) => {
                if tokio::time::timeout_at(deadline, n).await.is_err() {
                    // One last read after the wait, so an arrival at the deadline is not lost.
                    let _guard = lock.lock().await;
                    let response =
                        s.group_read(&group, &req, &queues, &filter, max_messages, max_bytes)?;
                    return Ok(Json(response));
                }
            }
        }
    }
}

impl AppState {
    /// Read `queues` in order from the group's offsets until the budget is spent; commit the
    /// new offsets when asked. Callers hold the (group, topic) lock.
    fn group_read(
        &self,
        group: &str,
        req: &GroupPullRequest,
        queues: &[u32],
        filter: &Filter,
        max_messages: u32,
        max_bytes: u64,
    ) -> ApiResult<GroupPullResponse> {
        let topic = req.topic.as_str();
        let mut messages = Vec::new();
        let mut positions = Vec::new();
        let mut bytes_left = max_bytes;
        let mut bodies = 0usize;
        for &queue_id in queues {
            let left = max_messages.saturating_sub(messages.len() as u32);
            if left == 0 || bytes_left == 0 {
                break;
            }
            let committed = self.engine.query_offset(group, topic, queue_id)?;
            let (min, _) = self.engine.queue_offsets(topic, queue_id)?;
            let offset = committed.unwrap_or(min).max(min);
            let result = self.engine.get(&GetRequest {
                topic,
                queue_id,
                offset,
                max_messages: left,
                max_bytes: bytes_left,
                filter,
            })?;
            for m in &result.messages {
                let v = m.view();
                bytes_left = bytes_left.saturating_sub(u64::from(v.total_size()));
                bodies += v.body().len();
                messages.push(MessageOut::from_stored(m, req.body_encoding));
            }
            let next = result.next_offset;
            if req.auto_commit && committed != Some(next) {
                self.engine.commit_offset(group, topic, queue_id, next)?;
            }
            positions.push(GroupQueuePosition {
                queue_id,
                offset,
                next_offset: next,
                max_offset: result.max_offset,
            });
        }
        let status = if messages.is_empty() {
            PullStatus::NoNewMessage
        } else {
            PullStatus::Found
        };
        if !messages.is_empty() {
            count_gets(self, &messages, bodies);
        }
        Ok(GroupPullResponse {
            status,
            messages,
            queues: positions,
            committed: req.auto_commit,
        })
    }
}

fn offset_info(s: &AppState, group: &str, topic: &str, queue_id: u32) -> ApiResult<OffsetInfo> {
    let (_, max_offset) = s.engine.queue_offsets(topic, queue_id)?;
    let offset = s.engine.query_offset(group, topic, queue_id)?;
    Ok(OffsetInfo {
        group: group.to_owned(),
        topic: topic.to_owned(),
        queue_id,
        offset,
        max_offset,
        lag: offset.map(|o| max_offset.saturating_sub(o)),
    })
}

/// A group's committed offset in one queue, with the queue's max offset and the lag.
#[utoipa::path(get, path = "/v1/groups/{group}/offsets/{topic}/{queue_id}", tag = "groups",
    params(
        ("group" = String, Path, description = "Consumer group", pattern = "^[A-Za-z0-9_-]{1,127}$"),
        ("topic" = String, Path, description = "Topic name", pattern = "^((%RETRY%|%DLQ%)?[A-Za-z0-9_-]{1,127}|%SCHEDULE%|%TIMER%)$"),
        ("queue_id" = u32, Path, description = "Queue id"),
    ),
    responses(
        (status = 200, description = "The offset (null when never committed)", body = OffsetInfo),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such topic or queue", body = ErrorBody),
    ))]
pub(crate) async fn query_offset(
    State(s): Shared,
    ApiPath((group, topic, queue_id)): ApiPath<(String, String, u32)>,
) -> ApiResult<Json<OffsetInfo>> {
    check_group(&group)?;
    check_topic(&topic)?;
    Ok(Json(offset_info(&s, &group, &topic, queue_id)?))
}

/// Commit a group's offset in one queue (at most the queue's max offset). Offsets are persisted
/// periodically and on shutdown.
#[utoipa::path(put, path = "/v1/groups/{group}/offsets/{topic}/{queue_id}", tag = "groups",
    params(
        ("group" = String, Path, description = "Consumer group", pattern = "^[A-Za-z0-9_-]{1,127}$"),
        ("topic" = String, Path, description = "Topic name", pattern = "^((%RETRY%|%DLQ%)?[A-Za-z0-9_-]{1,127}|%SCHEDULE%|%TIMER%)$"),
        ("queue_id" = u32, Path, description = "Queue id"),
    ),
    request_body = CommitOffsetRequest,
    responses(
        (status = 200, description = "Committed", body = OffsetInfo),
        (status = 400, description = "Invalid input, or past the queue's max offset", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such topic or queue", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ))]
pub(crate) async fn commit_offset(
    State(s): Shared,
    ApiPath((group, topic, queue_id)): ApiPath<(String, String, u32)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<OffsetInfo>> {
    check_group(&group)?;
    check_topic(&topic)?;
    let req: CommitOffsetRequest = json_body(&s, &headers, body).await?;
    check_offset("offset", req.offset)?;
    s.engine
        .commit_offset(&group, &topic, queue_id, req.offset)?;
    Ok(Json(offset_info(&s, &group, &topic, queue_id)?))
}

/// Report that a group's consumer could not process a message: it is re-put to
/// `%RETRY%{group}` with delay level 3 + its reconsume count, or after `max_reconsume_times`
/// failures moved to `%DLQ%{group}`.
#[utoipa::path(post, path = "/v1/groups/{group}/consume-failed", tag = "groups",
    params(("group" = String, Path, description = "Consumer group", pattern = "^[A-Za-z0-9_-]{1,127}$")),
    request_body = ConsumeFailedRequest,
    responses(
        (status = 200, description = "Where the message went", body = ConsumeFailedResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No message at that commitlog offset (INVALID)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "Store stopped", body = ErrorBody),
        (status = 507, description = "Disk full", body = ErrorBody),
    ))]
pub(crate) async fn consume_failed(
    State(s): Shared,
    ApiPath(group): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ConsumeFailedResponse>> {
    check_group(&group)?;
    let req: ConsumeFailedRequest = json_body(&s, &headers, body).await?;
    check_offset("commitlog_offset", req.commitlog_offset)?;
    s.lookup(req.commitlog_offset)?;
    let engine = s.engine.clone();
    let offset = req.commitlog_offset;
    let g = group.clone();
    let outcome = s
        .blocking(move || engine.consume_failed(&g, offset))
        .await?;
    Ok(Json(match outcome {
        tern_engine::FailureOutcome::Retry {
            delay_level,
            reconsume_count,
        } => ConsumeFailedResponse {
            outcome: FailureKind::Retry,
            topic: names::retry_topic(&group),
            delay_level: Some(delay_level),
            reconsume_count,
        },
        tern_engine::FailureOutcome::DeadLetter { reconsume_count } => ConsumeFailedResponse {
            outcome: FailureKind::DeadLetter,
            topic: names::dlq_topic(&group),
            delay_level: None,
            reconsume_count,
        },
    }))
}

fn groups(s: &AppState, only: Option<&str>) -> Vec<GroupInfo> {
    let mut out: Vec<GroupInfo> = Vec::new();
    for (group, topic, queue_id, offset) in s.engine.consumer_offsets() {
        if only.is_some_and(|g| g != group) {
            continue;
        }
        let max_offset = s
            .engine
            .queue_offsets(&topic, queue_id)
            .map_or(offset, |(_, max)| max);
        let lag = max_offset.saturating_sub(offset);
        let entry = GroupQueueLag {
            topic,
            queue_id,
            offset,
            max_offset,
            lag,
        };
        match out.last_mut() {
            Some(g) if g.group == group => {
                g.total_lag += lag;
                g.queues.push(entry);
            }
            _ => out.push(GroupInfo {
                group,
                total_lag: lag,
                queues: vec![entry],
            }),
        }
    }
    out
}

/// Every consumer group with its offsets and lag per queue.
#[utoipa::path(get, path = "/v1/groups", tag = "groups",
    responses(
        (status = 200, description = "Groups that committed an offset, sorted", body = GroupList),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub(crate) async fn list_groups(State(s): Shared) -> Json<GroupList> {
    Json(GroupList {
        groups: groups(&s, None),
    })
}

/// One consumer group with its offsets and lag per queue (no queues while it has committed
/// nothing).
#[utoipa::path(get, path = "/v1/groups/{group}", tag = "groups",
    params(("group" = String, Path, description = "Consumer group", pattern = "^[A-Za-z0-9_-]{1,127}$")),
    responses(
        (status = 200, description = "The group", body = GroupInfo),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub(crate) async fn describe_group(
    State(s): Shared,
    ApiPath(group): ApiPath<String>,
) -> ApiResult<Json<GroupInfo>> {
    check_group(&group)?;
    Ok(Json(groups(&s, Some(&group)).pop().unwrap_or(GroupInfo {
        group,
        total_lag: 0,
        queues: Vec::new(),
    })))
}

// ---------------------------------------------------------------------------------------------
// Lookup

impl AppState {
    /// The live (not expired) record at a commitlog offset.
    fn lookup(&self, commitlog_offset: u64) -> ApiResult<tern_engine::StoredMessage> {
        let not_found =
            || ApiError::not_found(format!("no message at commitlog offset {commitlog_offset}"));
        let m = match self.engine.get_by_offset(commitlog_offset) {
            Ok(m) => m,
            Err(tern_engine::Error::Invalid { .. }) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        let expired = m
            .view()
            .store_timestamp_ms()
            .saturating_add(self.engine.config().retention_ms)
            <= self.engine.now_ms();
        if expired {
            return Err(not_found());
        }
        Ok(m)
    }
}

fn lookup_answer(
    s: &AppState,
    m: &tern_engine::StoredMessage,
    q: &LookupQuery,
) -> Json<MessageOut> {
    let out = MessageOut::from_stored(m, q.body_encoding.unwrap_or_default());
    count_gets(s, std::slice::from_ref(&out), m.view().body().len());
    Json(out)
}

/// Look up a message by commitlog offset (as returned by a send).
#[utoipa::path(get, path = "/v1/messages/{commitlog_offset}", tag = "messages",
    params(("commitlog_offset" = u64, Path, description = "Commitlog offset", maximum = 9223372036854775807_i64), LookupQuery),
    responses(
        (status = 200, description = "The message", body = MessageOut),
        (status = 400, description = "Invalid offset", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No (live) message starts there", body = ErrorBody),
    ))]
pub(crate) async fn message_by_offset(
    State(s): Shared,
    ApiPath(offset): ApiPath<u64>,
    ApiQuery(q): ApiQuery<LookupQuery>,
) -> ApiResult<Json<MessageOut>> {
    check_offset("commitlog_offset", offset)?;
    let m = s.lookup(offset)?;
    Ok(lookup_answer(&s, &m, &q))
}

/// A message's raw body by commitlog offset, as `application/octet-stream`.
#[utoipa::path(get, path = "/v1/messages/{commitlog_offset}/body", tag = "messages",
    params(("commitlog_offset" = u64, Path, description = "Commitlog offset", maximum = 9223372036854775807_i64)),
    responses(
        (status = 200, description = "The body", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Invalid offset", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No (live) message starts there", body = ErrorBody),
    ))]
pub(crate) async fn message_body(
    State(s): Shared,
    ApiPath(offset): ApiPath<u64>,
) -> ApiResult<Response> {
    check_offset("commitlog_offset", offset)?;
    let m = s.lookup(offset)?;
    let body = m.view().body().to_vec();
    s.metrics.gets.fetch_add(1, Ordering::Relaxed);
    s.metrics
        .get_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    s.metrics.get_requests.fetch_add(1, Ordering::Relaxed);
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// Look up a message by id. Ids the engine assigns hold the message's commitlog offset in their
/// first 8 bytes (little-endian) and its store time in the last 8: the lookup reads that offset
/// and checks the whole id, with no scan. A message that was retried keeps its id, so its id
/// finds the original record.
#[utoipa::path(get, path = "/v1/messages/by-id/{message_id}", tag = "messages",
    params(("message_id" = String, Path, description = "32 hex digits", pattern = "^[0-9a-fA-F]{32}$"), LookupQuery),
    responses(
        (status = 200, description = "The message", body = MessageOut),
        (status = 400, description = "Not 32 hex digits", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No live message has this id", body = ErrorBody),
    ))]
pub(crate) async fn message_by_id(
    State(s): Shared,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<LookupQuery>,
) -> ApiResult<Json<MessageOut>> {
    let id = parse_message_id(&id)?;
    let mut offset_bytes = [0u8; 8];
    offset_bytes.copy_from_slice(&id[..8]);
    let offset = u64::from_le_bytes(offset_bytes);
    let not_found = || ApiError::not_found(format!("no message with id {}", hex(&id)));
    let m = match s.lookup(offset) {
        Ok(m) if m.view().message_id() == id => m,
        Ok(_) => return Err(not_found()),
        Err(e) if e.status == StatusCode::NOT_FOUND => return Err(not_found()),
        Err(e) => return Err(e),
    };
    Ok(lookup_answer(&s, &m, &q))
}

// ---------------------------------------------------------------------------------------------
// Operations

/// Live counters for the console.
#[utoipa::path(get, path = "/v1/stats", tag = "operations",
    responses(
        (status = 200, description = "Counters", body = StatsResponse),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub(crate) async fn stats(State(s): Shared) -> Json<StatsResponse> {
    let m = &s.metrics;
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let (used, full) = s.engine.disk_state();
    let (segments, _, _) = s.engine.commitlog_info();
    let (delayed, timers) = s.engine.schedule_backlog();
    Json(StatsResponse {
        now_ms: s.engine.now_ms(),
        puts_total: r(&m.puts),
        put_bytes_total: r(&m.put_bytes),
        put_requests_total: r(&m.put_requests),
        gets_total: r(&m.gets),
        get_bytes_total: r(&m.get_bytes),
        engine_puts_total: s.engine.stats().puts,
        put_latency: m.put_latency.snapshot(),
        disk_used_ratio: if used.is_finite() { used } else { 0.0 },
        disk_full: full,
        commitlog_segments: segments as u64,
        schedule_backlog: delayed + timers,
        store_failure: s.engine.failure(),
    })
}

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Metrics", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub(crate) async fn metrics(State(s): Shared) -> Response {
    let text = crate::metrics::render(&s.engine, &s.metrics);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Liveness: the server answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = HealthResponse)))]
pub(crate) async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
    })
}

/// Readiness: the store accepts appends (no I/O error stopped it, disk not full).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthResponse),
        (status = 503, description = "Store stopped (STORE_STOPPED) or disk full (DISK_FULL)", body = ErrorBody),
    ))]
pub(crate) async fn readyz(State(s): Shared) -> ApiResult<Json<HealthResponse>> {
    if let Some(cause) = s.engine.failure() {
        return Err(ApiError::new(
            ErrorCode::STORE_STOPPED,
            format!("appends stopped after an I/O error: {cause}"),
        ));
    }
    let (used, full) = s.engine.disk_state();
    if full {
        return Err(ApiError::new(
            ErrorCode::DISK_FULL,
            format!("disk full: {:.1}% used", used * 100.0),
        )
        .with_status(StatusCode::SERVICE_UNAVAILABLE));
    }
    Ok(Json(HealthResponse {
        status: "ready".into(),
    }))
}

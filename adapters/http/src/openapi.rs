//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes and the
//! model types' `ToSchema` derives, served at `/openapi.json`.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;
use crate::error::ErrorBody;
use crate::model::*;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tern HTTP API",
        description = "The tern message-queue engine over HTTP: topics, sends, pulls, consumer \
                       groups and offsets, lookups, metrics. Errors are `ErrorBody` with the \
                       codes of the QUIC protocol's registry.",
        license(name = "Apache-2.0"),
    ),
    paths(
        api::list_topics,
        api::create_topic,
        api::describe_topic,
        api::send,
        api::pull,
        api::group_pull,
        api::query_offset,
        api::commit_offset,
        api::consume_failed,
        api::list_groups,
        api::describe_group,
        api::message_by_offset,
        api::message_body,
        api::message_by_id,
        api::stats,
        api::metrics,
        api::healthz,
        api::readyz,
    ),
    components(schemas(
        ErrorBody, BodyEncoding, CreateTopicRequest, TopicSummary, TopicList, QueueInfo, TopicInfo,
        SendMessage, SendRequest, SendResult, SendResponse, PullStatus, MessageOut, PullResponse,
        GroupPullRequest, GroupQueuePosition, GroupPullResponse, CommitOffsetRequest, OffsetInfo,
        ConsumeFailedRequest, FailureKind, ConsumeFailedResponse, GroupQueueLag, GroupInfo,
        GroupList, LatencyHistogram, StatsResponse, HealthResponse,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "topics", description = "Topics and their queues"),
        (name = "messages", description = "Send, pull and look up messages"),
        (name = "groups", description = "Consumer groups: group pulls, offsets, lag, failures"),
        (name = "operations", description = "Health, readiness, metrics, counters"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

/// Declares the optional bearer token (required when the server has one configured).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The spec as JSON text (built once).
pub fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"building the OpenAPI document: {e}\"}}"))
    })
}

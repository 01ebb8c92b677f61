//! The adapter's error: a registry code, an HTTP status and a message, answered as JSON.
//!
//! Every refusal of the API goes through [`ApiError`], so every error body has the same shape
//! ([`ErrorBody`]) and is counted by code in `/metrics`. Extractor rejections (a bad path
//! parameter, a bad query string) are turned into [`ApiError`]s too, by [`ApiPath`] and
//! [`ApiQuery`].

use std::fmt;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::codes::{engine_error_code, ErrorCode};

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Registry code (the same numbers as the QUIC protocol's status codes).
    #[schema(example = 11)]
    pub code: u16,
    /// Registry name of the code.
    #[schema(example = "INVALID")]
    pub name: String,
    /// What was wrong, naming the limit or rule where there is one.
    pub message: String,
    /// Whether the same request may succeed if sent again later.
    pub retriable: bool,
}

/// A refused or failed request.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    /// An error answered with the code's usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status: code.http_status(),
            message: message.into(),
        }
    }

    /// The same error with another status.
    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::INVALID, message)
    }

    pub fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::MALFORMED, message)
    }

    /// Nothing at the offset or id asked for: `INVALID` (as the QUIC broker answers), 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::INVALID, message).with_status(StatusCode::NOT_FOUND)
    }

    /// The body answered for this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.0,
            name: self.code.name().to_owned(),
            message: self.message.clone(),
            retriable: self.code.is_retriable(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<tern_engine::Error> for ApiError {
    fn from(e: tern_engine::Error) -> ApiError {
        ApiError::new(engine_error_code(&e), e.to_string())
    }
}

/// The code of an error answer, left in the response's extensions for the metrics layer.
#[derive(Debug, Clone, Copy)]
pub struct AnsweredCode(pub ErrorCode);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.code == ErrorCode::AUTH_REQUIRED || self.code == ErrorCode::AUTH_FAILED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tern\""),
            );
        }
        response.extensions_mut().insert(AnsweredCode(self.code));
        response
    }
}

/// Path parameters, with a registry error on a parameter that does not parse.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    let text = rejection.body_text();
    let text = text.strip_prefix("Invalid URL: ").unwrap_or(&text);
    ApiError::invalid(format!("invalid path parameter: {text}"))
}

/// A query string, with a registry error when it does not parse.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let text = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    ApiError::invalid(format!("invalid query string: {text}"))
}

/// Parse a JSON request body, naming the path of a field that does not fit.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::malformed(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::malformed(format!("invalid JSON body at `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::malformed(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

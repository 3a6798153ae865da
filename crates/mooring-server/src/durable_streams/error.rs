//! Durable Streams errors: every refusal as a status, a stable code and an actionable message.
//!
//! Each per-operation error of the core maps here exhaustively (no catch-all arm), so a new
//! error variant cannot reach a client without a deliberate status and code.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mooring_core::append::AppendError;
use mooring_core::create::CreateError;
use mooring_core::producer::ProducerError;
use mooring_core::read::{HeadError, ReadError};
use mooring_core::store::{DeleteError, StoreError};
use mooring_protocol::durable_streams as ds;
use mooring_protocol::durable_streams::HeaderError;
use mooring_protocol::json_mode::JsonBodyError;
use mooring_protocol::PositionParseError;

/// A refused Durable Streams request.
#[derive(Debug)]
pub struct DsError {
    status: StatusCode,
    code: &'static str,
    message: String,
    headers: Vec<(&'static str, String)>,
}

impl DsError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn with(mut self, header: &'static str, value: impl ToString) -> Self {
        self.headers.push((header, value.to_string()));
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for DsError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(name), value);
            }
        }
        response
    }
}

fn not_found() -> DsError {
    DsError::new(
        StatusCode::NOT_FOUND,
        "STREAM_NOT_FOUND",
        "stream not found",
    )
}

fn gone() -> DsError {
    DsError::new(
        StatusCode::GONE,
        "STREAM_GONE",
        "stream was deleted; its forks keep their data",
    )
}

impl From<StoreError> for DsError {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::Poisoned(_) => "STORE_POISONED",
            StoreError::Io(_) => "STORE_IO",
            StoreError::Corrupt(_) => "STORE_CORRUPT",
            StoreError::ShuttingDown => "SHUTTING_DOWN",
            StoreError::Unsupported(_) => {
                return DsError::new(StatusCode::NOT_IMPLEMENTED, "NOT_SUPPORTED", e.to_string());
            }
        };
        DsError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
    }
}

impl From<HeaderError> for DsError {
    fn from(e: HeaderError) -> Self {
        DsError::bad_request("INVALID_HEADER", e.to_string())
    }
}

impl From<PositionParseError> for DsError {
    fn from(e: PositionParseError) -> Self {
        DsError::bad_request("INVALID_OFFSET", e.to_string())
    }
}

impl From<JsonBodyError> for DsError {
    fn from(e: JsonBodyError) -> Self {
        let code = match e {
            JsonBodyError::Invalid => "INVALID_JSON",
            JsonBodyError::EmptyArray => "EMPTY_JSON_ARRAY",
        };
        DsError::bad_request(code, e.to_string())
    }
}

impl From<CreateError> for DsError {
    fn from(e: CreateError) -> Self {
        let message = e.to_string();
        match e {
            CreateError::ConfigMismatch => {
                DsError::new(StatusCode::CONFLICT, "STREAM_EXISTS", message)
            }
            CreateError::PathSoftDeleted => {
                DsError::new(StatusCode::CONFLICT, "STREAM_SOFT_DELETED", message)
            }
            CreateError::SourceNotFound(_) => {
                DsError::new(StatusCode::NOT_FOUND, "FORK_SOURCE_NOT_FOUND", message)
            }
            CreateError::SourceSoftDeleted(_) => {
                DsError::new(StatusCode::CONFLICT, "FORK_SOURCE_DELETED", message)
            }
            CreateError::SourceContentTypeMismatch { .. } => {
                DsError::new(StatusCode::CONFLICT, "CONTENT_TYPE_MISMATCH", message)
            }
            CreateError::ForkOffsetInvalid { .. } => {
                DsError::bad_request("INVALID_FORK_OFFSET", message)
            }
            CreateError::SubOffsetOvershoot { .. } => {
                DsError::bad_request("INVALID_FORK_SUB_OFFSET", message)
            }
            CreateError::Store(e) => e.into(),
        }
    }
}

impl From<AppendError> for DsError {
    fn from(e: AppendError) -> Self {
        let message = e.to_string();
        match e {
            AppendError::NotFound => not_found(),
            AppendError::Gone => gone(),
            AppendError::Closed { next } => {
                DsError::new(StatusCode::CONFLICT, "STREAM_CLOSED", message)
                    .with(ds::STREAM_CLOSED, "true")
                    .with(ds::STREAM_NEXT_OFFSET, next)
            }
            AppendError::ContentTypeMismatch { .. } => {
                DsError::new(StatusCode::CONFLICT, "CONTENT_TYPE_MISMATCH", message)
            }
            AppendError::SeqRegression { .. } => {
                DsError::new(StatusCode::CONFLICT, "SEQ_CONFLICT", message)
            }
            AppendError::Producer(p) => match p {
                ProducerError::StaleEpoch { current, .. } => {
                    DsError::new(StatusCode::FORBIDDEN, "PRODUCER_STALE_EPOCH", message)
                        .with(ds::PRODUCER_EPOCH, current)
                }
                ProducerError::NewEpochMustStartAtZero => {
                    DsError::bad_request("PRODUCER_EPOCH_SEQ", message)
                }
                ProducerError::SeqGap { expected, received } => {
                    DsError::new(StatusCode::CONFLICT, "PRODUCER_SEQ_GAP", message)
                        .with(ds::PRODUCER_EXPECTED_SEQ, expected)
                        .with(ds::PRODUCER_RECEIVED_SEQ, received)
                }
            },
            AppendError::Empty => DsError::bad_request("EMPTY_BODY", message),
            AppendError::Store(e) => e.into(),
        }
    }
}

impl From<ReadError> for DsError {
    fn from(e: ReadError) -> Self {
        let message = e.to_string();
        match e {
            ReadError::NotFound => not_found(),
            ReadError::Gone => gone(),
            ReadError::EpochMismatch { current } => {
                DsError::new(StatusCode::GONE, "HISTORY_LOST", message)
                    .with(ds::STREAM_NEXT_OFFSET, current)
            }
            ReadError::BeyondTail { .. } => DsError::bad_request("OFFSET_BEYOND_TAIL", message),
            // The protocol's answer for a read before the retained range; the header says where
            // the retained records start.
            ReadError::BeforeRetained { start, .. } => {
                DsError::new(StatusCode::GONE, "OFFSET_TRIMMED", message)
                    .with(ds::STREAM_NEXT_OFFSET, start)
            }
            ReadError::Store(e) => e.into(),
        }
    }
}

impl From<HeadError> for DsError {
    fn from(e: HeadError) -> Self {
        match e {
            HeadError::NotFound => not_found(),
            HeadError::Gone => gone(),
            HeadError::Store(e) => e.into(),
        }
    }
}

impl From<DeleteError> for DsError {
    fn from(e: DeleteError) -> Self {
        match e {
            DeleteError::NotFound => not_found(),
            DeleteError::Gone => gone(),
            DeleteError::Store(e) => e.into(),
        }
    }
}

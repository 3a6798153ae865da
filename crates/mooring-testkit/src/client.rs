//! A minimal Durable Streams client for JSON streams: create, append, read pages.
//!
//! It speaks only the plain HTTP protocol a real client would use, so what the checker sees is
//! what any reader would see.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, Response, StatusCode};
use serde_json::value::RawValue;

const NEXT_OFFSET: &str = "stream-next-offset";
const UP_TO_DATE: &str = "stream-up-to-date";
const JSON: &str = "application/json";

/// Why a request did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url} answered without a usable Stream-Next-Offset header")]
    MissingOffset { url: String },
    #[error("{url} returned a body that is not a JSON array: {reason}")]
    NotJsonArray { url: String, reason: String },
    #[error("reading {stream} made no progress at offset {offset}")]
    Stalled { stream: String, offset: String },
}

/// What a writer learned from one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// 2xx: durable, with the stream's new tail offset.
    Acknowledged { offset: String },
    /// The request may have reached the server but no success came back.
    Unknown { reason: String },
    /// The connection was never made, so the server cannot have seen the request.
    NotDelivered { reason: String },
}

/// One page of a catch-up read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub messages: Vec<Vec<u8>>,
    pub next_offset: String,
    pub up_to_date: bool,
}

/// A client bound to one server address.
#[derive(Clone, Debug)]
pub struct StreamClient {
    http: Client,
    base_url: String,
}

impl StreamClient {
    /// `timeout` bounds every request, so a wedged server fails a test instead of hanging it.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, ClientError> {
        let http = Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|source| ClientError::Http {
                url: base_url.to_owned(),
                source,
            })?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    pub fn stream_url(&self, stream: &str) -> String {
        format!("{}/v1/stream/{stream}", self.base_url)
    }

    /// Creates an empty JSON stream; an existing one with the same type is fine.
    pub async fn create_json_stream(&self, stream: &str) -> Result<(), ClientError> {
        let url = self.stream_url(stream);
        let response = self
            .http
            .put(&url)
            .header(CONTENT_TYPE, JSON)
            .body("[]")
            .send()
            .await
            .map_err(|source| ClientError::Http {
                url: url.clone(),
                source,
            })?;
        expect_success(&url, response).await.map(drop)
    }

    /// Appends one JSON message and classifies what the writer can know about its fate.
    pub async fn append_json(&self, stream: &str, message: Vec<u8>) -> AppendOutcome {
        let url = self.stream_url(stream);
        let sent = self
            .http
            .post(&url)
            .header(CONTENT_TYPE, JSON)
            .body(message)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_connect() => {
                return AppendOutcome::NotDelivered {
                    reason: e.to_string(),
                }
            }
            Err(e) => {
                return AppendOutcome::Unknown {
                    reason: e.to_string(),
                }
            }
        };
        let status = response.status();
        if !status.is_success() {
            return AppendOutcome::Unknown {
                reason: format!("status {status}"),
            };
        }
        match header(&response, NEXT_OFFSET) {
            Some(offset) => AppendOutcome::Acknowledged { offset },
            // A success without an offset is a protocol bug; the writer cannot use it.
            None => AppendOutcome::Unknown {
                reason: format!("status {status} without Stream-Next-Offset"),
            },
        }
    }

    /// Reads one page starting after `offset` (`-1` for the start).
    pub async fn read_page(&self, stream: &str, offset: &str) -> Result<Page, ClientError> {
        let url = self.stream_url(stream);
        let response = self
            .http
            .get(&url)
            .query(&[("offset", offset)])
            .send()
            .await
            .map_err(|source| ClientError::Http {
                url: url.clone(),
                source,
            })?;
        let response = expect_success(&url, response).await?;
        let next_offset = header(&response, NEXT_OFFSET)
            .ok_or_else(|| ClientError::MissingOffset { url: url.clone() })?;
        let up_to_date =
            header(&response, UP_TO_DATE).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let body = response.bytes().await.map_err(|source| ClientError::Http {
            url: url.clone(),
            source,
        })?;
        let messages = split_json_array(&body).map_err(|reason| ClientError::NotJsonArray {
            url: url.clone(),
            reason,
        })?;
        Ok(Page {
            messages,
            next_offset,
            up_to_date,
        })
    }

    /// Reads a whole stream from the start, following `Stream-Next-Offset` until up to date.
    pub async fn read_all(&self, stream: &str) -> Result<Vec<Vec<u8>>, ClientError> {
        let mut messages = Vec::new();
        let mut offset = "-1".to_owned();
        loop {
            let page = self.read_page(stream, &offset).await?;
            let stalled = page.messages.is_empty() && !page.up_to_date;
            messages.extend(page.messages);
            if page.up_to_date {
                return Ok(messages);
            }
            // An empty page that is not at the tail would loop forever; call it out instead.
            if stalled || page.next_offset == offset {
                return Err(ClientError::Stalled {
                    stream: stream.to_owned(),
                    offset,
                });
            }
            offset = page.next_offset;
        }
    }
}

async fn expect_success(url: &str, response: Response) -> Result<Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(ClientError::Status {
        url: url.to_owned(),
        status,
        body,
    })
}

fn header(response: &Response, name: &str) -> Option<String> {
    let value = response.headers().get(name)?.to_str().ok()?;
    Some(value.to_owned())
}

/// Splits a JSON array body into its elements' exact bytes (no re-serialization).
fn split_json_array(body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(items.iter().map(|m| m.get().as_bytes().to_vec()).collect())
}

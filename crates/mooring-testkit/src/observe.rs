//! The read side: turns a running server's streams into an [`Observation`] for the checker.

use std::collections::BTreeMap;

use reqwest::StatusCode;

use crate::client::{ClientError, StreamClient};
use crate::history::{Attempt, Outcome};
use crate::observation::{ObservedStream, ProbeResult};
use crate::Observation;

/// Reads each stream fully and reads from each listed offset of that stream.
pub async fn observe(
    client: &StreamClient,
    streams: impl IntoIterator<Item = String>,
    probes: &BTreeMap<String, Vec<String>>,
) -> Result<Observation, ClientError> {
    let mut observation = Observation::new();
    for stream in streams {
        let messages = match client.read_all(&stream).await {
            Ok(messages) => messages,
            // A stream that vanished is a finding for the checker, not a broken test.
            Err(ClientError::Status { status, .. }) if status == StatusCode::NOT_FOUND => {
                observation.missing_streams.insert(stream);
                continue;
            }
            Err(other) => return Err(other),
        };
        let mut observed = ObservedStream {
            messages,
            probes: BTreeMap::new(),
        };
        for offset in probes.get(&stream).into_iter().flatten() {
            let result = probe(client, &stream, offset).await?;
            observed.probes.insert(offset.clone(), result);
        }
        observation.streams.insert(stream, observed);
    }
    Ok(observation)
}

/// Reads from `offset` and keeps only the first message, which is what the checker compares.
///
/// A 4xx for an offset the server itself handed out is a finding, not a test failure, so it
/// becomes [`ProbeResult::Rejected`]; anything else (the server unreachable) is an error.
pub async fn probe(
    client: &StreamClient,
    stream: &str,
    offset: &str,
) -> Result<ProbeResult, ClientError> {
    match client.read_page(stream, offset).await {
        Ok(page) => Ok(match page.messages.into_iter().next() {
            Some(first) => ProbeResult::Starts(first),
            None => ProbeResult::Empty,
        }),
        Err(ClientError::Status { status, body, .. }) if status.is_client_error() => {
            Ok(ProbeResult::Rejected(format!("{status}: {body}")))
        }
        Err(other) => Err(other),
    }
}

/// Groups the acknowledged offsets among `attempts` by stream, ready for [`observe`].
pub fn acknowledged_offsets<'a>(
    attempts: impl IntoIterator<Item = &'a Attempt>,
) -> BTreeMap<String, Vec<String>> {
    let mut by_stream: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for attempt in attempts {
        if let Outcome::Acknowledged { offset } = &attempt.outcome {
            by_stream
                .entry(attempt.stream.clone())
                .or_default()
                .push(offset.clone());
        }
    }
    by_stream
}

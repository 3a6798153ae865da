//! Header names and header-value grammars of the Durable Streams HTTP protocol.
//!
//! Each parser takes the raw header text and returns a typed value or a [`HeaderError`] naming
//! the header and what was wrong, so the HTTP layer can answer `400` with an actionable message.

use chrono::DateTime;

pub const STREAM_NEXT_OFFSET: &str = "stream-next-offset";
pub const STREAM_UP_TO_DATE: &str = "stream-up-to-date";
pub const STREAM_CLOSED: &str = "stream-closed";
pub const STREAM_CURSOR: &str = "stream-cursor";
pub const STREAM_SEQ: &str = "stream-seq";
pub const STREAM_TTL: &str = "stream-ttl";
pub const STREAM_EXPIRES_AT: &str = "stream-expires-at";
pub const STREAM_FORKED_FROM: &str = "stream-forked-from";
pub const STREAM_FORK_OFFSET: &str = "stream-fork-offset";
pub const STREAM_FORK_SUB_OFFSET: &str = "stream-fork-sub-offset";
pub const STREAM_SSE_DATA_ENCODING: &str = "stream-sse-data-encoding";
pub const PRODUCER_ID: &str = "producer-id";
pub const PRODUCER_EPOCH: &str = "producer-epoch";
pub const PRODUCER_SEQ: &str = "producer-seq";
pub const PRODUCER_EXPECTED_SEQ: &str = "producer-expected-seq";
pub const PRODUCER_RECEIVED_SEQ: &str = "producer-received-seq";

/// The largest integer a JavaScript client can hold exactly, the protocol's bound for producer
/// epochs and sequence numbers.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A header value the protocol does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {header} header: {reason}")]
pub struct HeaderError {
    pub header: &'static str,
    pub reason: &'static str,
}

fn refuse<T>(header: &'static str, reason: &'static str) -> Result<T, HeaderError> {
    Err(HeaderError { header, reason })
}

/// `Stream-Closed` counts only when its value is exactly `true`, ignoring case; any other value
/// is treated as absent, never as an error.
pub fn is_closed_flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A canonical non-negative decimal: digits only, no sign, no leading zero unless it is `0`.
fn parse_canonical_decimal(header: &'static str, value: &str) -> Result<u64, HeaderError> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return refuse(
            header,
            "expected a non-negative whole number with digits only",
        );
    }
    if value.len() > 1 && value.starts_with('0') {
        return refuse(header, "leading zeros are not allowed");
    }
    value
        .parse()
        .or_else(|_| refuse(header, "number is too large"))
}

/// `Stream-TTL`: whole seconds of a sliding time-to-live.
pub fn parse_ttl_secs(value: &str) -> Result<u64, HeaderError> {
    parse_canonical_decimal("Stream-TTL", value)
}

/// `Stream-Fork-Sub-Offset`: messages (JSON streams) or bytes past the fork offset.
pub fn parse_fork_sub_offset(value: &str) -> Result<u64, HeaderError> {
    parse_canonical_decimal("Stream-Fork-Sub-Offset", value)
}

/// `Stream-Expires-At`: an RFC 3339 timestamp, returned as Unix milliseconds.
pub fn parse_expires_at_ms(value: &str) -> Result<u64, HeaderError> {
    let parsed = DateTime::parse_from_rfc3339(value.trim()).or_else(|_| {
        refuse(
            "Stream-Expires-At",
            "expected an RFC 3339 timestamp such as 2030-01-01T00:00:00Z",
        )
    })?;
    u64::try_from(parsed.timestamp_millis())
        .or_else(|_| refuse("Stream-Expires-At", "timestamp is before 1970"))
}

/// Formats Unix milliseconds as the RFC 3339 text echoed in `Stream-Expires-At`.
pub fn format_expires_at(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

/// The idempotent-producer tuple of one append request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ProducerClaim {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

/// Reads `Producer-Id`, `Producer-Epoch` and `Producer-Seq`: all three or none.
pub fn parse_producer(
    id: Option<&str>,
    epoch: Option<&str>,
    seq: Option<&str>,
) -> Result<Option<ProducerClaim>, HeaderError> {
    let (id, epoch, seq) = match (id, epoch, seq) {
        (None, None, None) => return Ok(None),
        (Some(id), Some(epoch), Some(seq)) => (id, epoch, seq),
        _ => {
            return refuse(
                "Producer-Id",
                "Producer-Id, Producer-Epoch and Producer-Seq must be sent together",
            )
        }
    };
    if id.is_empty() {
        return refuse("Producer-Id", "must not be empty");
    }
    let epoch = parse_producer_number("Producer-Epoch", epoch)?;
    let seq = parse_producer_number("Producer-Seq", seq)?;
    Ok(Some(ProducerClaim {
        id: id.to_owned(),
        epoch,
        seq,
    }))
}

fn parse_producer_number(header: &'static str, value: &str) -> Result<u64, HeaderError> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return refuse(header, "expected a non-negative integer");
    }
    match value.parse::<u64>() {
        Ok(n) if n <= MAX_SAFE_INTEGER => Ok(n),
        _ => refuse(header, "must be at most 2^53-1"),
    }
}

/// The media type of a `Content-Type` value, lower-cased and without parameters, which is
/// what stream content types are compared by.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether a stream of this content type holds JSON messages (JSON mode).
pub fn is_json(content_type: &str) -> bool {
    media_type(content_type) == "application/json"
}

/// Whether SSE carries this content type as text (`text/*` and JSON) rather than base64.
pub fn is_sse_text(content_type: &str) -> bool {
    let media = media_type(content_type);
    media.starts_with("text/") || media == "application/json"
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn closed_flag_is_exactly_true_in_any_case() {
        assert!(is_closed_flag(Some("true")));
        assert!(is_closed_flag(Some("TRUE")));
        for other in [None, Some(""), Some("false"), Some("1"), Some("yes")] {
            assert!(!is_closed_flag(other), "{other:?}");
        }
    }

    #[test]
    fn ttl_is_a_canonical_decimal() {
        assert_eq!(parse_ttl_secs("0"), Ok(0));
        assert_eq!(parse_ttl_secs("3600"), Ok(3600));
        for bad in [
            "",
            "-1",
            "+1",
            "1.5",
            "01",
            "1e3",
            "abc",
            "99999999999999999999999",
        ] {
            assert!(parse_ttl_secs(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expires_at_reads_rfc3339() {
        assert_eq!(parse_expires_at_ms("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_expires_at_ms("1970-01-01T01:00:01+01:00"), Ok(1000));
        assert!(parse_expires_at_ms("tomorrow").is_err());
        assert_eq!(format_expires_at(1000), "1970-01-01T00:00:01Z");
    }

    #[test]
    fn producer_headers_come_together() {
        assert_eq!(parse_producer(None, None, None), Ok(None));
        assert!(parse_producer(Some("p"), Some("0"), None).is_err());
        assert!(parse_producer(Some(""), Some("0"), Some("0")).is_err());
        assert!(parse_producer(Some("p"), Some("-1"), Some("0")).is_err());
        assert!(parse_producer(Some("p"), Some("0"), Some("9007199254740992")).is_err());
        assert_eq!(
            parse_producer(Some("p"), Some("2"), Some("9007199254740991")),
            Ok(Some(ProducerClaim {
                id: "p".into(),
                epoch: 2,
                seq: MAX_SAFE_INTEGER
            }))
        );
    }

    #[test]
    fn media_types_compare_without_case_or_parameters() {
        assert_eq!(
            media_type("Application/JSON; charset=utf-8"),
            "application/json"
        );
        assert!(is_json("application/json"));
        assert!(!is_json("text/plain"));
        assert!(is_sse_text("text/plain"));
        assert!(!is_sse_text("application/octet-stream"));
    }

    proptest! {
        #[test]
        fn ttl_round_trips_its_canonical_text(n in 0u64..u64::MAX) {
            prop_assert_eq!(parse_ttl_secs(&n.to_string()), Ok(n));
        }
    }
}

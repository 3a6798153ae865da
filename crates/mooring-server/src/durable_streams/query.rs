//! The query string of a Durable Streams read.

use mooring_protocol::ReadFrom;

use super::error::DsError;

/// Live mode of a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Live {
    CatchUp,
    LongPoll,
    Sse,
}

/// A parsed read query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ReadQuery {
    pub(super) from: ReadFrom,
    /// Whether an `offset` was given at all.
    pub(super) explicit_offset: bool,
    pub(super) live: Live,
    pub(super) cursor: Option<String>,
}

/// Parses the raw query. Unknown parameters are ignored; a repeated, empty or malformed
/// `offset` is refused rather than guessed at.
pub(super) fn parse(raw: Option<&str>) -> Result<ReadQuery, DsError> {
    let mut offset = None;
    let mut live = None;
    let mut cursor = None;
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "offset" if offset.is_some() => {
                return Err(DsError::bad_request(
                    "INVALID_OFFSET",
                    "offset must be given once",
                ));
            }
            "offset" => offset = Some(value),
            "live" => live = Some(value),
            "cursor" => cursor = Some(value),
            _ => {}
        }
    }
    let live = match live.as_deref() {
        None => Live::CatchUp,
        Some("long-poll") => Live::LongPoll,
        Some("sse") => Live::Sse,
        Some(other) => {
            return Err(DsError::bad_request(
                "INVALID_LIVE_MODE",
                format!("live must be long-poll or sse, not {other:?}"),
            ))
        }
    };
    let explicit_offset = offset.is_some();
    let from = match offset.as_deref() {
        None => ReadFrom::Start,
        Some("") => {
            return Err(DsError::bad_request(
                "INVALID_OFFSET",
                "offset must not be empty; use -1 for the start",
            ))
        }
        Some(text) => ReadFrom::parse(text)?,
    };
    if live != Live::CatchUp && !explicit_offset {
        return Err(DsError::bad_request(
            "OFFSET_REQUIRED",
            "live reads need an offset: -1 for the start, now for the tail",
        ));
    }
    Ok(ReadQuery {
        from,
        explicit_offset,
        live,
        cursor,
    })
}

/// Decodes `%XX` escapes and `+`; invalid escapes are kept as they are, so they fail parsing
/// downstream with a clear message.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_offsets_and_modes() {
        let q = parse(Some("offset=-1&live=sse&x=1")).expect("valid");
        assert_eq!((q.from, q.live), (ReadFrom::Start, Live::Sse));
        let q = parse(None).expect("valid");
        assert_eq!((q.from, q.explicit_offset), (ReadFrom::Start, false));
        assert_eq!(
            parse(Some("offset=now")).map(|q| q.from).ok(),
            Some(ReadFrom::Now)
        );
    }

    #[test]
    fn refuses_ambiguous_offsets() {
        for bad in [
            "offset=",
            "offset=-1&offset=now",
            "offset=a,b",
            "offset=1%202",
            "live=long-poll",
        ] {
            assert!(parse(Some(bad)).is_err(), "{bad}");
        }
    }
}

//! JSON mode: how an `application/json` append body becomes messages.
//!
//! A body that is a JSON array is flattened one level: each element is one message. Any other
//! JSON value is one message. Messages keep their exact bytes (no re-serialization), so what a
//! reader gets back is what the writer sent.

use serde_json::value::RawValue;

/// Why a JSON-mode body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonBodyError {
    #[error("body is not valid JSON")]
    Invalid,
    #[error("an empty JSON array appends nothing; send at least one message")]
    EmptyArray,
}

/// Splits a JSON-mode body into its messages.
///
/// `allow_empty_array` is true for stream creation, where `[]` creates an empty stream.
pub fn flatten(body: &[u8], allow_empty_array: bool) -> Result<Vec<Vec<u8>>, JsonBodyError> {
    let text = std::str::from_utf8(body).map_err(|_| JsonBodyError::Invalid)?;
    let trimmed = text.trim_matches([' ', '\t', '\n', '\r']);
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(trimmed).map_err(|_| JsonBodyError::Invalid)?;
        if items.is_empty() && !allow_empty_array {
            return Err(JsonBodyError::EmptyArray);
        }
        Ok(items.iter().map(|m| m.get().as_bytes().to_vec()).collect())
    } else {
        let one: &RawValue = serde_json::from_str(trimmed).map_err(|_| JsonBodyError::Invalid)?;
        Ok(vec![one.get().as_bytes().to_vec()])
    }
}

/// Writes messages as one JSON array.
pub fn write_array<'a>(messages: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, m) in messages.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(m);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(body: &str) -> Vec<String> {
        flatten(body.as_bytes(), false)
            .map(|v| {
                v.into_iter()
                    .map(|m| String::from_utf8(m).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn flattens_exactly_one_level() {
        assert_eq!(texts(r#"[{"a":1},{"b":2}]"#), [r#"{"a":1}"#, r#"{"b":2}"#]);
        assert_eq!(texts("[[1,2],[3,4]]"), ["[1,2]", "[3,4]"]);
        assert_eq!(texts("[[[1,2,3]]]"), ["[[1,2,3]]"]);
        assert_eq!(texts(r#" {"x": 1} "#), [r#"{"x": 1}"#]);
        assert_eq!(texts("42"), ["42"]);
    }

    #[test]
    fn refuses_bad_json_and_empty_arrays() {
        assert_eq!(flatten(b"{bad", false), Err(JsonBodyError::Invalid));
        assert_eq!(flatten(b"[1,", false), Err(JsonBodyError::Invalid));
        assert_eq!(flatten(b"", false), Err(JsonBodyError::Invalid));
        assert_eq!(flatten(b"[]", false), Err(JsonBodyError::EmptyArray));
        assert_eq!(flatten(b"[]", true), Ok(vec![]));
    }

    #[test]
    fn writes_arrays() {
        let mut out = Vec::new();
        write_array([&b"1"[..], &b"{}"[..]], &mut out);
        assert_eq!(out, b"[1,{}]");
    }
}

//! Positions in a log and their offset text.
//!
//! A position names the point *after* `serial` records of one life (`epoch`) of a log: serial 0
//! is the start, serial `n` follows the `n`th record. Its text form is two zero-padded 16-digit
//! decimals joined by `_`, `EEEEEEEEEEEEEEEE_SSSSSSSSSSSSSSSS`, so offsets of one stream sort
//! lexicographically in log order, never contain `, & = ? /`, and the start of a fresh log is
//! `0000000000000000_0000000000000000` as Durable Streams clients expect.

use std::fmt;

/// Digits in each half of an offset.
const HALF_WIDTH: usize = 16;
/// The largest value a 16-digit decimal half can hold.
pub const MAX_HALF: u64 = 9_999_999_999_999_999;

/// A place in a log: after `serial` records of life `epoch`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Position {
    /// One life of the log; changes only if the log was lost or reset.
    pub epoch: u64,
    /// Records before this position (the serial of the last record included).
    pub serial: u64,
}

impl Position {
    /// The start of life `epoch`.
    pub const fn start(epoch: u64) -> Self {
        Self { epoch, serial: 0 }
    }

    /// The offset text form without the formatting machinery (it is written into a header of
    /// every append's answer); `None` if a half exceeds 16 digits, which `Display` still
    /// writes in full.
    pub fn offset_bytes(&self) -> Option<[u8; 2 * HALF_WIDTH + 1]> {
        if self.epoch > MAX_HALF || self.serial > MAX_HALF {
            return None;
        }
        let mut out = [b'0'; 2 * HALF_WIDTH + 1];
        out[HALF_WIDTH] = b'_';
        for (half, value) in [(0, self.epoch), (HALF_WIDTH + 1, self.serial)] {
            let mut rest = value;
            for digit in out[half..half + HALF_WIDTH].iter_mut().rev() {
                // `rest % 10` is below 10, so the cast cannot truncate.
                *digit = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
        }
        Some(out)
    }

    /// Parses the offset text form. Sentinels (`-1`, `now`) are not positions: see [`ReadFrom`].
    pub fn parse(text: &str) -> Result<Self, PositionParseError> {
        let (epoch, serial) = text.split_once('_').ok_or(PositionParseError::Shape)?;
        Ok(Self {
            epoch: parse_half(epoch)?,
            serial: parse_half(serial)?,
        })
    }
}

fn parse_half(half: &str) -> Result<u64, PositionParseError> {
    if half.len() != HALF_WIDTH || !half.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PositionParseError::Shape);
    }
    half.parse().map_err(|_| PositionParseError::Shape)
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016}_{:016}", self.epoch, self.serial)
    }
}

/// Why an offset was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PositionParseError {
    /// Not `-1`, `now`, or two 16-digit decimals joined by `_`.
    #[error(
        "offset must be -1, now, or an offset returned by this server (16 digits _ 16 digits)"
    )]
    Shape,
}

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// From the first retained record (`offset=-1` or no offset).
    Start,
    /// From the tail: only what is appended from now on (`offset=now`).
    Now,
    /// After the given position.
    After(Position),
}

impl ReadFrom {
    /// Parses an `offset` query value.
    pub fn parse(text: &str) -> Result<Self, PositionParseError> {
        match text {
            "-1" => Ok(Self::Start),
            "now" => Ok(Self::Now),
            other => Position::parse(other).map(Self::After),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn start_of_a_fresh_log_is_all_zeros() {
        assert_eq!(
            Position::start(0).to_string(),
            "0000000000000000_0000000000000000"
        );
    }

    #[test]
    fn pinned_text_form() {
        let p = Position {
            epoch: 3,
            serial: 42,
        };
        assert_eq!(p.to_string(), "0000000000000003_0000000000000042");
        assert_eq!(Position::parse("0000000000000003_0000000000000042"), Ok(p));
    }

    #[test]
    fn refuses_malformed_offsets() {
        for bad in [
            "",
            "_",
            "0_0",
            "abc",
            "0000000000000000-0000000000000000",
            "000000000000000a_0000000000000000",
            "0000000000000000_00000000000000000",
            "0000000000000000_0000000000000000_",
            "+000000000000000_0000000000000000",
            "0000000000000000,0000000000000000",
        ] {
            assert_eq!(
                Position::parse(bad),
                Err(PositionParseError::Shape),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sentinels_parse_as_read_starts() {
        assert_eq!(ReadFrom::parse("-1"), Ok(ReadFrom::Start));
        assert_eq!(ReadFrom::parse("now"), Ok(ReadFrom::Now));
        assert!(ReadFrom::parse("NOW").is_err());
    }

    #[test]
    fn offset_bytes_are_the_text_form_up_to_sixteen_digits() {
        let edge = Position {
            epoch: MAX_HALF,
            serial: 0,
        };
        assert_eq!(
            edge.offset_bytes().as_ref().map(|b| &b[..]),
            Some(edge.to_string().as_bytes())
        );
        let over = Position {
            epoch: 1,
            serial: MAX_HALF + 1,
        };
        assert_eq!(over.offset_bytes(), None, "too long for the fixed form");
    }

    proptest! {
        #[test]
        fn offset_bytes_match_the_text_form(epoch in 0..=MAX_HALF, serial in 0..=MAX_HALF) {
            let p = Position { epoch, serial };
            let bytes = p.offset_bytes().expect("16 digits each");
            let text = p.to_string();
            prop_assert_eq!(&bytes[..], text.as_bytes());
        }

        #[test]
        fn round_trips(epoch in 0..=MAX_HALF, serial in 0..=MAX_HALF) {
            let p = Position { epoch, serial };
            prop_assert_eq!(Position::parse(&p.to_string()), Ok(p));
        }

        #[test]
        fn text_order_is_position_order(
            a in (0..=MAX_HALF, 0..=MAX_HALF),
            b in (0..=MAX_HALF, 0..=MAX_HALF),
        ) {
            let pa = Position { epoch: a.0, serial: a.1 };
            let pb = Position { epoch: b.0, serial: b.1 };
            prop_assert_eq!(pa.cmp(&pb), pa.to_string().cmp(&pb.to_string()));
        }

        #[test]
        fn text_has_no_reserved_characters(epoch in 0..=MAX_HALF, serial in 0..=MAX_HALF) {
            let text = Position { epoch, serial }.to_string();
            prop_assert!(!text.contains([',', '&', '=', '?', '/']));
            prop_assert!(text != "-1" && text != "now");
        }
    }
}

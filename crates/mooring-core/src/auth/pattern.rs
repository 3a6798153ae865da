//! Session-name patterns.
//!
//! A pattern is split on `:` into segments, like a session name. Each segment is either a
//! literal (matched exactly), `*` (exactly one whole segment, never empty, never crossing a
//! `:`), or `**` as the *last* segment (one or more remaining segments). There is no partial
//! wildcard such as `user-*`: a grant for `chat:user-4*` could otherwise reach `chat:user-42`
//! and `chat:user-4000` alike, and `*` is not a session-name character anyway. So
//! `chat:user-42:*` matches `chat:user-42:a`, but not `chat:user-42`, `chat:user-42:a:b` or
//! `chat:user-420:a`; `chat:**` matches every session of the `chat` namespace.

use std::fmt;
use std::str::FromStr;

use mooring_protocol::session::MAX_SESSION_NAME;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

/// A parsed session-name pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPattern {
    segments: Vec<Segment>,
}

/// Why a pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("a session pattern is 1 to 255 characters")]
    Length,
    #[error("pattern {0:?}: segments are literals of A-Z a-z 0-9 _ . / -, `*`, or a final `**`")]
    Segment(String),
}

fn is_literal(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'))
}

impl SessionPattern {
    /// `**`: every session.
    pub fn everything() -> Self {
        Self {
            segments: vec![Segment::Rest],
        }
    }

    /// Whether `session` is one of the names this pattern matches.
    pub fn matches(&self, session: &str) -> bool {
        let mut names = session.split(':');
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Rest => {
                    debug_assert_eq!(i + 1, self.segments.len());
                    // One or more segments remain, none empty.
                    let rest: Vec<&str> = names.collect();
                    return !rest.is_empty() && rest.iter().all(|s| !s.is_empty());
                }
                Segment::One => match names.next() {
                    Some(name) if !name.is_empty() => {}
                    _ => return false,
                },
                Segment::Literal(literal) => {
                    if names.next() != Some(literal.as_str()) {
                        return false;
                    }
                }
            }
        }
        names.next().is_none()
    }

    /// Whether every name `narrower` matches is matched by `self`.
    pub fn covers(&self, narrower: &SessionPattern) -> bool {
        let mut theirs = narrower.segments.iter();
        for mine in &self.segments {
            match mine {
                // `**` covers any non-empty remainder, wildcards included.
                Segment::Rest => return theirs.next().is_some(),
                Segment::One => match theirs.next() {
                    Some(Segment::Literal(_) | Segment::One) => {}
                    Some(Segment::Rest) | None => return false,
                },
                Segment::Literal(literal) => match theirs.next() {
                    Some(Segment::Literal(other)) if other == literal => {}
                    _ => return false,
                },
            }
        }
        theirs.next().is_none()
    }
}

impl FromStr for SessionPattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() || text.len() > MAX_SESSION_NAME {
            return Err(PatternError::Length);
        }
        let parts: Vec<&str> = text.split(':').collect();
        let last = parts.len() - 1;
        let segments = parts
            .iter()
            .enumerate()
            .map(|(i, part)| match *part {
                "*" => Ok(Segment::One),
                "**" if i == last => Ok(Segment::Rest),
                literal if is_literal(literal) => Ok(Segment::Literal(literal.to_owned())),
                _ => Err(PatternError::Segment(text.to_owned())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { segments })
    }
}

impl fmt::Display for SessionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            match segment {
                Segment::Literal(l) => f.write_str(l)?,
                Segment::One => f.write_str("*")?,
                Segment::Rest => f.write_str("**")?,
            }
        }
        Ok(())
    }
}

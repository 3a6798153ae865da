//! Who may do what: operations, session-name patterns and capability sets. Pure: credentials
//! are verified by the server; this module only answers "does this grant allow that".
//!
//! - [`Operation`]: the nine things a grant can allow;
//! - [`pattern`]: session-name patterns (`chat:user-42:*`), segment by segment;
//! - [`Capabilities`]: a map from pattern to operations, its checks and its subset test (a
//!   token minted from an API key may only narrow the key's rights).

pub mod pattern;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use mooring_protocol::session::Action;
use serde::{Deserialize, Serialize};

pub use pattern::{PatternError, SessionPattern};

/// An operation a capability grants on the sessions a pattern matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Attach (realtime), follow live (SSE), read a Durable Stream.
    Subscribe,
    /// Publish any event except control events; create a Durable Stream and append to it.
    /// Implies `append`.
    Publish,
    /// Only `message.append` to existing messages (an agent that may stream, not start).
    Append,
    /// Enter, update, leave and list presence.
    Presence,
    /// Read history pages (`/history`).
    History,
    /// Publish `control.cancel`, or `POST /cancel`.
    Cancel,
    /// Publish `approval.answer`, or `POST /approve`.
    Approve,
    /// Reserved for session state (not used by any surface yet).
    State,
    /// Everything, including deleting a Durable Stream.
    Admin,
}

impl Operation {
    /// Every operation, in a stable order.
    pub const ALL: [Operation; 9] = [
        Self::Subscribe,
        Self::Publish,
        Self::Append,
        Self::Presence,
        Self::History,
        Self::Cancel,
        Self::Approve,
        Self::State,
        Self::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
            Self::Append => "append",
            Self::Presence => "presence",
            Self::History => "history",
            Self::Cancel => "cancel",
            Self::Approve => "approve",
            Self::State => "state",
            Self::Admin => "admin",
        }
    }

    /// Whether holding `self` grants `wanted`: `admin` grants all, `publish` grants `append`.
    pub fn grants(self, wanted: Operation) -> bool {
        self == wanted || self == Self::Admin || (self == Self::Publish && wanted == Self::Append)
    }

    /// The operation publishing an event with `action` needs.
    pub fn to_publish(action: Action) -> Operation {
        match action {
            Action::MessageAppend => Self::Append,
            Action::ControlCancel => Self::Cancel,
            Action::ApprovalAnswer => Self::Approve,
            Action::MessageCreate
            | Action::MessageUpdate
            | Action::MessageDelete
            | Action::RunStart
            | Action::RunEnd
            | Action::RunStalled
            | Action::ControlSteer
            | Action::ApprovalRequest
            | Action::Event => Self::Publish,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation name that is not one of [`Operation::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation {0:?}; expected one of subscribe, publish, append, presence, history, cancel, approve, state, admin")]
pub struct UnknownOperation(pub String);

impl FromStr for Operation {
    type Err = UnknownOperation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| UnknownOperation(s.to_owned()))
    }
}

/// One grant: the operations allowed on the sessions one pattern matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub pattern: SessionPattern,
    pub operations: BTreeSet<Operation>,
}

impl Grant {
    fn allows(&self, session: &str, wanted: Operation) -> bool {
        self.pattern.matches(session) && self.operations.iter().any(|op| op.grants(wanted))
    }

    /// Whether every (session, operation) this grant allows is allowed by `other`.
    fn within(&self, other: &Grant) -> bool {
        other.pattern.covers(&self.pattern)
            && self
                .operations
                .iter()
                .all(|op| other.operations.iter().any(|held| held.grants(*op)))
    }
}

/// Why a capability set could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error(transparent)]
    Operation(#[from] UnknownOperation),
    #[error("expected PATTERN=OP[,OP...], got {0:?}")]
    Syntax(String),
    #[error("pattern {0:?} grants no operation")]
    Empty(String),
}

/// What a credential may do: grants, checked in any order (a request is allowed when one grant
/// allows it). An empty set allows nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    grants: Vec<Grant>,
}

impl Capabilities {
    /// Everything on every session: an anonymous loopback node, or a key without a caps list.
    pub fn all() -> Self {
        Self {
            grants: vec![Grant {
                pattern: SessionPattern::everything(),
                operations: BTreeSet::from([Operation::Admin]),
            }],
        }
    }

    /// Grants from `(pattern, operations)` pairs, as in a token's `caps` claim.
    pub fn from_pairs<'a, P, O>(pairs: P) -> Result<Self, CapabilityError>
    where
        P: IntoIterator<Item = (&'a str, O)>,
        O: IntoIterator<Item = &'a str>,
    {
        let mut grants = Vec::new();
        for (pattern, ops) in pairs {
            let operations = ops
                .into_iter()
                .map(str::parse)
                .collect::<Result<BTreeSet<Operation>, _>>()?;
            if operations.is_empty() {
                return Err(CapabilityError::Empty(pattern.to_owned()));
            }
            grants.push(Grant {
                pattern: pattern.parse()?,
                operations,
            });
        }
        Ok(Self { grants })
    }

    /// One grant written `PATTERN=OP[,OP...]` (the command line's `--cap`), added to `self`.
    pub fn add_text(&mut self, text: &str) -> Result<(), CapabilityError> {
        let (pattern, ops) = text
            .rsplit_once('=')
            .ok_or_else(|| CapabilityError::Syntax(text.to_owned()))?;
        let more = Self::from_pairs([(pattern, ops.split(',').map(str::trim))])?;
        self.grants.extend(more.grants);
        Ok(())
    }

    /// Whether `operation` on `session` is allowed.
    pub fn allows(&self, session: &str, operation: Operation) -> bool {
        self.grants.iter().any(|g| g.allows(session, operation))
    }

    /// Whether `operation` is allowed on every session `pattern` matches (one grant must cover
    /// the whole pattern, as in [`Capabilities::is_within`]).
    pub fn allows_all(&self, pattern: &SessionPattern, operation: Operation) -> bool {
        self.grants.iter().any(|g| {
            g.pattern.covers(pattern) && g.operations.iter().any(|op| op.grants(operation))
        })
    }

    /// Whether every right of `self` is also a right of `other` (each grant of `self` within
    /// one grant of `other`; a grant covered only by the union of several is refused, which is
    /// conservative).
    pub fn is_within(&self, other: &Capabilities) -> bool {
        self.grants
            .iter()
            .all(|mine| other.grants.iter().any(|theirs| mine.within(theirs)))
    }

    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// The `caps` claim form: pattern -> operation names.
    pub fn to_claim(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut claim = std::collections::BTreeMap::<String, Vec<String>>::new();
        for grant in &self.grants {
            let ops = claim.entry(grant.pattern.to_string()).or_default();
            ops.extend(grant.operations.iter().map(|op| op.as_str().to_owned()));
            ops.sort();
            ops.dedup();
        }
        claim
    }
}

#[cfg(test)]
mod tests;

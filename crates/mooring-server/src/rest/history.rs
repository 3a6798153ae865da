//! `GET /v1/sessions/{name}/history`: pages of events in either direction, by serial or time.
//!
//! Serials are contiguous, so a backward page is a forward read of a computed range; event times
//! never decrease along the log, so a time bound is found by binary search on serials. Pages
//! cover the events retention kept: a page from the start begins after the trimmed ones, and a
//! page after a trimmed serial is refused (`history_lost`) rather than begun later, which would
//! be a gap.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mooring_core::session::event_of;
use mooring_protocol::session::Event;
use mooring_protocol::{Position, ReadFrom};
use serde::Deserialize;
use serde_json::json;

use super::error::RestError;
use super::publish::check_name;
use crate::state::AppState;

const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Direction {
    #[default]
    Forward,
    Backward,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    #[serde(default)]
    direction: Direction,
    /// Forward: events after this serial.
    after: Option<u64>,
    /// Backward: events before this serial.
    before: Option<u64>,
    /// Forward: from the first event at or after this time (Unix ms).
    since: Option<u64>,
    /// Backward: from the last event at or before this time (Unix ms).
    until: Option<u64>,
    limit: Option<u64>,
}

/// Events with serials in `(after, upto]`, at most `limit`, in order.
async fn events_between(
    app: &AppState,
    name: &str,
    epoch: u64,
    after: u64,
    upto: u64,
    limit: u64,
) -> Result<Vec<Event>, RestError> {
    let mut out = Vec::new();
    let mut position = after;
    while position < upto && (out.len() as u64) < limit {
        let from = ReadFrom::After(Position {
            epoch,
            serial: position,
        });
        let batch = app
            .store
            .read(name, from, 256 << 10)
            .await
            .map_err(|e| RestError::of_read(name, e))?;
        let Some(last) = batch.records.last().map(|r| r.serial) else {
            break;
        };
        for record in batch.records.iter().filter(|r| r.serial <= upto) {
            if (out.len() as u64) < limit {
                out.push(event_of(record));
            }
        }
        position = last;
    }
    Ok(out)
}

/// The time of event `serial`.
async fn time_of(app: &AppState, name: &str, epoch: u64, serial: u64) -> Result<u64, RestError> {
    let events = events_between(app, name, epoch, serial - 1, serial, 1).await?;
    Ok(events.first().map_or(0, |e| e.ts))
}

/// The first serial in `trimmed+1..=tail` whose time is at least `ms` (`tail + 1` if none).
async fn first_at_or_after(
    app: &AppState,
    name: &str,
    epoch: u64,
    (trimmed, tail): (u64, u64),
    ms: u64,
) -> Result<u64, RestError> {
    let (mut lo, mut hi) = (trimmed + 1, tail + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if time_of(app, name, epoch, mid).await? >= ms {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

pub(crate) async fn history(
    State(app): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, RestError> {
    check_name(&name)?;
    let Query(q) = query.map_err(|e| RestError::invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let info = app.store.head(&name).await.map_err(|e| match e {
        mooring_core::read::HeadError::Store(e) => e.into(),
        _ => RestError::not_found(&name),
    })?;
    let (epoch, tail, trimmed) = (info.tail.epoch, info.tail.serial, info.trimmed);
    let kept = (trimmed, tail);
    let events = match q.direction {
        Direction::Forward => {
            if q.before.is_some() || q.until.is_some() {
                return Err(RestError::invalid("forward pages take after or since"));
            }
            let after = match (q.after, q.since) {
                (Some(_), Some(_)) => {
                    return Err(RestError::invalid("give after or since, not both"))
                }
                (Some(after), None) => after.min(tail),
                (None, Some(ms)) => first_at_or_after(&app, &name, epoch, kept, ms).await? - 1,
                (None, None) => trimmed,
            };
            events_between(&app, &name, epoch, after, tail, limit).await?
        }
        Direction::Backward => {
            if q.after.is_some() || q.since.is_some() {
                return Err(RestError::invalid("backward pages take before or until"));
            }
            let upto = match (q.before, q.until) {
                (Some(_), Some(_)) => {
                    return Err(RestError::invalid("give before or until, not both"))
                }
                (Some(before), None) => before.saturating_sub(1).min(tail),
                (None, Some(ms)) => {
                    first_at_or_after(&app, &name, epoch, kept, ms.saturating_add(1)).await? - 1
                }
                (None, None) => tail,
            };
            // Backward pages end where the kept events begin.
            let after = upto.saturating_sub(limit).max(trimmed);
            let mut page = events_between(&app, &name, epoch, after, upto, limit).await?;
            page.reverse();
            page
        }
    };
    let next = match (q.direction, events.last()) {
        (Direction::Forward, Some(last)) if last.serial < tail => Some(format!(
            "?direction=forward&after={}&limit={limit}",
            last.serial
        )),
        (Direction::Backward, Some(last)) if last.serial > trimmed + 1 => Some(format!(
            "?direction=backward&before={}&limit={limit}",
            last.serial
        )),
        _ => None,
    };
    let body = json!({
        "session": name,
        "epoch": epoch,
        "high_water": tail,
        "trimmed": trimmed,
        "events": events,
        "next": next,
    });
    Ok(Json(body).into_response())
}

//! A lean subscriber of the Pusher Channels protocol (version 7), as Sockudo speaks it.
//!
//! A subscriber opens `/app/{key}?protocol=7`, reads `pusher:connection_established`, sends
//! `pusher:subscribe` for a public channel and reads
//! `pusher_internal:subscription_succeeded`. Events then arrive as
//! `{"event":NAME,"channel":CHANNEL,"data":STRING}`, where the string is what the publisher
//! posted. The server sends `pusher:ping` to a quiet connection and closes it unless
//! `pusher:pong` comes back.

use anyhow::{bail, Context as _};
use futures::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use crate::fan_out::{Incoming, Sent, Wire};
use crate::ws::{Endpoint, Socket, CONNECT_TIMEOUT};

/// The name of the benchmark's events.
pub const EVENT: &str = "tick";

/// How an event frame of [`EVENT`] starts its name, for counting without decoding.
const EVENT_MARK: &str = r#""event":"tick""#;

/// What a benchmark event's data carries (as a JSON string, as Pusher's data is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    /// The publisher's sequence number, from 1.
    pub seq: u64,
    /// When it was sent, microseconds since the run's base.
    pub sent_us: u64,
}

/// A frame from the server, with the fields read here.
#[derive(Debug, Deserialize)]
struct ServerFrame {
    event: String,
    #[serde(default)]
    data: serde_json::Value,
}

impl ServerFrame {
    fn parse(text: &str) -> anyhow::Result<Self> {
        serde_json::from_str(text).with_context(|| {
            let excerpt: String = text.chars().take(200).collect();
            format!("the server sent a frame this client cannot read: {excerpt}")
        })
    }

    /// `data` decoded: Pusher sends it as a string of JSON, but accept it as JSON too.
    fn data_json<T: for<'de> Deserialize<'de>>(&self) -> Option<T> {
        match &self.data {
            serde_json::Value::String(text) => serde_json::from_str(text).ok(),
            other => T::deserialize(other).ok(),
        }
    }
}

/// Opens connection `index` to the app `key` and subscribes it to `channel`.
pub async fn subscribe(
    endpoint: &Endpoint,
    index: usize,
    key: &str,
    channel: &str,
) -> anyhow::Result<Socket> {
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        subscribe_inner(endpoint, index, key, channel),
    )
    .await
    .with_context(|| format!("not subscribed within {CONNECT_TIMEOUT:?}"))?
}

async fn subscribe_inner(
    endpoint: &Endpoint,
    index: usize,
    key: &str,
    channel: &str,
) -> anyhow::Result<Socket> {
    let mut ws = endpoint
        .upgrade(
            index,
            &format!("/app/{key}?protocol=7&client=mooring-bench"),
        )
        .await?;
    expect(&mut ws, "pusher:connection_established").await?;
    let subscribe = serde_json::json!({
        "event": "pusher:subscribe",
        "data": { "channel": channel },
    });
    ws.send(Message::text(subscribe.to_string()))
        .await
        .context("sending pusher:subscribe")?;
    expect(&mut ws, "pusher_internal:subscription_succeeded").await?;
    Ok(ws)
}

/// Reads until the event `wanted`, answering pings; fails on `pusher:error` or a close.
async fn expect(ws: &mut Socket, wanted: &str) -> anyhow::Result<()> {
    while let Some(message) = ws.next().await {
        let text = match message.context("reading from the WebSocket")? {
            Message::Text(text) => text,
            Message::Close(close) => bail!("the server closed the connection: {close:?}"),
            _ => continue,
        };
        let frame = ServerFrame::parse(text.as_str())?;
        match frame.event.as_str() {
            e if e == wanted => return Ok(()),
            "pusher:ping" => ws.send(pong()).await.context("answering pusher:ping")?,
            "pusher:error" => bail!("waiting for {wanted}: pusher:error {}", frame.data),
            _ => {}
        }
    }
    bail!("the connection closed while waiting for {wanted}")
}

/// The answer to `pusher:ping`.
pub fn pong() -> Message {
    Message::text(r#"{"event":"pusher:pong","data":{}}"#)
}

/// A ping's answer while a subscriber is held (see [`crate::fleet::Held::answering`]).
pub fn held_reply(text: &str) -> anyhow::Result<Option<Message>> {
    Ok(is_ping(text).then(pong))
}

fn is_ping(text: &str) -> bool {
    text.contains(r#""event":"pusher:ping""#)
}

/// How fan-out's subscribers read a Pusher server's frames. Quotes inside `data` are escaped
/// (it is a string), so a plain search for the event's name cannot match inside it.
#[derive(Debug, Clone, Copy, Default)]
pub struct PusherWire;

impl Wire for PusherWire {
    fn classify(&self, text: &str) -> Incoming {
        if text.contains(EVENT_MARK) {
            Incoming::Event
        } else if is_ping(text) {
            Incoming::Ping(pong())
        } else {
            Incoming::Other
        }
    }

    fn decode(&self, text: &str) -> Option<Sent> {
        let tick: Tick = ServerFrame::parse(text).ok()?.data_json()?;
        Some(Sent {
            serial: tick.seq,
            micros: Some(tick.sent_us),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial_check::SerialCheck;

    fn event(seq: u64, sent_us: u64) -> String {
        let data = serde_json::to_string(&Tick { seq, sent_us }).unwrap_or_default();
        serde_json::json!({"event": EVENT, "channel": "c", "data": data}).to_string()
    }

    #[test]
    fn events_pings_and_the_rest_are_told_apart() {
        let wire = PusherWire;
        assert!(matches!(wire.classify(&event(1, 5)), Incoming::Event));
        assert!(matches!(
            wire.classify(r#"{"event":"pusher:ping","data":{}}"#),
            Incoming::Ping(_)
        ));
        // The event's name inside data is escaped, so it is not taken for an event.
        let other = serde_json::json!({
            "event": "other", "channel": "c", "data": r#"{"event":"tick"}"#
        });
        assert!(matches!(wire.classify(&other.to_string()), Incoming::Other));
    }

    #[test]
    fn an_event_gives_its_sequence_and_send_time() {
        let sent = PusherWire.decode(&event(7, 1_234));
        assert_eq!(
            sent,
            Some(Sent {
                serial: 7,
                micros: Some(1_234)
            })
        );
        // Data sent as JSON rather than a string is read too; data of another shape is not.
        let as_json = r#"{"event":"tick","channel":"c","data":{"seq":2,"sent_us":3}}"#;
        assert_eq!(PusherWire.decode(as_json).map(|s| s.serial), Some(2));
        assert_eq!(
            PusherWire.decode(r#"{"event":"tick","data":"{\"n\":1}"}"#),
            None
        );
    }

    /// The sequence numbers a subscriber reads go through the same check as Mooring's serials,
    /// so a lost or repeated event shows.
    #[test]
    fn lost_and_repeated_events_are_counted() {
        let mut check = SerialCheck::after(0);
        for seq in [1, 2, 4, 4, 5] {
            let sent = PusherWire.decode(&event(seq, 0));
            check.observe(sent.map_or(0, |s| s.serial));
        }
        assert_eq!((check.gaps, check.missing, check.duplicates), (1, 1, 1));
        let mut clean = SerialCheck::after(0);
        (1..=5).for_each(|seq| clean.observe(seq));
        assert!(clean.complete_to(5));
    }

    #[test]
    fn held_subscribers_answer_pings_only() -> anyhow::Result<()> {
        assert!(held_reply(r#"{"event":"pusher:ping","data":{}}"#)?.is_some());
        assert!(held_reply(&event(1, 1))?.is_none());
        Ok(())
    }
}

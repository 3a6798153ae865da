//! Fan-out against Mooring: one session, attached from its first event by every subscriber;
//! the publisher sends over its own realtime connection.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use mooring_protocol::realtime::ClientFrame;
use tokio::time::{Instant, MissedTickBehavior};

use super::{
    connecting, measure, start, take_back, Clock, Config, Incoming, Published, Report, Sent, Wire,
};
use crate::fleet::{self, Failures};
use crate::ws::{self, Frame, Socket};

/// Mooring's realtime protocol.
#[derive(Debug)]
struct MooringWire;

impl Wire for MooringWire {
    fn classify(&self, text: &str) -> Incoming {
        if ws::is_event(text) {
            return Incoming::Event;
        }
        if !text.starts_with(r#"{"type":"ping""#) {
            return Incoming::Other;
        }
        let nonce = Frame::parse(text).ok().and_then(|f| f.nonce).unwrap_or(0);
        match ws::encode(&ClientFrame::Pong { nonce }) {
            Ok(pong) => Incoming::Ping(pong),
            Err(_) => Incoming::Other,
        }
    }

    fn decode(&self, text: &str) -> Option<Sent> {
        let frame = Frame::parse(text).ok()?;
        Some(Sent {
            serial: frame.serial.unwrap_or(0),
            micros: frame.data.as_u64(),
        })
    }
}

/// Runs the scenario. Must be called inside a Tokio runtime.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    let progress = start(&config)?;
    let mut failures = Failures::default();
    let mut publisher = config
        .endpoint
        .connect(usize::MAX, Some("publisher"))
        .await?;
    // The session exists before anyone attaches: one event, serial 1.
    ws::send(
        &mut publisher,
        &fleet::publish(
            1,
            &config.session,
            vec![fleet::plain_event("start", 0.into())],
        ),
    )
    .await?;
    fleet::await_ack(&mut publisher, 1).await?;
    let publisher = fleet::Held::new(publisher);

    let session = config.session.clone();
    let (subscribers, sub_failures) = fleet::open_many(
        &config.endpoint,
        config.subscribers,
        config.connect_parallel,
        move |index, mut ws: Socket| {
            let session = session.clone();
            async move {
                let at = fleet::attach_until_live(&mut ws, &session, fleet::from_start(), |_| {})
                    .await?;
                Ok((index, fleet::Held::new(ws), at.live))
            }
        },
        |n| connecting(&progress, n, config.subscribers),
    )
    .await;
    failures.absorb(sub_failures);
    if subscribers.is_empty() {
        bail!("no subscriber could attach: {:?}", failures.samples);
    }
    let publisher = publisher
        .take()
        .await
        .context("the publisher, set aside while subscribers attached")?;
    let ready = take_back(subscribers, &mut failures).await;
    let session = config.session.clone();
    let rate = config.rate;
    measure(
        &config,
        "mooring",
        &progress,
        ready,
        failures,
        Arc::new(MooringWire),
        move |clock| async move {
            // A refused publish loses the count, as it always has for Mooring: the error says
            // why.
            match publish(publisher, session, rate, clock).await {
                Ok(in_window) => Published::ok(in_window),
                Err(e) => Published {
                    in_window: 0,
                    error: Some(e),
                },
            }
        },
    )
    .await
}

/// The publisher: `rate` events a second until the window ends, each carrying its send time
/// (microseconds since the base). Returns the events sent in the window.
async fn publish(mut ws: Socket, session: String, rate: u32, clock: Clock) -> anyhow::Result<u64> {
    let mut ticker = tokio::time::interval_at(clock.base, Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut req = 1;
    let mut in_window = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = Instant::now();
                if now >= clock.end {
                    return Ok(in_window);
                }
                req += 1;
                let micros = clock.micros(now);
                ws::send(&mut ws, &fleet::publish(req, &session, vec![fleet::plain_event("tick", micros.into())])).await?;
                if now >= clock.measure_from {
                    in_window += 1;
                }
            }
            frame = ws::next_frame(&mut ws) => {
                let Some(frame) = frame? else { bail!("the publisher's connection closed") };
                match frame.kind.as_str() {
                    "error" => bail!("a publish was refused: {}", frame.describe()),
                    "ping" => ws::send_pong(&mut ws, frame.nonce.unwrap_or(0)).await?,
                    _ => {}
                }
            }
        }
    }
}

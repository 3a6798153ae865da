//! Fan-out against a Pusher server (Sockudo): the scenario of [`crate::fan_out`] with the
//! subscribers on one public channel and the publisher on the signed HTTP API.
//!
//! A Pusher server takes publishes over HTTP only, so the publisher posts to
//! `/apps/{id}/batch_events`: the ticker queues each event (its data is its sequence number and
//! send time) and the sender posts whatever is queued, up to [`BATCH`] events a request, one
//! request at a time. One request at a time keeps the events in order, so a sampled
//! subscriber's gaps and duplicates mean what they mean for Mooring; batching lets the rate
//! outrun the round trip of a request. The connection is kept alive unless the server closes
//! it (Sockudo 5.2 answers every API request with `Connection: close`), then reopened. The
//! send time is taken at the tick, so latency includes any wait in the queue, as Mooring's
//! includes its socket's.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::client::Connection;
use crate::fan_out::{self, Clock, Published, Report};
use crate::fleet::{self, Held};
use crate::pusher::{self, PusherWire, Tick};
use crate::pusher_sign::Credentials;
use crate::target::Target;

/// Events a request carries at most: Pusher's limit for a batch.
pub const BATCH: usize = 10;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The scenario's shape; `session` names the channel.
    pub fan_out: fan_out::Config,
    /// The server's HTTP API (the same host and port as its WebSockets).
    pub http: Target,
    /// The app.
    pub credentials: Credentials,
    /// The kind of server, carried into the results (`sockudo`).
    pub server: String,
}

/// One event of a batch, as the HTTP API takes it.
#[derive(Debug, Serialize)]
struct BatchEvent<'a> {
    name: &'a str,
    channel: &'a str,
    data: String,
}

/// Runs the scenario. Must be called inside a Tokio runtime.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    let c = &config.fan_out;
    let progress = fan_out::start(c)?;
    let mut publisher = Publisher {
        http: config.http.clone(),
        credentials: config.credentials.clone(),
        connection: None,
    };
    // A first event before anyone subscribes: wrong credentials or a server that is not a
    // Pusher server show now, not after thousands of connections.
    publisher
        .post(&batch_body(&c.session, "start", &[])?)
        .await
        .context("the first publish")?;

    let endpoint = c.endpoint.clone();
    let key = config.credentials.key.clone();
    let channel = c.session.clone();
    let (subscribers, mut failures) = fleet::run_many(
        c.subscribers,
        c.connect_parallel,
        move |index| {
            let (endpoint, key, channel) = (endpoint.clone(), key.clone(), channel.clone());
            async move {
                let ws = pusher::subscribe(&endpoint, index, &key, &channel).await?;
                // Held until all have subscribed: a quiet connection is pinged (after 120 s by
                // default in Sockudo) and closed if nobody answers.
                Ok((index, Held::answering(ws, pusher::held_reply), 0))
            }
        },
        |n| fan_out::connecting(&progress, n, c.subscribers),
    )
    .await;
    if subscribers.is_empty() {
        bail!("no subscriber could subscribe: {:?}", failures.samples);
    }
    let ready = fan_out::take_back(subscribers, &mut failures).await;
    let channel = c.session.clone();
    let rate = c.rate;
    fan_out::measure(
        c,
        &config.server,
        &progress,
        ready,
        failures,
        Arc::new(PusherWire),
        move |clock| publish(publisher, channel, rate, clock),
    )
    .await
}

/// The publisher: queues `rate` events a second until the window ends, while a task posts
/// them. Gives the events queued in the window, and an error if a post failed or the queue was
/// not empty by the end of the drain (the server's API did not keep up with the rate).
async fn publish(publisher: Publisher, channel: String, rate: u32, clock: Clock) -> Published {
    let (queue, queued) = mpsc::unbounded_channel();
    let mut sender = tokio::spawn(send_batches(publisher, channel, queued));
    let mut ticker = tokio::time::interval_at(clock.base, Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut in_window = 0;
    for seq in 1.. {
        ticker.tick().await;
        let now = Instant::now();
        if now >= clock.end {
            break;
        }
        let tick = Tick {
            seq,
            sent_us: clock.micros(now),
        };
        if queue.send(tick).is_err() {
            // The sender stopped: its error is the publisher's.
            break;
        }
        if now >= clock.measure_from {
            in_window += 1;
        }
    }
    drop(queue);
    let error = match tokio::time::timeout(fan_out::DRAIN, &mut sender).await {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(e),
        Ok(Err(e)) => Some(anyhow::Error::new(e).context("the publishing task failed")),
        Err(_) => {
            sender.abort();
            Some(anyhow::anyhow!(
                "events were still queued for the HTTP API {:?} after the window",
                fan_out::DRAIN
            ))
        }
    };
    Published { in_window, error }
}

/// Posts the queued events in order, up to [`BATCH`] a request, until the queue closes.
async fn send_batches(
    mut publisher: Publisher,
    channel: String,
    mut queued: mpsc::UnboundedReceiver<Tick>,
) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(BATCH);
    while queued.recv_many(&mut batch, BATCH).await > 0 {
        let body = batch_body(&channel, pusher::EVENT, &batch)?;
        publisher.post(&body).await?;
        batch.clear();
    }
    Ok(())
}

/// The body of a batch: one event named `name` per tick, or one with empty data when there
/// are none.
fn batch_body(channel: &str, name: &str, ticks: &[Tick]) -> anyhow::Result<Vec<u8>> {
    let events = if ticks.is_empty() {
        vec![BatchEvent {
            name,
            channel,
            data: "{}".to_owned(),
        }]
    } else {
        ticks
            .iter()
            .map(|tick| {
                Ok(BatchEvent {
                    name,
                    channel,
                    data: serde_json::to_string(tick).context("encoding an event's data")?,
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    serde_json::to_vec(&serde_json::json!({ "batch": events })).context("encoding a batch")
}

/// The publisher's side of the HTTP API.
#[derive(Debug)]
struct Publisher {
    http: Target,
    credentials: Credentials,
    /// The open connection, if the server left it open.
    connection: Option<Connection>,
}

impl Publisher {
    /// Posts one signed batch; fails unless the server answers 2xx.
    async fn post(&mut self, body: &[u8]) -> anyhow::Result<()> {
        let path = format!("/apps/{}/batch_events", self.credentials.app_id);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs();
        let url = self.credentials.sign("POST", &path, body, now)?;
        let connection = match &mut self.connection {
            Some(open) => open,
            None => self.connection.insert(Connection::open(&self.http).await?),
        };
        let answer = connection
            .post(&url, "application/json", body.to_vec().into())
            .await
            .with_context(|| format!("POST {path}"));
        // After an error or a `Connection: close` the next request opens a new connection.
        if answer.as_ref().map_or(true, |a| a.closes) {
            self.connection = None;
        }
        let answer = answer?;
        if !answer.status.is_success() {
            bail!(
                "POST {path} answered {}: {}",
                answer.status,
                answer.body_excerpt()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_carries_each_tick_as_a_string_of_json() -> anyhow::Result<()> {
        let ticks = [
            Tick {
                seq: 1,
                sent_us: 10,
            },
            Tick {
                seq: 2,
                sent_us: 20,
            },
        ];
        let body: serde_json::Value = serde_json::from_slice(&batch_body("ch", "tick", &ticks)?)?;
        let batch = body["batch"].as_array().context("a batch array")?;
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[1]["channel"], "ch");
        assert_eq!(batch[1]["name"], "tick");
        let data: Tick = serde_json::from_str(batch[1]["data"].as_str().context("string data")?)?;
        assert_eq!(data, ticks[1]);
        Ok(())
    }

    #[test]
    fn the_first_publish_is_one_event_with_empty_data() -> anyhow::Result<()> {
        let body: serde_json::Value = serde_json::from_slice(&batch_body("ch", "start", &[])?)?;
        assert_eq!(body["batch"][0]["name"], "start");
        assert_eq!(body["batch"][0]["data"], "{}");
        Ok(())
    }
}

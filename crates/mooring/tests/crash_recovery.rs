//! Crash recovery: SIGKILL the server while 16 writers append, restart it on the same data
//! directory, and check that every acknowledged append is still there, once, in order, byte for
//! byte, at the offset it was acknowledged with. Repeated for many cycles over one growing history.
//!
//! Replay a failure with `MOORING_CRASH_SEED=<printed seed>`; `MOORING_CRASH_CYCLES` and
//! `MOORING_CRASH_ENGINE` (`embedded` by default) change the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use mooring_testkit::observe::{acknowledged_offsets, observe};
use mooring_testkit::rng::{seed_from_env, SeededRng};
use mooring_testkit::writer::{run_writer, WriterPlan};
use mooring_testkit::{
    check, payload, History, MooringProcess, Outcome, ServerConfig, StreamClient,
};

const WRITERS: u32 = 16;
const DEFAULT_CYCLES: u64 = 25;
/// The kill lands this long after the writers start, in milliseconds.
const KILL_AFTER_MS: (u64, u64) = (20, 300);
/// Older acknowledged offsets re-read per check, on top of every offset from the last cycle.
const OLD_OFFSET_SAMPLE: usize = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Writers 0–5 share one stream, 6–11 another, and 12–15 each have their own, so interleaving
/// between writers and single-writer logs are both exercised.
fn stream_of(writer: u32) -> String {
    match writer {
        0..=5 => "crash-shared-a".to_owned(),
        6..=11 => "crash-shared-b".to_owned(),
        w => format!("crash-private-{w}"),
    }
}

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Default)]
struct Totals {
    not_delivered: u64,
    probes: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() -> anyhow::Result<()> {
    let seed = seed_from_env("MOORING_CRASH_SEED");
    let cycles: u64 = env_or("MOORING_CRASH_CYCLES", DEFAULT_CYCLES);
    let engine: String = env_or("MOORING_CRASH_ENGINE", "embedded".to_owned());
    println!(
        "crash_recovery: seed {seed} (replay with MOORING_CRASH_SEED={seed}), engine {engine}"
    );
    let mut rng = SeededRng::new(seed);
    let started = Instant::now();

    let data = tempfile::tempdir().context("creating the data directory")?;
    let config = ServerConfig::new(env!("CARGO_BIN_EXE_mooring"), data.path()).engine(&engine);
    let mut server = MooringProcess::start(config).await?;
    let mut client = StreamClient::new(&server.base_url(), REQUEST_TIMEOUT)?;
    for writer in 0..WRITERS {
        client.create_json_stream(&stream_of(writer)).await?;
    }

    let mut history = History::new();
    let mut next_seq = vec![0u64; WRITERS as usize];
    let mut totals = Totals::default();
    for cycle in 1..=cycles {
        let cycle_start = history.attempts().len();
        let kill_after = rng.between(KILL_AFTER_MS.0, KILL_AFTER_MS.1);
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let plan = WriterPlan {
                    writer,
                    stream: stream_of(writer),
                    first_seq: next_seq[writer as usize],
                    max_appends: 10_000,
                    max_pad: 256,
                };
                tokio::spawn(run_writer(client.clone(), plan, rng.fork()))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        server.kill()?;
        for (writer, handle) in writers.into_iter().enumerate() {
            let run = handle.await.context("a writer task panicked")?;
            next_seq[writer] = run.next_seq;
            totals.not_delivered += run.not_delivered;
            history.extend(run.history);
        }

        server.restart().await?;
        client = StreamClient::new(&server.base_url(), REQUEST_TIMEOUT)?;
        let probes = offsets_to_probe(&history, cycle_start, &mut rng);
        let observation = observe(&client, history.streams(), &probes).await?;
        let report = check(&history, &observation, payload::identify);
        totals.probes += report.probes_checked;
        ensure!(
            report.is_ok(),
            "cycle {cycle} (killed after {kill_after} ms), seed {seed}: {report}"
        );
        // Nothing is in flight after a restart, so unknown outcomes are final from here on.
        history.settle_unknowns(|stream, id| report.is_present(stream, id));
    }

    let acknowledged = history.count(|o| matches!(o, Outcome::Acknowledged { .. }));
    let recovered = history.count(|o| *o == Outcome::Recovered);
    let discarded = history.count(|o| *o == Outcome::Discarded);
    println!(
        "crash_recovery: {cycles} cycles, {acknowledged} acknowledged appends, {} unknown-outcome \
         appends ({recovered} recovered, {discarded} discarded), {} refused, {} offset probes, \
         0 violations, {:.1} s",
        recovered + discarded,
        totals.not_delivered,
        totals.probes,
        started.elapsed().as_secs_f64()
    );
    // A server that acknowledged nothing would pass every check; make sure the test tested.
    ensure!(
        acknowledged as u64 >= cycles,
        "only {acknowledged} acknowledged appends in {cycles} cycles: the writers barely ran"
    );
    Ok(())
}

/// Every acknowledged offset from the cycle just ended, plus a seeded sample of older ones, so
/// old offsets keep being checked without re-reading thousands of them every cycle.
fn offsets_to_probe(
    history: &History,
    cycle_start: usize,
    rng: &mut SeededRng,
) -> BTreeMap<String, Vec<String>> {
    let (older, newest) = history.attempts().split_at(cycle_start);
    let mut picked: Vec<_> = newest.iter().collect();
    if !older.is_empty() {
        for _ in 0..OLD_OFFSET_SAMPLE {
            let at = rng.between(0, older.len() as u64 - 1) as usize;
            picked.extend(older.get(at));
        }
    }
    let mut by_stream = acknowledged_offsets(picked);
    for offsets in by_stream.values_mut() {
        offsets.sort();
        offsets.dedup();
    }
    by_stream
}

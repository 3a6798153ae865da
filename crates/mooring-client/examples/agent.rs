//! An example agent: it enters the session's presence, starts a run, creates its answer and
//! appends a token every 50 ms until the run is cancelled or 200 tokens are out, then ends
//! the run. Steers are printed as they arrive.
//!
//! ```text
//! cargo run -p mooring-client --example agent -- ws://127.0.0.1:7420/v1/ws chat:42 run-1
//! ```
//!
//! Cancel it from anywhere, for example over REST:
//!
//! ```text
//! curl -X POST localhost:7420/v1/sessions/chat:42/cancel -d '{"run_id":"run-1"}'
//! ```

use std::process::ExitCode;
use std::time::Duration;

use mooring_client::{CancelReason, Client, ClientOptions, Role, RunStatus};

/// Tokens in a whole answer.
pub(crate) const TOKENS: usize = 200;
/// Time between two tokens.
pub(crate) const EVERY: Duration = Duration::from_millis(50);

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Runs the agent once; returns how its run ended.
pub(crate) async fn run_agent(
    url: &str,
    session: &str,
    run_id: &str,
) -> Result<RunStatus, Failure> {
    let client = Client::connect(ClientOptions::new(url).client_id("example-agent")).await?;
    let instance = format!("agent-{}", std::process::id());
    // In presence, the client enters again after a reconnect, which also keeps the run
    // bound to this agent while it is quiet.
    client
        .enter(
            session,
            Role::Agent,
            instance.as_str(),
            serde_json::json!({ "run_id": run_id }),
        )
        .await?;
    let mut run = client.start_run(session, run_id, None).await?;
    run.create_answer("response").await?;
    eprintln!("run {run_id} started at serial {}", run.serial());

    let mut tick = tokio::time::interval(EVERY);
    let mut stop = None;
    let mut sent = 0;
    while sent < TOKENS {
        tokio::select! {
            cancel = run.cancelled() => {
                stop = Some(cancel);
                break;
            }
            Some(steer) = run.next_steer() => {
                eprintln!("steered by {:?}: {}", steer.by, steer.data);
            }
            _ = tick.tick() => {
                run.append(format!("token{sent} ")).await?;
                sent += 1;
            }
        }
    }
    let status = match stop {
        None => {
            run.end(RunStatus::Completed, None).await?;
            RunStatus::Completed
        }
        Some(cancel) => match cancel.reason {
            // Someone else already ended the run (the server, agent_lost): nothing to say.
            CancelReason::Ended(status) => status,
            CancelReason::ClientClosed => return Err("the client closed".into()),
            _ => {
                let reason = format!(
                    "cancelled by {} after {sent} tokens",
                    cancel.by.as_deref().unwrap_or("someone")
                );
                run.end(RunStatus::Cancelled, Some(reason)).await?;
                RunStatus::Cancelled
            }
        },
    };
    client.leave(session, instance).await?;
    client.close().await;
    Ok(status)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, session, run_id] = args.as_slice() else {
        eprintln!("usage: agent <ws-url> <session> <run-id>");
        return ExitCode::from(2);
    };
    match run_agent(url, session, run_id).await {
        Ok(status) => {
            println!("run {run_id}: {status:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agent failed: {e}");
            ExitCode::FAILURE
        }
    }
}

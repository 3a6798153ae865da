// The agent's side in a few lines: start a run, pipe any async iterable of chunks into one
// message per response, and end the run with the status that says what happened.

import type { MooringClient } from "./client.js";
import type { Json } from "./protocol.js";
import type { Cancel, RunHandle, RunStatus } from "./runs.js";

/**
 * A piece of an answer: text (appended to the answer message), `{ text }` likewise, or a
 * structured event of the run (`{ event: "tool-call", data }`), published in order between
 * the appends.
 */
export type AgentChunk = string | { text: string } | { event: string; data?: Json };

/** How a piped answer ended. */
export interface PipeResult {
  status: Extract<RunStatus, "completed" | "cancelled" | "failed">;
  /** Serial of the answer message. */
  answer: number;
  /** Set when cancelled: who asked, and how. */
  cancel?: Cancel;
  /** Set when failed: what the source threw. */
  error?: unknown;
}

/** Appends in flight at once before the pipe waits for the oldest: keeps memory bounded, keeps order. */
export const MAX_APPENDS_IN_FLIGHT = 256;

/**
 * Pipes `source` into the run's answer (created first, named `name`). Stops at once when the
 * run's signal aborts, even if the source ignores it. Does not end the run: {@link respond}
 * does both.
 */
export async function pipeAnswer(
  run: RunHandle,
  source: AsyncIterable<AgentChunk> | Iterable<AgentChunk>,
  name = "response",
): Promise<PipeResult> {
  const answer = await run.createAnswer(name);
  const signal = run.signal;
  const inFlight: Promise<number>[] = [];
  const iterator =
    Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : toAsync(source as Iterable<AgentChunk>);
  const aborted = new Promise<"aborted">((resolve) => {
    if (signal.aborted) resolve("aborted");
    else signal.addEventListener("abort", () => resolve("aborted"), { once: true });
  });
  const cancelled = (): PipeResult => {
    // Let the source's own cleanup run, without waiting for a source that ignores the signal.
    void Promise.resolve(iterator.return?.()).catch(() => {});
    // Appends still in flight may fail once the agent closes its client after the cancel;
    // nothing waits for them any more, so observe them here, or Node would end the process on
    // an unhandled rejection.
    void Promise.allSettled(inFlight);
    return { status: "cancelled", answer, cancel: signal.reason as Cancel };
  };
  try {
    for (;;) {
      const next = await Promise.race([iterator.next(), aborted]);
      if (next === "aborted") return cancelled();
      if (next.done === true) break;
      const chunk = next.value;
      if (typeof chunk === "string" || "text" in chunk) {
        const text = typeof chunk === "string" ? chunk : chunk.text;
        if (text !== "") inFlight.push(run.append(text));
      } else {
        inFlight.push(run.event(chunk.event, chunk.data ?? null));
      }
      if (inFlight.length >= MAX_APPENDS_IN_FLIGHT) await inFlight.shift();
    }
    await Promise.all(inFlight);
    return { status: "completed", answer };
  } catch (error) {
    // A model call aborted by our signal throws an AbortError: that is a cancel, not a failure.
    if (signal.aborted) return cancelled();
    await Promise.allSettled(inFlight);
    return { status: "failed", answer, error };
  }
}

async function* toAsync<T>(items: Iterable<T>): AsyncGenerator<T> {
  yield* items;
}

/** Options of {@link respond}. */
export interface RespondOptions {
  /** The run's id; random if absent. */
  runId?: string;
  /** Serial of the input this run answers. */
  input?: number;
  /** Name of the answer message (default `response`). */
  name?: string;
}

/**
 * Starts a run in `session`, pipes what `produce` returns into its answer, and ends the run:
 * `completed`, `cancelled` (the run's signal aborted: `produce` should hand it to the model
 * call), or `failed` (the source threw; the reason is its message). A run ended by someone
 * else (the server's `agent_lost`) is not ended again.
 *
 * ```ts
 * await respond(client, "chat:42", (run) => streamFromModel(prompt, run.signal), { input: 12 });
 * ```
 */
export async function respond(
  client: MooringClient,
  session: string,
  produce: (run: RunHandle) => AsyncIterable<AgentChunk> | Iterable<AgentChunk>,
  options: RespondOptions = {},
): Promise<PipeResult & { runId: string }> {
  const run = await client.startRun(session, options);
  try {
    let source: AsyncIterable<AgentChunk> | Iterable<AgentChunk>;
    try {
      source = produce(run);
    } catch (error) {
      source = failing(error);
    }
    const result = await pipeAnswer(run, source, options.name);
    if (result.status === "cancelled" && result.cancel?.reason === "ended") return { ...result, runId: run.runId };
    await run.end(result.status, reasonOf(result));
    return { ...result, runId: run.runId };
  } finally {
    run.close();
  }
}

/** A source that fails at once: `produce` threw before returning one. */
async function* failing(error: unknown): AsyncGenerator<AgentChunk> {
  yield* [];
  throw error;
}

function reasonOf(result: PipeResult): string | undefined {
  if (result.status === "cancelled") {
    const by = result.cancel?.by;
    return by === undefined ? "cancelled" : `cancelled by ${by}`;
  }
  if (result.status === "failed") {
    const e = result.error;
    return e instanceof Error ? e.message : String(e);
  }
  return undefined;
}

// The agent's side: a UI message stream (`streamText(...).toUIMessageStream()`, or any
// stream of UI message chunks) piped into a session as one message per response, built on
// `@mooring/client`'s runs and `pipeAnswer`. A cancel aborts the run's signal (hand it to the
// model call as `abortSignal`) and stops reading the stream at once.

import {
  pipeAnswer,
  type AgentChunk,
  type Json,
  type MooringClient,
  type PipeResult,
  type RespondOptions,
  type RunHandle,
} from "@mooring/client";
import type { UIMessageChunk } from "ai";

import { ANSWER_NAME, TRANSIENT_EVENT, answerMessageId, encodeChunk, isTerminal } from "./format.js";

/** What an agent hands over: an async iterable or a web ReadableStream of UI message chunks. */
export type UIChunkSource = AsyncIterable<UIMessageChunk> | ReadableStream<UIMessageChunk>;

/**
 * Pipes `source` into the run's answer, one chunk per line, then writes how it ended: an
 * `abort` chunk when cancelled, an `error` chunk when the source failed, a `finish` chunk if
 * the source ended without one. So the stored answer says by itself how it ended. Does not
 * end the run: {@link respondWithUIMessageStream} does both.
 */
export async function pipeUIMessageStream(run: RunHandle, source: UIChunkSource): Promise<PipeResult> {
  const seen = { terminal: false };
  const result = await pipeAnswer(run, toLines(run, iterate(source), seen), ANSWER_NAME);
  if (seen.terminal) return result;
  let last: UIMessageChunk | undefined;
  if (result.status === "cancelled" && result.cancel?.reason !== "ended") {
    const by = result.cancel?.by;
    last = { type: "abort", reason: by === undefined ? "cancelled" : `cancelled by ${by}` };
  } else if (result.status === "failed") {
    last = { type: "error", errorText: messageOf(result.error) };
  } else if (result.status === "completed") {
    last = { type: "finish" };
  }
  if (last !== undefined) await run.append(encodeChunk(last)).catch(() => {});
  return result;
}

/**
 * Starts a run in `session`, pipes the UI message stream `produce` returns into its answer,
 * and ends the run `completed`, `cancelled` or `failed`.
 *
 * ```ts
 * await respondWithUIMessageStream(client, "chat:42", (run) =>
 *   streamText({ model, messages, abortSignal: run.signal }).toUIMessageStream(), { input: 12 });
 * ```
 */
export async function respondWithUIMessageStream(
  client: MooringClient,
  session: string,
  produce: (run: RunHandle) => UIChunkSource | Promise<UIChunkSource>,
  options: Omit<RespondOptions, "name"> = {},
): Promise<PipeResult & { runId: string }> {
  const run = await client.startRun(session, options);
  try {
    const result = await pipeUIMessageStream(
      run,
      deferred(() => produce(run)),
    );
    if (result.status === "cancelled" && result.cancel?.reason === "ended") return { ...result, runId: run.runId };
    await run.end(result.status, reasonOf(result));
    return { ...result, runId: run.runId };
  } finally {
    run.close();
  }
}

/** The lines of the answer: a `start` naming the message first, transient data as run events. */
async function* toLines(
  run: RunHandle,
  chunks: AsyncIterable<UIMessageChunk>,
  seen: { terminal: boolean },
): AsyncGenerator<AgentChunk> {
  let started = false;
  for await (const chunk of chunks) {
    if (!started) {
      started = true;
      // Every client and every later hydration must give the answer the same id.
      const id = answerMessageId(run.answer ?? run.serial);
      if (chunk.type !== "start") yield encodeChunk({ type: "start", messageId: id });
      else if (chunk.messageId === undefined) {
        yield encodeChunk({ ...chunk, messageId: id });
        continue;
      }
    }
    if (chunk.type.startsWith("data-") && (chunk as { transient?: boolean }).transient === true) {
      yield { event: TRANSIENT_EVENT, data: chunk as unknown as Json };
      continue;
    }
    if (isTerminal(chunk)) seen.terminal = true;
    yield encodeChunk(chunk);
  }
}

/** Reads a ReadableStream or an async iterable; returning early cancels the stream. */
async function* iterate(source: UIChunkSource | Promise<UIChunkSource>): AsyncGenerator<UIMessageChunk> {
  const resolved = await source;
  if (!("getReader" in resolved)) {
    yield* resolved;
    return;
  }
  const reader = resolved.getReader();
  try {
    for (;;) {
      const next = await reader.read();
      if (next.done) return;
      yield next.value;
    }
  } finally {
    // A cancelled run stops the stream: its producer (the model call) hears of it.
    await reader.cancel().catch(() => {});
  }
}

/** Calls `produce` only when the pipe first reads, so a throw is the run's failure. */
async function* deferred(produce: () => UIChunkSource | Promise<UIChunkSource>): AsyncGenerator<UIMessageChunk> {
  yield* iterate(produce());
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function reasonOf(result: PipeResult): string | undefined {
  if (result.status === "cancelled") {
    const by = result.cancel?.by;
    return by === undefined ? "cancelled" : `cancelled by ${by}`;
  }
  return result.status === "failed" ? messageOf(result.error) : undefined;
}

// The UI message chunks of one run, as a ReadableStream for the AI SDK's Chat: the answer's
// lines so far, then each new line live, until the run ends. A `stop()` (the abort signal)
// publishes a cancel of the run: a real stop, seen by the agent and by every device.

import type { UIMessageChunk } from "ai";

import type { ChatSession, RunState } from "./chat-session.js";
import { MooringChatError } from "./errors.js";
import { ANSWER_NAME, LineReader, TEXT_ANSWER_NAME, TRANSIENT_EVENT, answerMessageId, isTerminal } from "./format.js";

/** Which run to stream: the one answering an input, or a known run. */
export type RunTarget = { input: number } | { runId: string };

/** Turns a plain-text answer into chunks: a text part that grows. */
class TextAnswer {
  #length = 0;
  #started = false;

  next(serial: number, text: string): UIMessageChunk[] {
    const out: UIMessageChunk[] = [];
    if (!this.#started) {
      this.#started = true;
      out.push({ type: "start", messageId: answerMessageId(serial) }, { type: "text-start", id: "text" });
    }
    if (text.length > this.#length) out.push({ type: "text-delta", id: "text", delta: text.slice(this.#length) });
    this.#length = Math.max(this.#length, text.length);
    return out;
  }

  end(): UIMessageChunk[] {
    return this.#started ? [{ type: "text-end", id: "text" }] : [];
  }
}

/** The chunk that says how a run ended, when its answer did not say it itself. */
function endChunk(end: NonNullable<RunState["end"]>): UIMessageChunk {
  if (end.status === "completed") return { type: "finish" };
  if (end.status === "cancelled") return { type: "abort", reason: end.reason ?? "cancelled" };
  const why = end.status === "agent_lost" ? "the agent was lost" : "the run failed";
  return { type: "error", errorText: end.reason === undefined ? why : `${why}: ${end.reason}` };
}

/**
 * Streams the run `target` names in `session`. `cancel` is called (once) when `signal`
 * aborts, with the run's id as soon as it is known.
 */
export function runStream(
  session: ChatSession,
  target: RunTarget,
  signal: AbortSignal | undefined,
  cancel: (runId: string) => void,
): ReadableStream<UIMessageChunk> {
  let stop: (() => void) | undefined;
  return new ReadableStream<UIMessageChunk>({
    start(controller) {
      const lines = new LineReader();
      const text = new TextAnswer();
      let terminal = false;
      let closed = false;
      let cancelled = false;
      const find = (): RunState | undefined =>
        "input" in target ? session.runFor(target.input) : session.runs.get(target.runId);
      const emit = (chunk: UIMessageChunk): void => {
        if (closed || terminal) return;
        if (isTerminal(chunk)) terminal = true;
        controller.enqueue(chunk);
      };
      const finish = (): void => {
        if (closed) return;
        closed = true;
        unlisten();
        unlistenEnd();
        signal?.removeEventListener("abort", onAbort);
        controller.close();
      };
      const requestCancel = (): void => {
        if (cancelled) return;
        const run = find();
        if (run === undefined) {
          // Stopped before the run started: cancel it as soon as it is known.
          const waiting = session.listen(() => {
            if (find() === undefined) return;
            waiting();
            requestCancel();
          });
          return;
        }
        cancelled = true;
        if (run.end === undefined) cancel(run.runId);
      };
      const pump = (): void => {
        if (closed) return;
        const run = find();
        if (run === undefined) return;
        const answer = run.answer === undefined ? undefined : session.message(run.answer);
        if (answer !== undefined && typeof answer.data === "string") {
          if (answer.name === ANSWER_NAME) for (const chunk of lines.next(answer.data)) emit(chunk);
          else if (answer.name === TEXT_ANSWER_NAME)
            for (const chunk of text.next(answer.serial, answer.data)) emit(chunk);
        }
        if (run.end === undefined) return;
        if (answer === undefined && run.answer === undefined && run.end.status !== "cancelled") {
          controller.error(
            new MooringChatError("run_without_answer", `run ${run.runId} ended ${run.end.status} without an answer`),
          );
          closed = true;
          unlisten();
          unlistenEnd();
          return;
        }
        for (const chunk of text.end()) emit(chunk);
        emit(endChunk(run.end));
        finish();
      };
      const onAbort = (): void => {
        // Stop reading at once; the cancel reaches the agent through the session.
        requestCancel();
        finish();
      };
      const unlisten = session.listen((event) => {
        if (event.action === "event" && event.name === TRANSIENT_EVENT) {
          const run = find();
          if (run !== undefined && event.extras?.["run_id"] === run.runId) emit(event.data as UIMessageChunk);
          return;
        }
        pump();
      });
      // A lost connection is not the run's end: the stream fails, and the run goes on.
      const unlistenEnd = session.onEnd((reason) => {
        if (closed) return;
        closed = true;
        unlisten();
        signal?.removeEventListener("abort", onAbort);
        const why = reason.kind === "client_closed" ? "the client was closed" : "the connection was lost";
        controller.error(new MooringChatError("disconnected", `${why}; the run goes on and can be resumed`));
      });
      stop = () => {
        closed = true;
        unlisten();
        unlistenEnd();
        signal?.removeEventListener("abort", onAbort);
      };
      if (signal?.aborted === true) onAbort();
      else signal?.addEventListener("abort", onAbort, { once: true });
      pump();
    },
    cancel() {
      stop?.();
    },
  });
}

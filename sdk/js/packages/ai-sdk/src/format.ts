// How a chat lives in a session (docs/ai-sdk.md): the names of its messages and the line
// format of an answer. No dependency on `ai` at run time, so an agent can use it alone.

import type { UIMessageChunk } from "ai";

/** A user's message: `data` is the whole UI message (`{ id, role, parts, metadata? }`). */
export const INPUT_NAME = "user-input";
/** An answer streamed as UI message chunks: `data` is one JSON chunk per line. */
export const ANSWER_NAME = "ui-response";
/** A plain-text answer (an agent that streams text, such as `respond` from `@mooring/client`). */
export const TEXT_ANSWER_NAME = "response";
/** A transient data chunk: an event of the run, kept in the log but never in the message. */
export const TRANSIENT_EVENT = "ui-transient";

/** The id of the assistant message answering as message `serial`, when its stream names none. */
export function answerMessageId(serial: number): string {
  return `mooring-${serial}`;
}

/** One chunk as a line of an answer. */
export function encodeChunk(chunk: UIMessageChunk): string {
  return `${JSON.stringify(chunk)}\n`;
}

/** A chunk that ends an answer: nothing follows it. */
export function isTerminal(chunk: { type: string }): boolean {
  return chunk.type === "finish" || chunk.type === "abort" || chunk.type === "error";
}

/**
 * Reads the whole lines of an answer's text as it grows. Appends always hold whole lines,
 * but a reader may look between two appends' rollup, so an unfinished line waits.
 */
export class LineReader {
  #offset = 0;

  /** The chunks of the lines completed since the last call. */
  next(text: string): UIMessageChunk[] {
    if (text.length < this.#offset) this.#offset = 0; // replaced (message.update): read it again
    const end = text.lastIndexOf("\n") + 1;
    if (end <= this.#offset) return [];
    const lines = text.slice(this.#offset, end).split("\n");
    this.#offset = end;
    const chunks: UIMessageChunk[] = [];
    for (const line of lines) {
      if (line === "") continue;
      try {
        const chunk = JSON.parse(line) as unknown;
        if (typeof chunk === "object" && chunk !== null && typeof (chunk as { type?: unknown }).type === "string") {
          chunks.push(chunk as UIMessageChunk);
        }
      } catch {
        // Not a chunk: a line written by something else is skipped, never fatal to a reader.
      }
    }
    return chunks;
  }
}

/** Every chunk of a whole answer. */
export function decodeAnswer(text: string): UIMessageChunk[] {
  return new LineReader().next(text.endsWith("\n") ? text : `${text}\n`);
}

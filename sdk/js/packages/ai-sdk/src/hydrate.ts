// A chat's history from its session: each message of the materialized view becomes a UI
// message. An answer's chunks are folded by the AI SDK's own reader, so a hydrated answer is
// what a client that watched it stream built.

import type { MessageView } from "@mooring/client";
import { readUIMessageStream, type UIMessage, type UIMessageChunk } from "ai";

import { ANSWER_NAME, INPUT_NAME, TEXT_ANSWER_NAME, answerMessageId, decodeAnswer } from "./format.js";

function isUIMessage(data: unknown): data is UIMessage {
  return (
    typeof data === "object" &&
    data !== null &&
    typeof (data as { id?: unknown }).id === "string" &&
    Array.isArray((data as { parts?: unknown }).parts)
  );
}

/** Folds an answer's chunks into the message they build. */
export async function foldChunks(chunks: UIMessageChunk[]): Promise<UIMessage | undefined> {
  const stream = new ReadableStream<UIMessageChunk>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
  let last: UIMessage | undefined;
  // An `error` chunk is part of the story, not a failure to read it.
  for await (const message of readUIMessageStream({ stream, onError: () => {} })) last = message;
  return last;
}

/** One message of the session as a UI message, or nothing if it is not part of the chat. */
export async function toUIMessage(view: MessageView): Promise<UIMessage | undefined> {
  if (view.name === INPUT_NAME) {
    if (isUIMessage(view.data)) return { ...(view.data as UIMessage), role: "user" };
    if (typeof view.data === "string") {
      return { id: answerMessageId(view.serial), role: "user", parts: [{ type: "text", text: view.data }] };
    }
    return undefined;
  }
  if (typeof view.data !== "string") return undefined;
  if (view.name === ANSWER_NAME) return foldChunks(decodeAnswer(view.data));
  if (view.name === TEXT_ANSWER_NAME) {
    return {
      id: answerMessageId(view.serial),
      role: "assistant",
      parts: [{ type: "text", text: view.data, state: "done" }],
    };
  }
  return undefined;
}

/** The chat's messages, in the session's order. */
export async function hydrate<UI extends UIMessage>(views: MessageView[]): Promise<UI[]> {
  const out: UI[] = [];
  for (const view of views) {
    const message = await toUIMessage(view);
    if (message !== undefined) out.push(message as UI);
  }
  return out;
}

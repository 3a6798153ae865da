// UI message chunks (the format of an answer in a session, docs/ai-sdk.md) as TanStack AI's
// stream chunks (AG-UI events). A chunk with no AG-UI counterpart is passed on as CUSTOM.

import type { StreamChunk } from "./types.js";
import type { UIMessageChunk } from "ai";

/** Where a run's events belong. */
export interface RunContext {
  threadId: string;
  runId: string;
  /** The assistant message the answer builds (from its `start` chunk). */
  messageId: string;
}

/** AG-UI's event types are string enums whose values are their names. */
function event(type: string, fields: Record<string, unknown>): StreamChunk {
  return { type, timestamp: Date.now(), ...fields } as unknown as StreamChunk;
}

/** The events of one chunk; `run.messageId` follows the answer's `start`. */
export function toStreamChunks(chunk: UIMessageChunk, run: RunContext): StreamChunk[] {
  const { threadId, runId } = run;
  const c = chunk as Record<string, unknown> & { type: string };
  switch (chunk.type) {
    case "start":
      if (chunk.messageId !== undefined) run.messageId = chunk.messageId;
      return [event("RUN_STARTED", { threadId, runId })];
    case "text-start":
      return [event("TEXT_MESSAGE_START", { messageId: run.messageId, role: "assistant" })];
    case "text-delta":
      return [event("TEXT_MESSAGE_CONTENT", { messageId: run.messageId, delta: chunk.delta })];
    case "text-end":
      return [event("TEXT_MESSAGE_END", { messageId: run.messageId })];
    case "reasoning-start":
      return [event("REASONING_MESSAGE_START", { messageId: `${run.messageId}-${chunk.id}`, role: "reasoning" })];
    case "reasoning-delta":
      return [event("REASONING_MESSAGE_CONTENT", { messageId: `${run.messageId}-${chunk.id}`, delta: chunk.delta })];
    case "reasoning-end":
      return [event("REASONING_MESSAGE_END", { messageId: `${run.messageId}-${chunk.id}` })];
    case "tool-input-start":
      return [
        event("TOOL_CALL_START", {
          toolCallId: chunk.toolCallId,
          toolCallName: chunk.toolName,
          toolName: chunk.toolName,
          parentMessageId: run.messageId,
        }),
      ];
    case "tool-input-delta":
      return [event("TOOL_CALL_ARGS", { toolCallId: chunk.toolCallId, delta: chunk.inputTextDelta })];
    case "tool-input-available":
      return [event("TOOL_CALL_END", { toolCallId: chunk.toolCallId, input: chunk.input })];
    case "tool-output-available":
      return [
        event("TOOL_CALL_RESULT", {
          messageId: `${run.messageId}-${chunk.toolCallId}`,
          toolCallId: chunk.toolCallId,
          content: JSON.stringify(chunk.output),
          role: "tool",
        }),
      ];
    case "finish":
      return [event("RUN_FINISHED", { threadId, runId, finishReason: finishReason(chunk.finishReason) })];
    case "abort":
      // A cancelled run ends, it does not fail: every device shows the partial answer.
      return [
        event("RUN_FINISHED", { threadId, runId, finishReason: null, metadata: { mooring: { status: "cancelled" } } }),
      ];
    case "error":
      return [event("RUN_ERROR", { threadId, runId, message: chunk.errorText, error: { message: chunk.errorText } })];
    default:
      return [event("CUSTOM", { name: c.type, value: c })];
  }
}

function finishReason(reason: string | undefined): string | null {
  if (reason === "stop" || reason === "length" || reason === "content_filter") return reason;
  return reason === "tool-calls" ? "tool_calls" : null;
}

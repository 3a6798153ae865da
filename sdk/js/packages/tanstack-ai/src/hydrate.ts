// A chat's history from its session as TanStack AI's UI messages: user inputs and answers
// (their UI message chunks folded into text, thinking and tool-call parts).

import type { MessageView } from "@mooring/client";
import { ANSWER_NAME, INPUT_NAME, TEXT_ANSWER_NAME, answerMessageId, decodeAnswer } from "@mooring/ai-sdk/session";
import type { UIMessage } from "@tanstack/ai-client";

type Part = UIMessage["parts"][number];

function inputText(data: unknown): string | undefined {
  if (typeof data === "string") return data;
  const parts = (data as { parts?: { type?: string; text?: string; content?: string }[] } | null)?.parts;
  if (!Array.isArray(parts)) return undefined;
  return parts
    .filter((p) => p.type === "text")
    .map((p) => p.text ?? p.content ?? "")
    .join("");
}

/** Folds an answer's chunks into parts. */
function answerParts(text: string): { id: string | undefined; parts: Part[] } {
  let id: string | undefined;
  const parts: Part[] = [];
  const texts = new Map<string, { type: "text"; content: string }>();
  const thoughts = new Map<string, { type: "thinking"; content: string }>();
  const tools = new Map<string, Part & { type: "tool-call" }>();
  for (const chunk of decodeAnswer(text)) {
    if (chunk.type === "start" && chunk.messageId !== undefined) id = chunk.messageId;
    else if (chunk.type === "text-start") {
      const part = { type: "text" as const, content: "" };
      texts.set(chunk.id, part);
      parts.push(part);
    } else if (chunk.type === "text-delta") {
      const part = texts.get(chunk.id);
      if (part !== undefined) part.content += chunk.delta;
    } else if (chunk.type === "reasoning-start") {
      const part = { type: "thinking" as const, content: "" };
      thoughts.set(chunk.id, part);
      parts.push(part);
    } else if (chunk.type === "reasoning-delta") {
      const part = thoughts.get(chunk.id);
      if (part !== undefined) part.content += chunk.delta;
    } else if (chunk.type === "tool-input-available") {
      const part = {
        type: "tool-call" as const,
        id: chunk.toolCallId,
        name: chunk.toolName,
        arguments: JSON.stringify(chunk.input),
        input: chunk.input,
        state: "input-complete" as const,
      };
      tools.set(chunk.toolCallId, part);
      parts.push(part);
    } else if (chunk.type === "tool-output-available") {
      parts.push({
        type: "tool-result",
        toolCallId: chunk.toolCallId,
        content: JSON.stringify(chunk.output),
        state: "complete",
      } as Part);
    }
  }
  return { id, parts };
}

/** One message of the session as a TanStack UI message, or nothing if it is not part of the chat. */
export function toUIMessage(view: MessageView): UIMessage | undefined {
  const createdAt = new Date(view.ts);
  if (view.name === INPUT_NAME) {
    const content = inputText(view.data);
    if (content === undefined) return undefined;
    const id = (view.data as { id?: unknown } | null)?.id;
    return {
      id: typeof id === "string" ? id : answerMessageId(view.serial),
      role: "user",
      parts: [{ type: "text", content }],
      createdAt,
    };
  }
  if (typeof view.data !== "string") return undefined;
  if (view.name === TEXT_ANSWER_NAME) {
    return {
      id: answerMessageId(view.serial),
      role: "assistant",
      parts: [{ type: "text", content: view.data }],
      createdAt,
    };
  }
  if (view.name !== ANSWER_NAME) return undefined;
  const { id, parts } = answerParts(view.data);
  return { id: id ?? answerMessageId(view.serial), role: "assistant", parts, createdAt };
}

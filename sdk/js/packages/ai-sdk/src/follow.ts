// Keeps an AI SDK Chat in step with its session, so every tab and device shows the same
// conversation live: the history on start, another device's messages as they are sent,
// their answers streamed through the Chat itself (`resumeStream`), and, once a run ends,
// the chat's messages set to the session's, so every client ends with the same record.

import type { AbstractChat, UIMessage } from "ai";

import type { ChatChange, MooringChatTransport } from "./transport.js";

/** How often to look whether the Chat has finished its request, before changing its messages. */
const SETTLE_POLL_MS = 20;

/** A chat followed by {@link followChat}. */
export interface FollowedChat {
  /** Resolves once the history is in the Chat (and an active run, if any, is streaming). */
  ready: Promise<void>;
  /** Stops following. */
  stop(): void;
}

function busy(chat: { status: string }): boolean {
  return chat.status === "submitted" || chat.status === "streaming";
}

/**
 * Follows `chat`'s session through `transport` (the one the Chat was built with). Changes
 * are applied in order, each once the Chat is not in the middle of a request.
 */
export function followChat<UI extends UIMessage>(
  chat: AbstractChat<UI>,
  transport: MooringChatTransport<UI>,
): FollowedChat {
  let stopped = false;
  let unwatch: (() => void) | undefined;
  let queue: Promise<void> = Promise.resolve();
  const settled = async (): Promise<void> => {
    while (!stopped && busy(chat)) {
      await new Promise((resolve) => setTimeout(resolve, SETTLE_POLL_MS));
    }
  };
  const then = (work: () => Promise<void>): void => {
    queue = queue.then(work).catch((error: unknown) => console.error("mooring: following the chat failed", error));
  };
  const rehydrate = async (): Promise<void> => {
    await settled();
    if (!stopped) chat.messages = await transport.history(chat.id);
  };
  const onChange = (change: ChatChange): void => {
    if (change.type === "input" && !change.own) {
      then(async () => {
        await settled();
        if (!stopped && !chat.messages.some((m) => m.id === change.message.id)) {
          chat.messages = [...chat.messages, change.message as UI];
        }
      });
    } else if (change.type === "run-start" && !change.own) {
      then(async () => {
        await settled();
        // Not awaited: the stream goes on while later changes queue behind `settled`.
        if (!stopped) void chat.resumeStream();
        await new Promise((resolve) => setTimeout(resolve, 0));
      });
    } else if (change.type === "run-end") {
      then(rehydrate);
    }
  };
  const ready = (async () => {
    unwatch = await transport.watch(chat.id, onChange);
    if (stopped) unwatch();
    await rehydrate();
    if (!stopped && (await transport.activeRun(chat.id)) !== undefined) void chat.resumeStream();
  })();
  return {
    ready,
    stop() {
      stopped = true;
      unwatch?.();
    },
  };
}

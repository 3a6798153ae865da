// TanStack AI's ConnectionAdapter in its subscribe + send form over a Mooring session: the
// thread is the session. `send` publishes the user's message; `subscribe` yields every run of
// the session as AG-UI events, whoever sent its input; `joinRun` streams a run from its start
// (the answer is one message, whole) and live to its end; `hydrate` reads the history. An
// abort of `send`'s signal cancels the run answering it, for every device.

import type { Json, MooringClient } from "@mooring/client";
import {
  INPUT_NAME,
  acquireChatSession,
  answerMessageId,
  runStream,
  type ChatSession,
  type ChatSessionLease,
  type RunState,
} from "@mooring/ai-sdk/session";
import type { RunAgentInputContext, SubscribeConnectionAdapter } from "@tanstack/ai-client";
import type { UIMessageChunk } from "ai";

import { toStreamChunks } from "./events.js";
import { toUIMessage } from "./hydrate.js";
import type { ChatHydrationResult, SentMessages, StreamChunk } from "./types.js";

/** Options of {@link mooringConnection}. */
export interface MooringConnectionOptions {
  /** The connection (or its promise), shared with the rest of the app. */
  client: MooringClient | Promise<MooringClient>;
  /** The session: the chat's thread. */
  session: string;
  /** The node's HTTP address, to ask whether a run seen only in the history is still active. */
  httpUrl?: string;
}

/** The adapter: subscribe + send, with joinRun and hydrate. */
export type MooringConnection = SubscribeConnectionAdapter &
  Required<Pick<SubscribeConnectionAdapter, "joinRun" | "hydrate">> & { close(): void };

export function mooringConnection(options: MooringConnectionOptions): MooringConnection {
  // Shared with every other transport of the same client on this session.
  let lease: Promise<ChatSessionLease> | undefined;
  const session = async (): Promise<ChatSession> => {
    if (lease === undefined) {
      const current = Promise.resolve(options.client).then((c) => acquireChatSession(c, options.session));
      lease = current;
      const forget = (): void => {
        if (lease === current) lease = undefined;
      };
      // An ended subscription (its client closed or gave up) is let go: the next call attaches again.
      current
        .then(
          async (l) =>
            (await l.session).onEnd(() => {
              forget();
              l.release();
            }),
          forget,
        )
        .catch(forget);
    }
    return (await lease).session;
  };
  /** The client's run id for each input this adapter sent (TanStack waits for its own id). */
  const clientRuns = new Map<number, string>();
  const runIdOf = (run: RunState): string =>
    (run.input === undefined ? undefined : clientRuns.get(run.input)) ?? run.runId;
  const cancel = (s: ChatSession, runId: string): void => {
    s.client
      .cancel(s.name, runId)
      .catch((error: unknown) => console.error(`mooring: cancel of ${runId} failed`, error));
  };

  /** The AG-UI events of one run, from its start to its end. */
  async function* eventsOf(s: ChatSession, run: RunState, signal?: AbortSignal): AsyncGenerator<StreamChunk> {
    const context = {
      threadId: options.session,
      runId: runIdOf(run),
      messageId: run.answer === undefined ? run.runId : answerMessageId(run.answer),
    };
    // A subscriber's signal detaches it; it does not cancel the run.
    const reader = runStream(s, { runId: run.runId }, undefined, () => {}).getReader();
    const stop = (): void => void reader.cancel().catch(() => {});
    signal?.addEventListener("abort", stop, { once: true });
    try {
      for (;;) {
        const next = await reader.read();
        if (next.done || signal?.aborted === true) return;
        for (const event of toStreamChunks(next.value as UIMessageChunk, context)) yield event;
      }
    } finally {
      signal?.removeEventListener("abort", stop);
      stop();
    }
  }

  return {
    async *subscribe(signal?: AbortSignal): AsyncIterable<StreamChunk> {
      const s = await session();
      await s.live;
      const queue: StreamChunk[] = [];
      let wake: (() => void) | undefined;
      const follow = (run: RunState): void => {
        void (async () => {
          for await (const event of eventsOf(s, run, signal)) {
            queue.push(event);
            wake?.();
          }
        })().catch((error: unknown) => console.error(`mooring: following run ${run.runId} failed`, error));
      };
      const unlisten = s.listen((event) => {
        const runId = (event.data as { run_id?: unknown } | null)?.run_id;
        if (event.action !== "run.start" || typeof runId !== "string") return;
        const run = s.runs.get(runId);
        if (run !== undefined) follow(run);
      });
      const stopped = new Promise<void>((resolve) => {
        if (signal?.aborted === true) resolve();
        signal?.addEventListener("abort", () => resolve(), { once: true });
      });
      void stopped.then(() => wake?.());
      try {
        while (signal?.aborted !== true) {
          const next = queue.shift();
          if (next !== undefined) {
            yield next;
            continue;
          }
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
      } finally {
        unlisten();
      }
    },

    async send(
      messages: SentMessages,
      _data?: Record<string, unknown>,
      signal?: AbortSignal,
      runContext?: RunAgentInputContext,
    ): Promise<void> {
      const s = await session();
      const last = messages[messages.length - 1];
      if (last === undefined || last.role !== "user") throw new TypeError("send needs the user's message last");
      const input = toInput(last);
      const [published] = await s.client.publish(options.session, [
        { id: `ui-${input.id}`, action: "message.create", name: INPUT_NAME, data: input as unknown as Json },
      ]);
      if (published === undefined) return;
      if (runContext !== undefined) clientRuns.set(published.serial, runContext.runId);
      signal?.addEventListener(
        "abort",
        () => {
          const now = s.runFor(published.serial);
          if (now !== undefined) cancel(s, now.runId);
          else {
            const waiting = s.listen(() => {
              const run = s.runFor(published.serial);
              if (run === undefined) return;
              waiting();
              cancel(s, run.runId);
            });
          }
        },
        { once: true },
      );
    },

    async *joinRun(runId: string, signal?: AbortSignal): AsyncIterable<StreamChunk> {
      const s = await session();
      await s.live;
      const run = s.runs.get(runId) ?? [...s.runs.values()].find((r) => runIdOf(r) === runId);
      if (run === undefined) return;
      yield* eventsOf(s, run, signal);
    },

    async hydrate(): Promise<ChatHydrationResult> {
      const s = await session();
      await s.live;
      const messages = s.messages.flatMap((view) => toUIMessage(view) ?? []);
      const active = await s.activeRun(options.httpUrl === undefined ? undefined : (id) => runActive(options, id));
      return { messages, activeRun: active === undefined ? null : { runId: runIdOf(active) }, interrupts: null };
    },

    close(): void {
      void lease?.then((l) => l.release()).catch(() => {});
      lease = undefined;
    },
  };
}

/** The user's message as the session keeps it: a UI message whose text parts agents read. */
function toInput(message: SentMessages[number]): { id: string; role: "user"; parts: { type: "text"; text: string }[] } {
  const id = "id" in message && typeof message.id === "string" ? message.id : `in-${Date.now().toString(36)}`;
  let text = "";
  if ("parts" in message) {
    for (const part of message.parts) if (part.type === "text") text += part.content;
  } else if (typeof message.content === "string") {
    text = message.content;
  } else if (Array.isArray(message.content)) {
    for (const part of message.content) if (part.type === "text") text += part.content;
  }
  return { id, role: "user", parts: [{ type: "text", text }] };
}

async function runActive(options: MooringConnectionOptions, runId: string): Promise<boolean> {
  const url = `${options.httpUrl?.replace(/\/$/, "")}/v1/sessions/${encodeURIComponent(options.session)}/runs`;
  const response = await fetch(url);
  if (!response.ok) return true;
  const body = (await response.json()) as { runs?: { run_id?: string }[] };
  return (body.runs ?? []).some((r) => r.run_id === runId);
}

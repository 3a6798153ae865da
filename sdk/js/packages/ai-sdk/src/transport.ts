// A ChatTransport for the AI SDK's `Chat` and `useChat` over a Mooring session: the chat id
// is the session's name. Sending publishes the user's message and streams the run that
// answers it; reconnecting streams the active run from its beginning (the answer is one
// message, whole); stop() cancels the run for every device, while closing a tab does not.

import { isValidSessionName, type Json, type MooringClient } from "@mooring/client";
import type { ChatRequestOptions, ChatTransport, UIMessage, UIMessageChunk } from "ai";

import { acquireChatSession, type ChatSession, type ChatSessionLease, type RunState } from "./chat-session.js";
import { MooringChatError } from "./errors.js";
import { INPUT_NAME } from "./format.js";
import { hydrate } from "./hydrate.js";
import { runStream } from "./run-stream.js";

/** Options of {@link MooringChatTransport}. */
export interface MooringChatTransportOptions {
  /** The connection (or its promise: `MooringClient.connect(...)`), shared with the rest of the app. */
  client: MooringClient | Promise<MooringClient>;
  /**
   * The node's HTTP address (`http://127.0.0.1:7420`), to ask whether a run seen only in the
   * history (before this client attached) is still active. Without it, such a run counts as
   * active until its answer holds a final chunk.
   */
  httpUrl?: string;
  /** Headers for that request (for example `Authorization` on a node with auth). */
  headers?: () => Record<string, string> | Promise<Record<string, string>>;
}

/** A change of a chat made by anyone: what {@link followChat} reacts to. */
export type ChatChange =
  | { type: "input"; serial: number; own: boolean; message: UIMessage }
  | { type: "run-start"; runId: string; own: boolean }
  | { type: "run-end"; runId: string; status: string };

type SendOptions = Parameters<ChatTransport<UIMessage>["sendMessages"]>[0];

export class MooringChatTransport<UI extends UIMessage = UIMessage> implements ChatTransport<UI> {
  /** A reconnect streams the whole answer from its `start`: the Chat replaces what it held. */
  readonly resumeStreamIsReplay = true;
  readonly #options: MooringChatTransportOptions;
  readonly #sessions = new Map<string, ChatSessionLease>();
  /** Inputs this transport published, per chat: their runs are streamed by `sendMessages`. */
  readonly #ownInputs = new Map<string, Set<number>>();
  #closed = false;

  constructor(options: MooringChatTransportOptions) {
    this.#options = options;
  }

  async sendMessages(options: SendOptions & ChatRequestOptions): Promise<ReadableStream<UIMessageChunk>> {
    const { chatId, messages, trigger, abortSignal } = options;
    if (trigger !== "submit-message") {
      throw new MooringChatError(
        "unsupported_trigger",
        `${trigger} is not supported over a session yet: send a new message instead`,
      );
    }
    const last = messages[messages.length - 1];
    if (last === undefined || last.role !== "user") {
      throw new MooringChatError("no_user_message", "sendMessages needs the user's message last");
    }
    const session = await this.#session(chatId);
    const client = session.client;
    // The message id is the idempotency key: a resend after a drop is not a second input.
    const [published] = await client.publish(chatId, [
      { id: `ui-${last.id}`, action: "message.create", name: INPUT_NAME, data: toJson(last) },
    ]);
    if (published === undefined) throw new MooringChatError("closed", "the server acknowledged without a result");
    this.#own(chatId).add(published.serial);
    return runStream(session, { input: published.serial }, abortSignal, (runId) => void this.#cancel(session, runId));
  }

  async reconnectToStream(
    options: { chatId: string; abortSignal?: AbortSignal } & ChatRequestOptions,
  ): Promise<ReadableStream<UIMessageChunk> | null> {
    const session = await this.#session(options.chatId);
    const run = await this.activeRun(options.chatId);
    if (run === undefined) return null;
    return runStream(session, { runId: run.runId }, options.abortSignal, (runId) => void this.#cancel(session, runId));
  }

  /** The chat's history, hydrated from the session's messages. */
  async history(chatId: string): Promise<UI[]> {
    const session = await this.#session(chatId);
    await session.live;
    return hydrate<UI>(session.messages);
  }

  /** The chat's run in progress, if any. */
  async activeRun(chatId: string): Promise<RunState | undefined> {
    const session = await this.#session(chatId);
    return session.activeRun(this.#options.httpUrl === undefined ? undefined : (id) => this.#runActive(chatId, id));
  }

  /** Calls `listener` with every change of the chat from now on; resolves to a function that stops it. */
  async watch(chatId: string, listener: (change: ChatChange) => void): Promise<() => void> {
    const session = await this.#session(chatId);
    await session.live;
    const own = this.#own(chatId);
    // Changes reach the listener in the order of their events: an input's message is hydrated
    // asynchronously, and the run answering it must not overtake it.
    let order: Promise<void> = Promise.resolve();
    const emit = (change: Promise<ChatChange | undefined>): void => {
      order = order
        .then(() => change)
        .then((c) => {
          if (c !== undefined) listener(c);
        })
        .catch((error: unknown) => console.error("mooring: a chat change failed", error));
    };
    return session.listen((event) => {
      const runId = (event.data as { run_id?: unknown } | null)?.run_id;
      if (event.action === "message.create" && event.name === INPUT_NAME && event.version === undefined) {
        const view = session.message(event.serial);
        if (view === undefined) return;
        const serial = event.serial;
        emit(
          hydrate([view]).then(([message]) =>
            message === undefined ? undefined : { type: "input", serial, own: own.has(serial), message },
          ),
        );
      } else if (event.action === "run.start" && typeof runId === "string") {
        const input = session.runs.get(runId)?.input;
        emit(Promise.resolve({ type: "run-start", runId, own: input !== undefined && own.has(input) }));
      } else if (event.action === "run.end" && typeof runId === "string") {
        const status = session.runs.get(runId)?.end?.status ?? "failed";
        emit(Promise.resolve({ type: "run-end", runId, status }));
      }
    });
  }

  /** Lets go of every chat (detached once no other transport of the client uses it). The client stays open; runs go on. */
  close(): void {
    this.#closed = true;
    for (const lease of this.#sessions.values()) lease.release();
    this.#sessions.clear();
  }

  #own(chatId: string): Set<number> {
    let own = this.#ownInputs.get(chatId);
    if (own === undefined) {
      own = new Set();
      this.#ownInputs.set(chatId, own);
    }
    return own;
  }

  #session(chatId: string): Promise<ChatSession> {
    if (this.#closed) return Promise.reject(new MooringChatError("closed", "the transport is closed"));
    if (!isValidSessionName(chatId)) {
      return Promise.reject(
        new MooringChatError("invalid_chat_id", `chat id ${JSON.stringify(chatId)} is not a session name`),
      );
    }
    let lease = this.#sessions.get(chatId);
    if (lease === undefined) {
      const created = Promise.resolve(this.#options.client).then((client) => acquireChatSession(client, chatId));
      const session = created.then((l) => l.session);
      lease = { session, release: () => void created.then((l) => l.release()).catch(() => {}) };
      const held = lease;
      const forget = (): void => {
        if (this.#sessions.get(chatId) !== held) return;
        this.#sessions.delete(chatId);
        held.release();
      };
      // A failed attach or an ended subscription is not kept: the next call attaches again.
      session.then((s) => s.onEnd(forget), forget);
      this.#sessions.set(chatId, lease);
    }
    return lease.session;
  }

  async #cancel(session: ChatSession, runId: string): Promise<void> {
    try {
      await session.client.cancel(session.name, runId);
    } catch (error) {
      console.error(`mooring: cancelling run ${runId} of ${session.name} failed`, error);
    }
  }

  async #runActive(chatId: string, runId: string): Promise<boolean> {
    const url = `${this.#options.httpUrl?.replace(/\/$/, "")}/v1/sessions/${encodeURIComponent(chatId)}/runs`;
    const headers = (await this.#options.headers?.()) ?? {};
    const response = await fetch(url, { headers });
    if (!response.ok) return true; // unknown: keep following rather than drop a live answer
    const body = (await response.json()) as { runs?: { run_id?: string }[] };
    return (body.runs ?? []).some((r) => r.run_id === runId);
  }
}

function toJson(message: UIMessage): Json {
  return JSON.parse(JSON.stringify(message)) as Json;
}

// One chat's session as this transport sees it: a subscription to the session (whole
// messages, then live), and the runs it learned of, so a stream can find its run's answer
// and its end. Shared by every stream and follower of the chat in this transport.

import type { EndReason, MessageView, MooringClient, SessionEvent, Subscription } from "@mooring/client";

import { ANSWER_NAME, decodeAnswer, isTerminal } from "./format.js";

/** What is known of a run of the chat. */
export interface RunState {
  runId: string;
  /** Serial of the user input it answers, when its `run.start` was seen. */
  input?: number;
  /** Serial of its answer message, once created. */
  answer?: number;
  /** How it ended, once known. */
  end?: { status: string; reason?: string };
  /** Known only from the materialized view: its `run.start` and `run.end` were not seen. */
  fromView: boolean;
}

/** A change of the chat: an event, in order, after the session's tables took it in. */
export type ChatListener = (event: SessionEvent) => void;

/** The subscription ended for good (the client closed, or gave up reconnecting). */
export type EndListener = (reason: EndReason) => void;

function field(data: unknown, name: string): unknown {
  return typeof data === "object" && data !== null && !Array.isArray(data)
    ? (data as Record<string, unknown>)[name]
    : undefined;
}

export class ChatSession {
  readonly runs = new Map<string, RunState>();
  readonly #listeners = new Set<ChatListener>();
  readonly #endListeners = new Set<EndListener>();
  #ended: EndReason | undefined;
  readonly live: Promise<void>;
  #subscription: Subscription | undefined;

  private constructor(
    readonly client: MooringClient,
    readonly name: string,
  ) {
    let resolveLive!: () => void;
    this.live = new Promise((resolve) => (resolveLive = resolve));
    this.#onLive = resolveLive;
  }

  readonly #onLive: () => void;

  /** Attaches `name` (its materialized view, then live) and follows its runs. */
  static async open(client: MooringClient, name: string): Promise<ChatSession> {
    const session = new ChatSession(client, name);
    const subscription = await client.attach(name, { from: "latest" });
    session.#subscription = subscription;
    subscription.listen((item) => {
      if (item.type === "live") session.#onLive();
      if (item.type === "reset") session.runs.clear();
      if (item.type === "event") session.#onEvent(item.event);
      if (item.type === "ended") session.#onEnded(item.reason);
    });
    return session;
  }

  /** The messages folded so far, in serial order. */
  get messages(): MessageView[] {
    return this.#subscription?.messages ?? [];
  }

  message(serial: number): MessageView | undefined {
    return this.#subscription?.message(serial);
  }

  /** Calls `listener` with every event from now on; returns a function that stops it. */
  listen(listener: ChatListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Calls `listener` once the subscription ends for good (at once if it has). */
  onEnd(listener: EndListener): () => void {
    if (this.#ended !== undefined) {
      listener(this.#ended);
      return () => {};
    }
    this.#endListeners.add(listener);
    return () => this.#endListeners.delete(listener);
  }

  /** Why the subscription ended, once it has: nothing more will arrive. */
  get ended(): EndReason | undefined {
    return this.#ended;
  }

  #onEnded(reason: EndReason): void {
    this.#ended = reason;
    for (const listener of [...this.#endListeners]) listener(reason);
    this.#endListeners.clear();
  }

  /** The run answering input `serial`, once its `run.start` arrived. */
  runFor(input: number): RunState | undefined {
    for (const run of this.runs.values()) if (run.input === input) return run;
    return undefined;
  }

  /**
   * The newest run that has not ended as far as this client can tell. A run seen only in the
   * view counts when its answer has no final chunk; `stillActive` asks the server about it.
   */
  async activeRun(stillActive?: (runId: string) => Promise<boolean>): Promise<RunState | undefined> {
    await this.live;
    const runs = [...this.runs.values()].reverse();
    for (const run of runs) {
      if (run.end !== undefined) continue;
      if (!run.fromView) return run;
      const answer = run.answer === undefined ? undefined : this.message(run.answer);
      if (answer === undefined || answer.name !== ANSWER_NAME || typeof answer.data !== "string") continue;
      if (decodeAnswer(answer.data).some(isTerminal)) continue;
      if (stillActive === undefined || (await stillActive(run.runId))) return run;
    }
    return undefined;
  }

  close(): void {
    this.#subscription?.close();
    this.#listeners.clear();
  }

  #run(runId: string, fromView: boolean): RunState {
    let run = this.runs.get(runId);
    if (run === undefined) {
      run = { runId, fromView };
      this.runs.set(runId, run);
    }
    return run;
  }

  #onEvent(event: SessionEvent): void {
    const runId = field(event.data, "run_id");
    if (event.action === "run.start" && typeof runId === "string") {
      const run = this.#run(runId, false);
      const input = field(event.data, "input");
      if (typeof input === "number") run.input = input;
    } else if (event.action === "run.end" && typeof runId === "string") {
      const status = field(event.data, "status");
      const reason = field(event.data, "reason");
      const end: RunState["end"] = { status: typeof status === "string" ? status : "failed" };
      if (typeof reason === "string") end.reason = reason;
      this.#run(runId, false).end = end;
    } else if (event.action === "message.create" && event.extras?.["run_id"] !== undefined) {
      const run = this.#run(event.extras["run_id"], event.version !== undefined);
      run.answer = event.serial;
    }
    for (const listener of [...this.#listeners]) listener(event);
  }
}

/** A chat session shared by the transports and adapters of one client. */
interface Shared {
  session: Promise<ChatSession>;
  users: number;
}

/** A client holds one subscription per session: every transport of that client shares it. */
const shared = new WeakMap<MooringClient, Map<string, Shared>>();

/** A use of a shared chat session; `release` it when done (the last release detaches). */
export interface ChatSessionLease {
  session: Promise<ChatSession>;
  release(): void;
}

/** The chat session `name` on `client`, attached on first use and shared after that. */
export function acquireChatSession(client: MooringClient, name: string): ChatSessionLease {
  let sessions = shared.get(client);
  if (sessions === undefined) {
    sessions = new Map();
    shared.set(client, sessions);
  }
  let entry = sessions.get(name);
  if (entry === undefined) {
    const created: Shared = { session: ChatSession.open(client, name), users: 0 };
    const table = sessions;
    const forget = (): void => {
      if (table.get(name) === created) table.delete(name);
    };
    // A failed attach or an ended subscription is not kept: the next use attaches again.
    created.session.then((s) => s.onEnd(forget), forget);
    sessions.set(name, created);
    entry = created;
  }
  const used = entry;
  used.users += 1;
  let released = false;
  return {
    session: used.session,
    release() {
      if (released) return;
      released = true;
      used.users -= 1;
      if (used.users > 0) return;
      if (sessions.get(name) === used) sessions.delete(name);
      void used.session.then((s) => s.close()).catch(() => {});
    },
  };
}

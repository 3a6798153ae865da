// Runs: the table routing a session's control events to this client's runs, and the agent's
// RunHandle, whose cancel is an AbortSignal and whose steers are an event stream.
//
// Controls count from the run's own `run.start` on, recognized by its event id: a cancel of
// every run sent before this one started does not stop it, and a cancel the server held for
// a run that did not exist yet arrives re-published right after that `run.start`.

import { Emitter } from "./emitter.js";
import type { Json, SessionEvent } from "./protocol.js";

export const RUN_STATUSES = ["completed", "cancelled", "failed", "agent_lost"] as const;
/** How a run ended. */
export type RunStatus = (typeof RUN_STATUSES)[number];

/** Steers a run buffers for its async iterator before newer ones are dropped. */
export const STEER_BUFFER = 64;

/** Why a run should stop. */
export type CancelReason =
  /** A `control.cancel` named this run. */
  | "requested"
  /** A `control.cancel` without `run_id`: every active run of the session. */
  | "all_runs"
  /** A cancel sent before the run existed, held by the server. */
  | "held"
  /** Someone else ended the run (for example the server, `agent_lost`). */
  | "ended"
  /** The client closed: nothing more will be heard about the run. */
  | "client_closed";

/** A request to stop a run, as the agent hears of it. Also the reason of the run's AbortSignal. */
export interface Cancel {
  reason: CancelReason;
  /** Serial of the `control.cancel` (or `run.end`); absent when the client closed. */
  serial?: number;
  /** Who asked (for a held cancel, who sent it before the run started). */
  by?: string;
  /** With reason `ended`: the status the run was ended with. */
  status?: RunStatus;
}

/** A redirection of a run (`control.steer`). */
export interface Steer {
  serial: number;
  by?: string;
  data: Json;
}

/** A run this client follows: where to send what it hears. */
export interface RunWatch {
  id: number;
  session: string;
  runId: string;
  /** The id of the run's `run.start` event: controls count from there. */
  startId: string;
  armed: boolean;
  lastSerial: number;
  onCancel: (cancel: Cancel) => void;
  onSteer: (steer: Steer) => void;
}

/** Every run of this client, by session. */
export class RunWatches {
  readonly #sessions = new Map<string, RunWatch[]>();

  add(watch: RunWatch): void {
    const list = this.#sessions.get(watch.session) ?? [];
    list.push(watch);
    this.#sessions.set(watch.session, list);
  }

  /** Forgets watch `id`; returns its session. */
  remove(id: number): string | undefined {
    for (const [session, list] of this.#sessions) {
      const i = list.findIndex((w) => w.id === id);
      if (i < 0) continue;
      list.splice(i, 1);
      if (list.length === 0) this.#sessions.delete(session);
      return session;
    }
    return undefined;
  }

  watches(session: string): boolean {
    return this.#sessions.has(session);
  }

  /** Routes one new event of `session` (each serial once, in order) to the runs it targets. */
  onEvent(session: string, event: SessionEvent): void {
    for (const w of [...(this.#sessions.get(session) ?? [])]) {
      if (event.serial <= w.lastSerial) continue;
      w.lastSerial = event.serial;
      if (!w.armed) {
        w.armed = event.action === "run.start" && event.id === w.startId;
        continue;
      }
      route(w, event);
    }
  }

  /** The client closed: every run hears it. */
  closeAll(): void {
    for (const list of this.#sessions.values()) for (const w of list) w.onCancel({ reason: "client_closed" });
    this.#sessions.clear();
  }
}

function field(data: Json | undefined, name: string): Json | undefined {
  return typeof data === "object" && data !== null && !Array.isArray(data) ? data[name] : undefined;
}

function route(w: RunWatch, event: SessionEvent): void {
  const target = field(event.data, "run_id");
  const mine = target === w.runId;
  const by = (c: Cancel): Cancel => (event.client_id === undefined ? c : { ...c, by: event.client_id });
  if (event.action === "control.cancel" && (mine || target === undefined)) {
    const heldFrom = field(event.data, "held_from");
    if (heldFrom !== undefined) {
      const cancel: Cancel = { reason: "held", serial: event.serial };
      if (typeof heldFrom === "string") cancel.by = heldFrom;
      w.onCancel(cancel);
    } else {
      w.onCancel(by({ reason: target === undefined ? "all_runs" : "requested", serial: event.serial }));
    }
  } else if (event.action === "control.steer" && mine) {
    const steer: Steer = { serial: event.serial, data: field(event.data, "data") ?? null };
    if (event.client_id !== undefined) steer.by = event.client_id;
    w.onSteer(steer);
  } else if (event.action === "run.end" && mine) {
    const status = field(event.data, "status");
    const known = RUN_STATUSES.find((s) => s === status) ?? "failed";
    w.onCancel(by({ reason: "ended", serial: event.serial, status: known }));
  }
}

/** What a run's handle needs from its client. */
export interface RunHost {
  createAnswer(session: string, runId: string, name: string, data: Json): Promise<number>;
  append(session: string, message: number, text: string): Promise<number>;
  event(session: string, runId: string, name: string, data: Json): Promise<number>;
  end(session: string, runId: string, status: RunStatus, reason: string | undefined): Promise<number>;
  unwatch(id: number): void;
}

/** Events of a run: its cancel (once) and each steer. */
export interface RunEvents extends Record<string, unknown> {
  cancel: Cancel;
  steer: Steer;
}

/**
 * An agent's run in a session, from `MooringClient.startRun`: publish its answer, hear of a
 * cancel (its {@link signal} aborts) or a steer as soon as this client receives it, and end it.
 */
export class RunHandle extends Emitter<RunEvents> {
  readonly #controller = new AbortController();
  readonly #steers: Steer[] = [];
  #wake: (() => void) | undefined;
  #answer: number | undefined;
  #ended = false;
  #serial = 0;

  /** @internal Made by `MooringClient.startRun`. */
  constructor(
    private readonly host: RunHost,
    readonly session: string,
    readonly runId: string,
    private readonly watchId: number,
  ) {
    super();
  }

  /** Aborts (with the {@link Cancel} as its reason) when the run should stop: pass it to the model call. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** The reason to stop, once one has arrived. */
  get cancelled(): Cancel | undefined {
    return this.#controller.signal.aborted ? (this.#controller.signal.reason as Cancel) : undefined;
  }

  /** Serial of the run's `run.start`. */
  get serial(): number {
    return this.#serial;
  }

  /** Serial of the answer message, once {@link createAnswer} made it. */
  get answer(): number | undefined {
    return this.#answer;
  }

  /** @internal */
  started(serial: number): void {
    this.#serial = serial;
  }

  /** @internal The watch heard a cancel; only the first counts. */
  onCancel(cancel: Cancel): void {
    if (this.#controller.signal.aborted) return;
    this.#controller.abort(cancel);
    this.emit("cancel", cancel);
    this.#wake?.();
  }

  /** @internal */
  onSteer(steer: Steer): void {
    this.emit("steer", steer);
    if (this.#steers.length < STEER_BUFFER) this.#steers.push(steer);
    else console.warn(`mooring: steer ${steer.serial} dropped: run ${this.runId} has ${STEER_BUFFER} steers unread`);
    this.#wake?.();
  }

  /** The steers, in the order they were published, until the run is cancelled or ended. */
  async *steers(): AsyncGenerator<Steer> {
    for (;;) {
      const next = this.#steers.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (this.#controller.signal.aborted || this.#ended) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /**
   * Creates the run's answer: a message named `name` tagged with `extras.run_id`, so its
   * appends count as the run's progress. Calling it again starts a new answer.
   */
  async createAnswer(name = "response", data: Json = ""): Promise<number> {
    this.#answer = await this.host.createAnswer(this.session, this.runId, name, data);
    return this.#answer;
  }

  /** Appends `text` to the answer; returns the serial of the log event holding it. */
  append(text: string): Promise<number> {
    if (this.#answer === undefined) {
      return Promise.reject(new TypeError("append before createAnswer: the run has no answer message yet"));
    }
    return this.host.append(this.session, this.#answer, text);
  }

  /** Publishes a structured event of the run (a tool call, a citation), tagged with its run id. */
  event(name: string, data: Json): Promise<number> {
    return this.host.event(this.session, this.runId, name, data);
  }

  /** Ends the run with `status` and a reason people can read; stops listening for its controls. */
  async end(status: RunStatus, reason?: string): Promise<number> {
    try {
      return await this.host.end(this.session, this.runId, status, reason);
    } finally {
      this.close();
    }
  }

  /** Stops listening for the run's controls without ending it on the server. */
  close(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.host.unwatch(this.watchId);
    this.#wake?.();
  }
}

// What this client entered in presence (entered again, same instance, on every new
// connection, so a drop shorter than the server's grace is never seen as a leave), and
// `presence_get` requests awaiting their snapshot.

import type { ClientFrame, Json, Member, PresenceAction, Role } from "./protocol.js";

interface Entered {
  role: Role;
  data: Json;
}

interface Get {
  resolve: (members: Member[]) => void;
  sent: boolean;
  abandoned: boolean;
}

const key = (session: string, instance: string): string => JSON.stringify([session, instance]);
const unkey = (k: string): [string, string] => JSON.parse(k) as [string, string];

function frame(session: string, action: PresenceAction, instance: string, entered?: Entered): ClientFrame {
  const f: Extract<ClientFrame, { type: "presence" }> = { type: "presence", session, action, instance };
  if (entered !== undefined) {
    f.role = entered.role;
    if (entered.data !== null) f.data = entered.data;
  }
  return f;
}

export class Presences {
  readonly #entered = new Map<string, Entered>();
  /** Left while disconnected: said on the next connection, so the member does not wait out the grace. */
  readonly #leaves = new Set<string>();
  readonly #gets = new Map<string, Get[]>();
  #connected = false;

  enter(session: string, instance: string, role: Role, data: Json, out: ClientFrame[]): void {
    const k = key(session, instance);
    this.#leaves.delete(k);
    const entered = { role, data };
    this.#entered.set(k, entered);
    if (this.#connected) out.push(frame(session, "enter", instance, entered));
  }

  /** Replaces the data of an entered instance; false if it is not entered. */
  update(session: string, instance: string, data: Json, out: ClientFrame[]): boolean {
    const entered = this.#entered.get(key(session, instance));
    if (entered === undefined) return false;
    entered.data = data;
    if (this.#connected) out.push(frame(session, "update", instance, entered));
    return true;
  }

  leave(session: string, instance: string, out: ClientFrame[]): void {
    const k = key(session, instance);
    this.#entered.delete(k);
    if (this.#connected) out.push(frame(session, "leave", instance));
    else this.#leaves.add(k);
  }

  get(session: string, resolve: (members: Member[]) => void): Get {
    const get: Get = { resolve, sent: false, abandoned: false };
    const list = this.#gets.get(session) ?? [];
    list.push(get);
    this.#gets.set(session, list);
    return get;
  }

  /** Sends the `presence_get`s not sent yet, except for sessions whose attach awaits its `live`. */
  flush(awaitingLive: (session: string) => boolean, out: ClientFrame[]): void {
    if (!this.#connected) return;
    for (const [session, gets] of this.#gets) {
      if (awaitingLive(session)) continue;
      for (const g of gets) {
        if (g.sent) continue;
        g.sent = true;
        out.push({ type: "presence_get", session });
      }
    }
  }

  /** A snapshot answers the oldest `presence_get` sent for its session. */
  onSnapshot(session: string, members: Member[]): void {
    const gets = this.#gets.get(session);
    if (gets === undefined) return;
    const i = gets.findIndex((g) => g.sent);
    if (i < 0) return;
    const [get] = gets.splice(i, 1);
    if (gets.length === 0) this.#gets.delete(session);
    if (get !== undefined && !get.abandoned) get.resolve(members);
  }

  onConnected(out: ClientFrame[]): void {
    this.#connected = true;
    for (const k of this.#leaves) {
      const [session, instance] = unkey(k);
      out.push(frame(session, "leave", instance));
    }
    this.#leaves.clear();
    for (const [k, entered] of this.#entered) {
      const [session, instance] = unkey(k);
      out.push(frame(session, "enter", instance, entered));
    }
    for (const [session, gets] of this.#gets) {
      const kept = gets.filter((g) => !g.abandoned);
      if (kept.length === 0) this.#gets.delete(session);
      else this.#gets.set(session, kept);
    }
  }

  onDisconnected(): void {
    this.#connected = false;
    for (const gets of this.#gets.values()) for (const g of gets) g.sent = false;
  }
}

// Helpers shared by the tests that talk to a real server.

import {
  MooringClient,
  type ClientOptions,
  type MessageView,
  type SessionEvent,
  type Subscription,
} from "@mooring/client";

import { waitFor, type MooringServer } from "@mooring/test-support";

/** Closes every client a test opened, even when it fails. */
export class Clients {
  readonly #open: MooringClient[] = [];

  constructor(private readonly server: MooringServer) {}

  async connect(options: Partial<ClientOptions> = {}): Promise<MooringClient> {
    const client = await MooringClient.connect({
      url: this.server.wsUrl,
      reconnect: { initialMs: 50, maxMs: 500 },
      ...options,
    });
    this.#open.push(client);
    return client;
  }

  closeAll(): void {
    for (const c of this.#open.splice(0)) c.close();
  }
}

/** Reads a subscription in the background, keeping every event and noting `live`. */
export class Reader {
  readonly events: SessionEvent[] = [];
  lives = 0;
  readonly done: Promise<void>;

  constructor(readonly sub: Subscription) {
    this.done = (async () => {
      for await (const item of sub) {
        if (item.type === "event") this.events.push(item.event);
        if (item.type === "live") this.lives += 1;
      }
    })();
  }

  get serials(): number[] {
    return this.events.map((e) => e.serial);
  }

  async until(check: (reader: Reader) => boolean, what: string): Promise<void> {
    await waitFor(() => check(this), what);
  }
}

/** The server's materialized messages, as a fresh client attaching with `latest` receives them. */
export async function serverView(client: MooringClient, session: string): Promise<MessageView[]> {
  const sub = await client.attach(session, { from: "latest" });
  for await (const item of sub) if (item.type === "live") break;
  const view = sub.messages;
  sub.close();
  return view;
}

/** A message as the tests compare it: the fields the fold decides. */
export function comparable(messages: MessageView[]): unknown[] {
  return messages.map((m) => ({
    serial: m.serial,
    name: m.name,
    client_id: m.client_id,
    data: m.data,
    extras: m.extras,
    version: m.version,
  }));
}

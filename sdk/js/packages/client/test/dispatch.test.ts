// Agent dispatch against a real server: one input, three workers (the example agent), exactly
// one run; a worker process killed with SIGKILL before its run.start, and another takes the
// input; no input lost while every worker is briefly gone.

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { pathToFileURL } from "node:url";

import type { Dispatch, SessionEvent } from "@mooring/client";

import { Clients, Reader } from "./support/clients.js";
import { FakeModel, MooringServer, REPO_ROOT, waitFor } from "@mooring/test-support";

interface Worker {
  stop: () => Promise<void>;
}

type StartWorker = (options: unknown) => Promise<Worker>;

let server: MooringServer;
let clients: Clients;
let model: FakeModel;
let startWorker: StartWorker;
const running: Worker[] = [];
const children: ChildProcess[] = [];

before(async () => {
  server = await MooringServer.start();
  clients = new Clients(server);
  model = await new FakeModel(5, 5).start();
  const example = (await import(pathToFileURL(join(REPO_ROOT, "examples/node-agent/agent.mjs")).href)) as {
    startWorker: StartWorker;
  };
  startWorker = example.startWorker;
});

after(async () => {
  for (const child of children) child.kill("SIGKILL");
  await Promise.all(running.splice(0).map((w) => w.stop()));
  clients.closeAll();
  await model.stop();
  await server.stop();
});

/** The example agent as a worker for `pattern`, noting each input it is handed. */
async function worker(name: string, pattern: string, seen: Dispatch[] = []): Promise<Worker> {
  const w = await startWorker({
    url: server.wsUrl,
    patterns: [pattern],
    clientId: name,
    model: { baseUrl: model.baseUrl, apiKey: "test-key", model: "fake" },
    onDispatch: (d: Dispatch) => seen.push(d),
  });
  running.push(w);
  return w;
}

const starts = (events: SessionEvent[]): SessionEvent[] => events.filter((e) => e.action === "run.start");
const ends = (events: SessionEvent[]): SessionEvent[] => events.filter((e) => e.action === "run.end");

test("one input, three workers: exactly one is handed it and exactly one run answers it", async () => {
  const seen: Dispatch[][] = [[], [], []];
  for (const [i, list] of seen.entries()) await worker(`pool-${i}`, "d1:*", list);
  const user = await clients.connect({ clientId: "user" });
  const reader = new Reader(await user.attach("d1:chat", { from: "start" }));
  const input = await user.createMessage("d1:chat", "user-input", "hello");
  await reader.until((r) => ends(r.events).length === 1, "the run ends");
  // Time for a second dispatch or a second run, were there to be one.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const handed = seen.flat();
  assert.equal(handed.length, 1, `dispatches: ${JSON.stringify(handed)}`);
  assert.equal(handed[0]?.input.serial, input);
  assert.equal(handed[0]?.attempt, 1);
  const runs = starts(reader.events);
  assert.equal(runs.length, 1, "one run.start");
  assert.deepEqual((runs[0]?.data as { input: number }).input, input);
  assert.equal((ends(reader.events)[0]?.data as { status: string }).status, "completed");
  const answer = reader.sub.messages.find((m) => m.name === "response");
  assert.equal(answer?.data, "tok0 tok1 tok2 tok3 tok4 ");
});

/** A worker in its own process that takes inputs and never starts their runs: killed later. */
function stuckWorker(pattern: string): Promise<ChildProcess> {
  const client = pathToFileURL(join(REPO_ROOT, "sdk/js/packages/client/dist/node.js")).href;
  const code = `
    const { MooringClient } = await import(${JSON.stringify(client)});
    const c = await MooringClient.connect({ url: ${JSON.stringify(server.wsUrl)}, clientId: "stuck" });
    const work = await c.work([${JSON.stringify(pattern)}]);
    console.log("registered");
    for await (const d of work) console.log("dispatched " + d.input.serial);
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", code], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  let out = "";
  child.stdout?.on("data", (b: Buffer) => (out += b.toString()));
  return waitFor(() => out.includes("registered"), "the stuck worker registered").then(() => {
    (child as ChildProcess & { out: () => string }).out = () => out;
    return child;
  });
}

test("a worker killed before run.start: another worker takes the input, and one run answers it", async () => {
  const stuck = await stuckWorker("d2:*");
  const user = await clients.connect({ clientId: "user" });
  const reader = new Reader(await user.attach("d2:chat", { from: "start" }));
  const input = await user.createMessage("d2:chat", "user-input", "anyone?");
  const out = (stuck as ChildProcess & { out: () => string }).out;
  await waitFor(() => out().includes(`dispatched ${input}`), "the stuck worker is handed the input");
  // A second worker arrives; the input stays with the first until it dies.
  const seen: Dispatch[] = [];
  await worker("rescuer", "d2:*", seen);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(seen.length, 0, "not handed on while its worker lives");
  stuck.kill("SIGKILL");
  await reader.until((r) => ends(r.events).length === 1, "the rescuer's run ends");
  assert.deepEqual(
    seen.map((d) => [d.input.serial, d.attempt]),
    [[input, 2]],
  );
  assert.equal(starts(reader.events).length, 1);
  assert.equal((ends(reader.events)[0]?.data as { status: string }).status, "completed");
});

test("no input is lost while every worker is briefly gone", async () => {
  const first = await worker("early", "d3:*");
  await first.stop();
  running.splice(running.indexOf(first), 1);
  const user = await clients.connect({ clientId: "user" });
  const readers = await Promise.all(
    ["d3:a", "d3:b", "d3:c"].map(async (s) => new Reader(await user.attach(s, { from: "start" }))),
  );
  for (const [i, s] of ["d3:a", "d3:b", "d3:c"].entries()) await user.createMessage(s, "user-input", `q${i}`);
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.ok(
    readers.every((r) => starts(r.events).length === 0),
    "nobody answers while no worker is there",
  );
  const seen: Dispatch[] = [];
  await worker("late", "d3:*", seen);
  for (const r of readers) await r.until((x) => ends(x.events).length === 1, `an answer in ${r.sub.session}`);
  assert.deepEqual(
    seen.map((d) => d.session),
    ["d3:a", "d3:b", "d3:c"],
    "every input, oldest first",
  );
});

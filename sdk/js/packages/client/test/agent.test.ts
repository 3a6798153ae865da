// The agent side: a cancel sent by a client aborts the run's AbortSignal, steers arrive as
// events and as a stream, and the example agent's model call (against a local fake
// OpenAI-compatible server streaming slowly) is aborted by a cancel.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { pathToFileURL } from "node:url";

import { MooringError, respond, type Cancel, type RunHandle, type SessionEvent, type Steer } from "@mooring/client";

import { Clients, Reader } from "./support/clients.js";
import { FakeModel, MooringServer, REPO_ROOT, waitFor } from "@mooring/test-support";

let server: MooringServer;
let clients: Clients;

before(async () => {
  server = await MooringServer.start();
  clients = new Clients(server);
});

after(async () => {
  clients.closeAll();
  await server.stop();
});

function runEnds(events: SessionEvent[]): Record<string, unknown>[] {
  return events.filter((e) => e.action === "run.end").map((e) => e.data as Record<string, unknown>);
}

test("a cancel from a client aborts the agent's AbortSignal and ends the run cancelled", async () => {
  const session = "chat:cancel";
  const agent = await clients.connect({ clientId: "agent" });
  const user = await clients.connect({ clientId: "user" });
  const reader = new Reader(await user.attach(session, { from: "start" }));
  let run: RunHandle | undefined;
  const steers: Steer[] = [];
  const streamed: string[] = [];
  const result = respond(agent, session, async function* (r) {
    run = r;
    r.on("steer", (s) => steers.push(s));
    // A source that would go on for ever unless the signal stops it.
    for (let i = 0; ; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      streamed.push(`t${i} `);
      yield `t${i} `;
    }
  });
  await waitFor(() => streamed.length >= 5 && run !== undefined, "the answer streaming");
  const runId = run?.runId ?? "";
  await user.steer(session, runId, { tone: "shorter" });
  await waitFor(() => steers.length === 1, "the steer");
  assert.deepEqual(steers[0]?.data, { tone: "shorter" });
  assert.equal(steers[0]?.by, "user");
  assert.equal(run?.signal.aborted, false);
  await user.cancel(session, runId);
  const outcome = await result;
  assert.equal(run?.signal.aborted, true);
  const reason = run?.signal.reason as Cancel;
  assert.equal(reason.reason, "requested");
  assert.equal(reason.by, "user");
  assert.equal(outcome.status, "cancelled");
  await reader.until((r) => runEnds(r.events).length === 1, "run.end");
  assert.deepEqual(runEnds(reader.events)[0], { run_id: runId, status: "cancelled", reason: "cancelled by user" });
  const answer = reader.sub.message(outcome.answer);
  assert.ok(
    typeof answer?.data === "string" && answer.data.startsWith("t0 t1 t2 t3 t4 "),
    `partial answer: ${JSON.stringify(answer?.data)}`,
  );
});

test("an agent that closes its client as soon as a cancel arrives leaves no unhandled rejection from appends in flight", async () => {
  const session = "chat:cancel-close";
  const agent = await clients.connect({ clientId: "agent-closing" });
  const user = await clients.connect({ clientId: "user-closing" });
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
  process.on("unhandledRejection", onUnhandled);
  try {
    let run: RunHandle | undefined;
    let sent = 0;
    // Observed from the start: ending the run needs the closed client, so `respond` fails,
    // and that failure is the caller's to see, not an unhandled one.
    const outcome = respond(agent, session, async function* (r) {
      run = r;
      r.signal.addEventListener("abort", () => agent.close(), { once: true });
      // Appends go out without waiting for each acknowledgement, so some are always in flight.
      for (;;) {
        sent += 1;
        yield `w${sent} `;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }).catch((error: unknown) => error);
    await waitFor(() => run !== undefined && sent >= 20, "the answer streaming");
    await user.cancel(session, run?.runId ?? "");
    const failed = await outcome;
    assert.ok(failed instanceof MooringError, `respond: ${String(failed)}`);
    assert.equal(failed.kind, "closed");
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.deepEqual(unhandled, []);
  } finally {
    process.off("unhandledRejection", onUnhandled);
  }
});

test("a source that finishes ends the run completed, and one that throws (or cannot start) ends it failed", async () => {
  const session = "chat:statuses";
  const agent = await clients.connect({ clientId: "agent" });
  const reader = new Reader(await (await clients.connect()).attach(session, { from: "start" }));
  const done = await respond(agent, session, () => [
    "Hello",
    ", ",
    { event: "tool-call", data: { tool: "search" } },
    "world",
  ]);
  assert.equal(done.status, "completed");
  const failed = await respond(agent, session, async function* () {
    yield "partial";
    throw new Error("the model refused");
  });
  assert.equal(failed.status, "failed");
  const thrown = await respond(agent, session, () => {
    throw new Error("no model configured");
  });
  assert.equal(thrown.status, "failed");
  await reader.until((r) => runEnds(r.events).length === 3, "three run.end");
  assert.deepEqual(
    runEnds(reader.events).map((d) => [d["status"], d["reason"]]),
    [
      ["completed", undefined],
      ["failed", "the model refused"],
      ["failed", "no model configured"],
    ],
  );
  assert.equal(reader.sub.message(done.answer)?.data, "Hello, world");
  const toolCall = reader.events.find((e) => e.name === "tool-call");
  assert.deepEqual([toolCall?.action, toolCall?.extras], ["event", { run_id: done.runId }]);
});

test("the example agent answers with the model and its model call is aborted by a cancel", async () => {
  const model = await new FakeModel(1000, 20).start();
  const session = "chat:example";
  const example = (await import(pathToFileURL(join(REPO_ROOT, "examples/node-agent/agent.mjs")).href)) as {
    startAgent: (options: unknown) => Promise<{ stop: () => Promise<void> }>;
  };
  let run: RunHandle | undefined;
  const agent = await example.startAgent({
    url: server.wsUrl,
    session,
    clientId: "example-agent",
    model: { baseUrl: model.baseUrl, apiKey: "test-key", model: "fake" },
    onRun: (r: RunHandle) => (run = r),
  });
  try {
    const user = await clients.connect({ clientId: "user" });
    const reader = new Reader(await user.attach(session, { from: "start" }));
    await waitFor(() => reader.lives === 1, "live");
    // As a user would: wait until the agent is present.
    await waitFor(
      async () => (await user.presenceGet(session)).some((m) => m.client_id === "example-agent"),
      "the agent present",
    );
    await user.createMessage(session, "user-input", "Tell me a long story");
    await waitFor(
      () => model.chunksSent >= 5 && reader.events.some((e) => e.action === "message.append"),
      "the answer streaming",
    );
    const start = reader.events.find((e) => e.action === "run.start");
    const runId = (start?.data as { run_id: string }).run_id;
    await user.cancel(session, runId);
    await reader.until((r) => runEnds(r.events).length === 1, "run.end");
    assert.equal(runEnds(reader.events)[0]?.["status"], "cancelled");
    assert.equal(run?.signal.aborted, true, "the agent's signal aborted");
    await waitFor(() => model.aborted, "the model call aborted");
    assert.equal(model.finished, false);
    assert.ok(model.chunksSent < 1000, `the stream stopped early (${model.chunksSent} chunks)`);
    assert.equal(model.requests, 1);
    const answer = reader.sub.messages.find((m) => m.name === "response");
    assert.ok(
      typeof answer?.data === "string" && answer.data.startsWith("tok0 tok1 tok2 "),
      `answer: ${JSON.stringify(answer?.data)}`,
    );
  } finally {
    await agent.stop();
    await model.stop();
  }
});

test("a cancel sent before the run exists is held and aborts the run right after it starts; steers stream in order", async () => {
  const session = "chat:held";
  const agent = await clients.connect({ clientId: "agent" });
  const user = await clients.connect({ clientId: "user" });
  await user.cancel(session, "run-later");
  const run = await agent.startRun(session, { runId: "run-later" });
  await waitFor(() => run.signal.aborted, "the held cancel");
  const cancel = run.signal.reason as Cancel;
  assert.deepEqual([cancel.reason, cancel.by], ["held", "user"]);
  await run.end("cancelled", "cancelled before it began");

  const steered = await agent.startRun(session, { runId: "run-steered" });
  for (const tone of ["shorter", "friendlier", "in French"]) await user.steer(session, "run-steered", { tone });
  await user.cancel(session, "run-steered");
  const tones: unknown[] = [];
  for await (const steer of steered.steers()) tones.push(steer.data);
  assert.deepEqual(tones, [{ tone: "shorter" }, { tone: "friendlier" }, { tone: "in French" }]);
  assert.equal(steered.cancelled?.reason, "requested");
  await steered.end("cancelled");
});

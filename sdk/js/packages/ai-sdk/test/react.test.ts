// The React example (examples/react-chat: useChat on @mooring/ai-sdk), built with Vite and
// run in two headless Chromium pages (two devices) against a real `mooring serve` and the
// example Node agent speaking UI chunks to a local model: a question from one page streams
// live in both; Stop on the other cancels the run (the model request is aborted); both show
// the same answer, and a reload hydrates it again.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { extname, join } from "node:path";
import { after, before, test } from "node:test";
import { pathToFileURL } from "node:url";

import { MooringChatTransport } from "@mooring/ai-sdk";
import { MooringClient, type RunHandle } from "@mooring/client";
import { FakeModel, MooringServer, REPO_ROOT, waitFor } from "@mooring/test-support";
import { chromium, type Browser, type Page } from "playwright-core";

const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";
const EXAMPLE = join(REPO_ROOT, "examples/react-chat");
const TYPES: Record<string, string> = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" };

let mooring: MooringServer;
let model: FakeModel;
let site: Server;
let siteUrl = "";
let browser: Browser;
let outDir = "";
let agent: { stop(): Promise<void> } | undefined;
const runs: RunHandle[] = [];
const opened: MooringClient[] = [];

/** `vite build` of the example into a temporary folder: the page a user would deploy. */
function buildExample(): string {
  const vite = join(EXAMPLE, "node_modules/vite/bin/vite.js");
  if (!existsSync(vite)) throw new Error(`${vite} not found: run \`npm ci\` in examples/react-chat`);
  const dir = mkdtempSync(join(tmpdir(), "mooring-react-"));
  const built = spawnSync(process.execPath, [vite, "build", "--outDir", dir, "--emptyOutDir", "--logLevel", "error"], {
    cwd: EXAMPLE,
    encoding: "utf8",
  });
  if (built.status !== 0) throw new Error(`vite build failed:\n${built.stdout}\n${built.stderr}`);
  return dir;
}

function serve(dir: string): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const file = join(dir, path === "/" ? "index.html" : path);
    if (!file.startsWith(dir) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" }).end(readFileSync(file));
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      resolve({
        server,
        url: `http://127.0.0.1:${typeof address === "object" && address !== null ? address.port : 0}/`,
      });
    }),
  );
}

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install Debian's chromium or set CHROMIUM`);
  outDir = buildExample();
  ({ server: site, url: siteUrl } = await serve(outDir));
  mooring = await MooringServer.start();
  model = await new FakeModel(100_000, 20).start();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
  await agent?.stop();
  for (const c of opened) c.close();
  site?.close();
  await model?.stop();
  await mooring?.stop();
  if (outDir !== "") rmSync(outDir, { recursive: true, force: true });
});

async function open(session: string): Promise<Page> {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${siteUrl}?chat=${encodeURIComponent(session)}&mooring=${encodeURIComponent(mooring.wsUrl)}`);
  await page.waitForSelector("main[data-ready=true]");
  return page;
}

const answerText = (page: Page): Promise<string> =>
  page
    .locator("li[data-role=assistant] .text")
    .last()
    .innerText({ timeout: 1000 })
    .catch(() => "");

test("two pages on one chat: one asks, both stream, the other stops, both end the same, a reload hydrates", async () => {
  const session = "web:react";
  const { startAgent } = (await import(pathToFileURL(join(REPO_ROOT, "examples/node-agent/agent.mjs")).href)) as {
    startAgent: (options: Record<string, unknown>) => Promise<{ stop(): Promise<void> }>;
  };
  agent = await startAgent({
    url: mooring.wsUrl,
    session,
    format: "ui",
    model: { baseUrl: model.baseUrl, model: "fake" },
    onRun: (run: RunHandle) => runs.push(run),
  });
  const laptop = await open(session);
  const phone = await open(session);

  await laptop.fill("input[name=prompt]", "Why is the sky blue?");
  await laptop.click("button[type=submit]");
  for (const page of [laptop, phone]) {
    await waitFor(async () => (await answerText(page)).includes("tok3 "), "the answer streaming in both pages");
  }
  assert.equal(await phone.locator("li[data-role=user] .text").innerText(), "Why is the sky blue?");
  assert.equal(await phone.getAttribute("main", "data-status"), "streaming");

  await phone.click("button[name=stop]");
  await waitFor(() => runs[0]?.signal.aborted === true, "the agent hearing the cancel");
  await waitFor(() => model.aborted, "the model request aborted");

  const client = await MooringClient.connect({ url: mooring.wsUrl, clientId: "checker" });
  opened.push(client);
  const checker = new MooringChatTransport({ client });
  await waitFor(async () => (await checker.activeRun(session)) === undefined, "the run ended");
  const history = await checker.history(session);
  const final = history[1]?.parts.flatMap((p) => (p.type === "text" ? [p.text] : [])).join("") ?? "";
  assert.ok(final.startsWith("tok0 tok1 tok2 tok3 "), final);
  for (const page of [laptop, phone]) {
    await waitFor(async () => (await answerText(page)) === final.trim(), "each page showing the session's answer");
    await waitFor(async () => (await page.getAttribute("main", "data-status")) === "ready", "each page ready");
  }

  await laptop.reload();
  await laptop.waitForSelector("main[data-ready=true]");
  await waitFor(async () => (await answerText(laptop)) === final.trim(), "the reloaded page hydrated");
  assert.equal(await laptop.locator("li").count(), 2);
});

// The browser bundle in a real headless Chromium, against a real `mooring serve` with auth:
// the token travels as the `mooring.bearer.` subprotocol (a page can set no header on a
// WebSocket), messages fold whole, and after a reload the page resumes from the place
// `localStorage` kept, replaying only what it missed.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";
import { chromium, type Browser } from "playwright-core";

import type { MessageView } from "@mooring/client";

import { Clients, comparable, serverView } from "./support/clients.js";
import { MooringServer } from "@mooring/test-support";

const SECRET = "a-browser-test-secret-of-32-bytes!!!";
const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";

function token(clientId: string): string {
  const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString("base64url");
  const claims = {
    client_id: clientId,
    exp: Math.floor(Date.now() / 1000) + 600,
    caps: { "web:**": ["subscribe", "publish", "presence"] },
  };
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

/** Serves a blank page and the browser bundle of the client, as an application would. */
async function servePage(): Promise<{ server: Server; url: string }> {
  const bundle = await build({
    entryPoints: [fileURLToPath(new URL("../dist/index.js", import.meta.url))],
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    write: false,
  });
  const code = bundle.outputFiles[0]?.text ?? "";
  const server = createServer((req, res) => {
    if (req.url === "/mooring.js") {
      res.writeHead(200, { "content-type": "text/javascript" }).end(code);
    } else {
      res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>mooring</title>");
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  return { server, url: `http://127.0.0.1:${port}/` };
}

let mooring: MooringServer;
let clients: Clients;
let page: { server: Server; url: string };
let browser: Browser;

before(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} not found: install Debian's chromium (scripts/test does) or set CHROMIUM`);
  mooring = await MooringServer.start(["--jwt-secret", SECRET]);
  clients = new Clients(mooring);
  page = await servePage();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  page?.server.close();
  clients?.closeAll();
  await mooring?.stop();
});

/** What the page reports after attaching and reading until `serial`. */
interface PageResult {
  messages: MessageView[];
  serials: number[];
  clientId: string;
  saved: string | null;
}

/** Runs in the page: connect with a token callback, attach with localStorage, publish if asked, read until `until`. */
const inPage = async (args: {
  url: string;
  token: string;
  session: string;
  publish: boolean;
  until: number;
}): Promise<PageResult> => {
  const m = (await import(`${location.origin}/mooring.js`)) as typeof import("@mooring/client");
  const client = await m.MooringClient.connect({
    url: args.url,
    token: () => args.token,
    storage: new m.WebStorageAdapter(localStorage),
  });
  const sub = await client.attach(args.session);
  const serials: number[] = [];
  let until = args.until;
  if (args.publish) {
    await client.publish(args.session, [{ name: "user-input", data: "from a browser" }]);
    const answer = await client.createMessage(args.session, "response", "");
    for (const t of ["Rayleigh", " scattering"]) await client.append(args.session, answer, t);
    until = await client.sendEvent(args.session, "done", null);
  }
  for await (const item of sub) {
    if (item.type === "event") serials.push(item.event.serial);
    if (item.type === "event" && item.event.serial >= until) break;
    if (item.type === "live" && item.serial >= until) break;
  }
  // Let the adapter's save (queued per burst of items) run.
  await new Promise((resolve) => setTimeout(resolve, 0));
  const status = client.status;
  const result = {
    messages: sub.messages,
    serials,
    clientId: status.state === "connected" ? status.clientId : "",
    saved: localStorage.getItem(`mooring:${args.session}`),
  };
  client.close();
  return result;
};

test("in a real browser: a token as subprotocol, whole messages, and a reload that resumes from localStorage", async () => {
  const session = "web:browser";
  const tab = await browser.newPage();
  await tab.goto(page.url);
  const args = { url: mooring.wsUrl, token: token("carol"), session, publish: true, until: 0 };
  const first = await tab.evaluate(inPage, args);
  assert.equal(first.clientId, "carol", "the identity of the token");
  const view = await serverView(await clients.connect({ token: token("node") }), session);
  assert.deepEqual(first.messages, view);
  assert.deepEqual(
    view.map((m) => m.data),
    ["from a browser", "Rayleigh scattering"],
  );
  assert.ok(
    first.saved !== null && JSON.parse(first.saved).position.serial === first.serials.at(-1),
    `saved: ${first.saved}`,
  );

  // While the page is away, the answer grows.
  const node = await clients.connect({ token: token("node") });
  const answer = view[1]?.serial ?? 0;
  const appended = await node.append(session, answer, " of sunlight");
  await tab.reload();
  const second = await tab.evaluate(inPage, { ...args, publish: false, until: appended });
  assert.deepEqual(second.serials, [appended], "only what was missed is replayed");
  assert.deepEqual(
    comparable(second.messages),
    comparable(await serverView(await clients.connect({ token: token("node") }), session)),
  );
  await tab.close();
});

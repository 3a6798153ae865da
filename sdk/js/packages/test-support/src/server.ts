// A real `mooring serve` child process for the tests: a free port on loopback, a temporary
// data directory, the embedded engine. It can be SIGKILLed and started again on the same data
// and the same port, as the Rust testkit's MooringProcess does.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository's root, from sdk/js/packages/test-support/dist. */
export const REPO_ROOT = resolve(here, "../../../../..");

/** The binary `cargo build -p mooring` made (`MOORING_BIN` overrides). */
export function mooringBinary(): string {
  const explicit = process.env["MOORING_BIN"];
  if (explicit !== undefined) return explicit;
  const target = process.env["CARGO_TARGET_DIR"] ?? join(REPO_ROOT, "target");
  const bin = join(target, "debug", "mooring");
  if (!existsSync(bin)) throw new Error(`${bin} not found: run \`cargo build -p mooring\` first (or set MOORING_BIN)`);
  return bin;
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address !== null ? resolvePort(address.port) : reject(new Error("no port")),
      );
    });
  });
}

export class MooringServer {
  readonly dataDir = mkdtempSync(join(tmpdir(), "mooring-js-"));
  #child: ChildProcess | undefined;
  #output: string[] = [];
  port = 0;

  constructor(readonly args: string[] = []) {}

  static async start(args: string[] = []): Promise<MooringServer> {
    const server = new MooringServer(args);
    server.port = await freePort();
    await server.#spawn();
    return server;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/v1/ws`;
  }

  get httpUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The last lines the server printed, for failure messages. */
  get output(): string {
    return this.#output.join("");
  }

  async #spawn(): Promise<void> {
    const child = spawn(
      mooringBinary(),
      [
        "serve",
        "--listen",
        `127.0.0.1:${this.port}`,
        "--data-dir",
        join(this.dataDir, "data"),
        "--engine",
        "embedded",
        ...this.args,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    this.#child = child;
    const keep = (chunk: Buffer): void => {
      this.#output.push(chunk.toString());
      if (this.#output.length > 200) this.#output.shift();
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    let exited = false;
    child.once("exit", () => (exited = true));
    for (let i = 0; i < 300; i++) {
      if (exited) throw new Error(`mooring serve exited before it was ready:\n${this.output}`);
      try {
        const res = await fetch(`${this.httpUrl}/healthz`);
        if (res.ok) return;
      } catch {
        // Not listening yet.
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`mooring serve not ready after 15 s:\n${this.output}`);
  }

  /** SIGKILL: no shutdown hook runs, as in a crash. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    this.#child = undefined;
  }

  /** SIGSTOP: the process stays, its sockets stay open, and it says nothing (a frozen node). */
  freeze(): void {
    this.#child?.kill("SIGSTOP");
  }

  /** SIGCONT after {@link freeze}. */
  thaw(): void {
    this.#child?.kill("SIGCONT");
  }

  /** Kills the server and starts it again on the same data and port. */
  async restart(): Promise<void> {
    await this.kill();
    await this.#spawn();
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Waits until `check` holds, polling; fails with `what` after `timeoutMs` (a hang guard, never a timing assertion). */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

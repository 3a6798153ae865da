// A local OpenAI-compatible model for the tests: a real HTTP server whose streaming chat
// completions send one SSE chunk every `intervalMs`, and which records whether the client
// hung up before the stream was done.

import { createServer, type Server } from "node:http";

export class FakeModel {
  requests = 0;
  chunksSent = 0;
  /** The client closed the request before the stream was done. */
  aborted = false;
  finished = false;
  readonly #server: Server;
  port = 0;

  constructor(
    readonly chunks: number,
    readonly intervalMs: number,
  ) {
    this.#server = createServer((req, res) => {
      if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
        res.writeHead(404).end();
        return;
      }
      this.requests += 1;
      req.resume();
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      let sent = 0;
      const timer = setInterval(() => {
        if (sent === this.chunks) {
          clearInterval(timer);
          // As a real server does: the last chunk says why the answer ended.
          const last = { choices: [{ index: 0, delta: {}, finish_reason: "stop" }] };
          res.end(`data: ${JSON.stringify(last)}\n\ndata: [DONE]\n\n`, () => (this.finished = true));
          return;
        }
        const chunk = { choices: [{ index: 0, delta: { content: `tok${sent} ` } }] };
        res.write(`data: ${JSON.stringify(chunk)}\n\n`);
        sent += 1;
        this.chunksSent = sent;
      }, this.intervalMs);
      res.on("close", () => {
        clearInterval(timer);
        if (!res.writableFinished) this.aborted = true;
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    const address = this.#server.address();
    this.port = typeof address === "object" && address !== null ? address.port : 0;
    return this;
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}/v1`;
  }

  stop(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

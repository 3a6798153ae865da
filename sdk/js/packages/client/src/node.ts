// @mooring/client for Node: the same API, with the `ws` package as the WebSocket where the
// platform has none (Node 20; Node 22 has a global WebSocket and uses it).

import WebSocket from "ws";
import { setFallbackWebSocket } from "./client.js";
import type { WebSocketConstructor } from "./connection.js";

setFallbackWebSocket(WebSocket as unknown as WebSocketConstructor);

export * from "./index.js";

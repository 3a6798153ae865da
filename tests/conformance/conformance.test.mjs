// The peer suite, pointed at the node named by DS_URL. The long-poll timeout must match the
// node's --long-poll-timeout-ms (the suite's own tests wait that long plus a second).
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

runConformanceTests({
  baseUrl: process.env.DS_URL,
  longPollTimeoutMs: Number(process.env.DS_LONG_POLL_MS ?? 500),
  subscriptions: process.env.DS_SUBSCRIPTIONS === "1",
})

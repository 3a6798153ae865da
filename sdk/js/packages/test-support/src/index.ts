// What the SDK's tests share: a real `mooring serve`, and a local OpenAI-compatible model.

export { MooringServer, REPO_ROOT, freePort, mooringBinary, waitFor } from "./server.js";
export { FakeModel } from "./fake-model.js";

// The browser entry bundles without `ws` or any other dependency (the Node entry adds `ws`
// only where the platform has no WebSocket).

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import { build } from "esbuild";

test("the browser bundle holds only the client's own modules", async () => {
  const result = await build({
    entryPoints: [fileURLToPath(new URL("../dist/index.js", import.meta.url))],
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    write: false,
    metafile: true,
  });
  const inputs = Object.keys(result.metafile.inputs);
  assert.deepEqual(
    inputs.filter((i) => i.includes("node_modules")),
    [],
  );
  assert.ok(inputs.some((i) => i.endsWith("dist/client.js")));
  assert.ok(!inputs.some((i) => i.endsWith("dist/node.js")));
});

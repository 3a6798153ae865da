// The browser bundle's size: the browser entry bundled with esbuild, minified, then gzipped.
// Run with `npm run size` (after `npm run build`).

import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const result = await build({
  entryPoints: [new URL("../dist/index.js", import.meta.url).pathname],
  bundle: true,
  minify: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  write: false,
  metafile: true,
});
const code = result.outputFiles[0].contents;
const inputs = Object.keys(result.metafile.inputs);
console.log(
  `browser bundle: ${code.length} bytes minified, ${gzipSync(code, { level: 9 }).length} bytes minified + gzipped, from ${inputs.length} modules`,
);
if (inputs.some((i) => i.includes("node_modules"))) {
  console.error(
    `the browser bundle pulls in a dependency: ${inputs.filter((i) => i.includes("node_modules")).join(", ")}`,
  );
  process.exit(1);
}

// The page imports @mooring/ai-sdk from the repository: `ai` and the client must be the
// page's own single copies, whichever folder a module is linked from.
import { defineConfig } from "vite";

export default defineConfig({
  resolve: { dedupe: ["ai", "@mooring/client", "react", "react-dom"] },
  esbuild: { jsx: "automatic" },
});

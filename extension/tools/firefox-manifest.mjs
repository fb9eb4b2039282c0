// Writes the Firefox manifest (dist/firefox/manifest.json) from the Chromium one:
// Firefox runs MV3 backgrounds as event pages (background.scripts), and wants an add-on
// id and a declaration of the data the add-on sends.
// Usage: node tools/firefox-manifest.mjs [out-dir]   (copies the extension files too)
import { cpSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

export function firefoxManifest(chromium) {
  const manifest = structuredClone(chromium);
  manifest.background = { scripts: [chromium.background.service_worker], type: "module" };
  manifest.browser_specific_settings = {
    gecko: {
      id: "paperfeed@paperfeed.dev",
      strict_min_version: "128.0",
      data_collection_permissions: { required: ["browsingActivity"], optional: [] },
    },
  };
  return manifest;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = process.argv[2] ?? join(root, "dist", "firefox");
  mkdirSync(out, { recursive: true });
  for (const part of ["background.js", "lib", "popup", "options", "content", "icons"]) {
    cpSync(join(root, part), join(out, part), { recursive: true });
  }
  const chromium = JSON.parse(readFileSync(join(root, "manifest.json"), "utf8"));
  writeFileSync(join(out, "manifest.json"), `${JSON.stringify(firefoxManifest(chromium), null, 2)}\n`);
  console.log(`Firefox build in ${out}`);
}

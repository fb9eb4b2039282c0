// Options: "Bring your library" (issue 26). A file or pasted text becomes the reader's
// saved papers at the service; the answer says what matched and what could not be read.
import * as api from "../lib/api.js";
import {
  IMPORT_MAX_BYTES,
  describeImport,
  describeImportError,
  importLibrary,
} from "../lib/library-import.js";
import { read, withInstallLock } from "../lib/settings.js";

const storage = chrome.storage.local;
const form = document.getElementById("import");
const fileInput = document.getElementById("import-file");
const textInput = document.getElementById("import-text");
const state = document.getElementById("import-state");
const details = document.getElementById("import-details");
const problems = document.getElementById("import-problems");
const button = form.querySelector("button[type=submit]");

function show(summary, more = "", lines = []) {
  state.textContent = summary;
  details.textContent = more;
  problems.replaceChildren(
    ...lines.map((line) => Object.assign(document.createElement("li"), { textContent: line })),
  );
}

async function installed() {
  const s = await read(storage, ["backendUrl", "token"]);
  if (s.token) return s;
  const install = await chrome.runtime.sendMessage({ kind: "install" });
  if (install?.error) throw new api.ApiError(install.error);
  return { backendUrl: s.backendUrl, token: install.token };
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = fileInput.files[0] ?? null;
  const text = textInput.value;
  const body = file ?? (text.trim() ? text : null);
  if (!body) {
    show("Choose a file, or paste BibTeX, RIS, CSL-JSON or arXiv ids.");
    return;
  }
  const size = file ? file.size : new Blob([text]).size;
  if (size > IMPORT_MAX_BYTES) {
    show(`That is ${(size / 1024 / 1024).toFixed(1)} MB: paperfeed takes up to 2 MB a file. Split it and import each part.`);
    return;
  }
  button.disabled = true;
  show(file ? `Importing ${file.name}…` : "Importing…");
  try {
    const { backendUrl, token } = await installed();
    const result = await importLibrary(backendUrl, token, body, form.elements.format.value);
    if (result.saved) {
      // The popup reads the new feed and library at its next opening.
      await withInstallLock(() => storage.remove(["cachedFeed", "cachedSaved"]));
      form.reset();
    }
    const described = describeImport(result);
    show(described.summary, described.details, described.problems);
  } catch (error) {
    show(describeImportError(error, api.KINDS));
  } finally {
    button.disabled = false;
  }
});

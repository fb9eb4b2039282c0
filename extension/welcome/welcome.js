// First run (issue 26, item 3): import a file, paste arXiv ids, or pick topics to follow;
// skipping is one click. After any of them the popup's first feed is the reader's: the
// cached feed is dropped, and the service ranks the next one with the new saves or
// follows. Every request goes through lib/api.js.
import * as api from "../lib/api.js";
import { describeImport, describeImportError, importLibrary } from "../lib/library-import.js";
import { read, withInstallLock } from "../lib/settings.js";

const storage = chrome.storage.local;
const state = document.getElementById("welcome-state");
const topicList = document.getElementById("welcome-topics");
const TOPICS_SHOWN = 12;

const say = (text) => {
  state.textContent = text;
};

async function installed() {
  const s = await read(storage, ["backendUrl", "token"]);
  if (s.token) return s;
  const install = await chrome.runtime.sendMessage({ kind: "install" });
  if (install?.error) throw new api.ApiError(install.error);
  return { backendUrl: s.backendUrl, token: install.token };
}

// Done with the first run: the popup reads a fresh feed at its next opening.
async function done(text) {
  await withInstallLock(() => storage.remove(["cachedFeed", "cachedSaved"]));
  await storage.set({ firstRunDone: Date.now() });
  say(text);
}

async function importBody(body, format) {
  try {
    const { backendUrl, token } = await installed();
    const result = await importLibrary(backendUrl, token, body, format);
    const described = describeImport(result);
    if (result.saved || result.unchanged) {
      await done(`${described.summary} Open paperfeed's button to see your feed.`);
    } else {
      say(described.summary);
    }
  } catch (error) {
    say(describeImportError(error, api.KINDS));
  }
}

document.getElementById("welcome-import-file").addEventListener("click", () => {
  const file = document.getElementById("welcome-file").files[0];
  if (!file) return say("Choose a file first.");
  say(`Importing ${file.name}…`);
  return importBody(file, "");
});

document.getElementById("welcome-import-ids").addEventListener("click", () => {
  const text = document.getElementById("welcome-ids").value;
  if (!text.trim()) return say("Paste arXiv ids or links first.");
  say("Importing…");
  return importBody(text, "arxiv-ids");
});

function topicItem(topic) {
  const item = document.createElement("li");
  const box = Object.assign(document.createElement("input"), { type: "checkbox", value: topic.id });
  const label = document.createElement("label");
  label.append(box, ` ${topic.name}`);
  const examples = document.createElement("div");
  examples.className = "examples";
  examples.textContent = topic.examples.map((e) => e.title).join(" · ");
  item.append(label, examples);
  return item;
}

async function loadTopics() {
  try {
    const { backendUrl } = await read(storage, ["backendUrl"]);
    const { topics } = await api.getTopics(backendUrl);
    if (!topics.length) {
      topicList.replaceChildren(Object.assign(document.createElement("li"), {
        textContent: "No topics yet: the catalog is still small.",
      }));
      return;
    }
    topicList.replaceChildren(...topics.slice(0, TOPICS_SHOWN).map(topicItem));
  } catch (error) {
    topicList.replaceChildren(Object.assign(document.createElement("li"), {
      textContent: api.KINDS[error.kind] ?? "The topics could not be read.",
    }));
  }
}

document.getElementById("welcome-follow").addEventListener("click", async () => {
  const chosen = [...topicList.querySelectorAll("input:checked")].map((box) => box.value);
  if (!chosen.length) return say("Tick one topic or more first.");
  try {
    const { backendUrl, token } = await installed();
    for (const topic of chosen) await api.follow(backendUrl, token, { topic });
    const n = chosen.length;
    await done(`Following ${n} topic${n === 1 ? "" : "s"}. Open paperfeed's button to see your feed.`);
  } catch (error) {
    say(api.KINDS[error.kind] ?? "Something went wrong.");
  }
});

document.getElementById("welcome-skip").addEventListener("click", async () => {
  await storage.set({ firstRunDone: Date.now() });
  window.close();
});

loadTopics();

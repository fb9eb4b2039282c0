// Options: the service URL, tracking switches, and the reader's data.
import * as api from "../lib/api.js";
import { eraseInstall, withQueueLock } from "../lib/queue.js";
import {
  INSTALL_KEYS, keepForReader, READER_CACHES, read, serviceOrigin, withInstallLock,
} from "../lib/settings.js";

const storage = chrome.storage.local;
const status = document.getElementById("status");
const say = (text) => { status.textContent = text; };
const unlinkButton = document.getElementById("pairing-unlink");

async function fill() {
  const s = await read(storage, ["backendUrl", "paused", "sites"]);
  document.getElementById("backend").value = s.backendUrl;
  document.getElementById("paused").checked = s.paused;
  document.getElementById("site-arxiv").checked = s.sites.arxiv !== false;
  document.getElementById("site-huggingface").checked = s.sites.huggingface !== false;
}

document.getElementById("settings").addEventListener("submit", async (event) => {
  event.preventDefault();
  const backend = serviceOrigin(document.getElementById("backend").value);
  if (!backend) {
    saved(NOT_AN_ADDRESS, false);
    return;
  }
  const origin = `${backend}/*`;
  const granted = await chrome.permissions.contains({ origins: [origin] })
    || await chrome.permissions.request({ origins: [origin] }).catch(() => false);
  if (!granted) {
    saved(`paperfeed needs permission to reach ${backend}.`, false);
    return;
  }
  document.getElementById("backend").value = backend;
  const changes = {
    backendUrl: backend,
    paused: document.getElementById("paused").checked,
    sites: {
      arxiv: document.getElementById("site-arxiv").checked,
      huggingface: document.getElementById("site-huggingface").checked,
    },
  };
  // After a registration under way (it belongs to the service it started with).
  await withInstallLock(async () => {
    const previous = await read(storage, ["backendUrl"]);
    await storage.set(changes);
    // Another service knows nothing of this install: register there on next use.
    if (previous.backendUrl !== backend) {
      await storage.remove(INSTALL_KEYS);
    }
  });
  saved("Saved.", true);
  showPairing();
});

const NOT_AN_ADDRESS =
  "That is not a web address (for example http://127.0.0.1:8000 or 127.0.0.1:8000).";

// The settings' answer, beside their Save button (not at the foot of the page).
function saved(text, ok) {
  const answer = document.getElementById("settings-state");
  answer.textContent = text;
  answer.dataset.ok = String(ok);
}

// Whether a paperfeed service answers at the address typed (saved or not yet).
document.getElementById("test-connection").addEventListener("click", async () => {
  const answer = document.getElementById("connection");
  const base = serviceOrigin(document.getElementById("backend").value);
  if (!base) {
    answer.textContent = NOT_AN_ADDRESS;
    answer.dataset.ok = "false";
    return;
  }
  answer.textContent = `Trying ${base}…`;
  try {
    const meta = await api.getMeta(base);
    answer.textContent = `Connected: paperfeed ${meta.version} answers at ${base}.`;
    answer.dataset.ok = "true";
  } catch (error) {
    answer.dataset.ok = "false";
    answer.textContent = error.kind === "offline"
      ? `Nothing answers at ${base}. Is the service running (make run), and on this port?`
      : `${base} answered, but not as a paperfeed service: ${api.KINDS[error.kind] ?? error.message}`;
  }
});

document.getElementById("export").addEventListener("click", async () => {
  const s = await read(storage, ["backendUrl", "token"]);
  if (!s.token) return say("Nothing kept yet: this browser has not sent anything.");
  try {
    const data = await api.exportData(s.backendUrl, s.token);
    const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
    const link = Object.assign(document.createElement("a"), {
      href: URL.createObjectURL(blob), download: "paperfeed-export.json",
    });
    link.click();
    say(`Exported ${data.events.length} events about ${Object.keys(data.papers).length} papers.`);
  } catch (error) {
    say(api.KINDS[error.kind] ?? "Export failed.");
  }
});

document.getElementById("delete").addEventListener("click", async () => {
  const question =
    "Delete everything paperfeed keeps about you: this browser's history and library, " +
    "and those of every browser linked to it?";
  if (!confirm(question)) return;
  const s = await read(storage, ["backendUrl", "token"]);
  let already = false;
  try {
    if (s.token) await api.deleteData(s.backendUrl, s.token);
  } catch (error) {
    // Only the service's answer says the data is gone: on any failure the token stays,
    // and asking again finishes the erasure (the service resumes it where it stopped).
    // A token it no longer knows opens nothing: it was erased before.
    if (error.kind !== "unauthorized") {
      return say(`${api.KINDS[error.kind] ?? "Delete failed."} Nothing was confirmed deleted: try again.`);
    }
    already = true;
  }
  await withInstallLock(() => eraseInstall(storage));
  unlinkButton.hidden = true;
  say(
    already
      ? "The service no longer knows this browser: its data was already erased. paperfeed starts afresh the next time it is used."
      : "Deleted at the service, with every linked browser. paperfeed starts afresh the next time it is used.",
  );
});

// --- e-mail digest ---------------------------------------------------------------

const digestState = document.getElementById("digest-state");
const stopButton = document.getElementById("digest-stop");

export function describeDigest(status) {
  if (!status) return "Not subscribed.";
  if (!status.confirmed) {
    return `Waiting for your confirmation: open the link we sent to ${status.email}.`;
  }
  const papers = `${status.size} paper${status.size === 1 ? "" : "s"}`;
  return `Confirmed: a ${status.frequency} digest of ${papers} goes to ${status.email}.`;
}

async function install() {
  const s = await read(storage, ["backendUrl", "token"]);
  if (s.token) return s;
  const answer = await chrome.runtime.sendMessage({ kind: "install" });
  if (answer?.error) throw Object.assign(new Error(answer.error), { kind: answer.error });
  return answer;
}

async function showDigest() {
  const s = await read(storage, ["backendUrl", "token"]);
  // A service without e-mail says so in its public meta: no form to fill in vain.
  const meta = await api.getMeta(s.backendUrl).catch(() => null);
  if (meta && !meta.digests) {
    document.getElementById("digest").hidden = true;
    digestState.textContent = "This paperfeed service does not send e-mail.";
    return;
  }
  let status = null;
  if (s.token) {
    try {
      status = await api.getDigest(s.backendUrl, s.token);
    } catch (error) {
      if (error.status !== 404) {
        digestState.textContent = api.KINDS[error.kind] ?? "The digest state is unknown.";
        return;
      }
    }
  }
  if (status) {
    document.getElementById("digest-email").value = status.email;
    document.getElementById("digest-frequency").value = status.frequency;
    document.getElementById("digest-size").value = String(status.size);
  }
  stopButton.hidden = !status;
  digestState.textContent = describeDigest(status);
}

document.getElementById("digest").addEventListener("submit", async (event) => {
  event.preventDefault();
  const choice = {
    email: document.getElementById("digest-email").value.trim(),
    frequency: document.getElementById("digest-frequency").value,
    size: Number(document.getElementById("digest-size").value),
  };
  try {
    const { backendUrl, token } = await install();
    const status = await api.putDigest(backendUrl, token, choice);
    stopButton.hidden = false;
    digestState.textContent = describeDigest(status);
  } catch (error) {
    digestState.textContent = error.status === 403
      ? "This paperfeed service does not send e-mail."
      : (api.KINDS[error.kind] ?? "Subscribing failed.");
  }
});

stopButton.addEventListener("click", async () => {
  const s = await read(storage, ["backendUrl", "token"]);
  try {
    if (s.token) await api.deleteDigest(s.backendUrl, s.token);
    stopButton.hidden = true;
    digestState.textContent = "Stopped. paperfeed forgot the address.";
  } catch (error) {
    digestState.textContent = api.KINDS[error.kind] ?? "Stopping failed.";
  }
});

// The confirmation happens in the mail program: look again when the page is shown.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") showDigest();
});

fill();
showDigest();

// --- hidden (dismissed) papers ------------------------------------------------------

const hiddenList = document.getElementById("hidden-list");
const hiddenState = document.getElementById("hidden-state");
const hiddenMore = document.getElementById("hidden-more");
const HIDDEN_PAGE = 100;
let hiddenNext = null;

function showHidden(items) {
  hiddenList.replaceChildren(...hiddenRows(items));
}

// When each paper was undone in this page: a list asked for before that (its answer may
// come after) must not put the paper back in the list kept for offline use.
const undoneAt = new Map();

function hiddenRows(items) {
  return items.map((item) => {
    const row = document.createElement("li");
    row.dataset.paperId = item.paper.id;
    const undo = Object.assign(document.createElement("button"), {
      type: "button", textContent: "Undo",
    });
    undo.addEventListener("click", async () => {
      await chrome.runtime.sendMessage({
        kind: "track", site: "options", events: [{ type: "undismiss", paper_id: item.paper.id }],
      });
      row.remove();
      undoneAt.set(item.paper.id, Date.now());
      // In turn: two quick Undos would each write back the list the other read.
      await withInstallLock(async () => {
        const s = await read(storage, ["cachedHidden"]);
        if (s.cachedHidden) {
          const items = s.cachedHidden.items.filter((i) => i.paper.id !== item.paper.id);
          await storage.set({ cachedHidden: { ...s.cachedHidden, items } });
        }
      });
      hiddenState.textContent = `“${item.paper.title || item.paper.id}” is back in your feed.`;
    });
    row.append(`${item.paper.title || item.paper.id} `, undo);
    return row;
  });
}

// A long list comes a page at a time.
function offerMore(next) {
  hiddenNext = next ?? null;
  hiddenMore.hidden = !hiddenNext;
}

hiddenMore.addEventListener("click", async () => {
  const s = await read(storage, ["backendUrl", "token"]);
  hiddenMore.disabled = true;
  try {
    const page = await api.getLibrary(s.backendUrl, s.token, "dismissed", HIDDEN_PAGE, hiddenNext);
    hiddenList.append(...hiddenRows(page.items));
    offerMore(page.next);
  } catch (error) {
    hiddenState.textContent = error.kind === "offline"
      ? "Offline: the rest of the list needs the service."
      : api.KINDS[error.kind] ?? "The hidden papers could not be read.";
  } finally {
    hiddenMore.disabled = false;
  }
});

async function loadHidden() {
  const s = await read(storage, ["backendUrl", "token", "userId", "cachedHidden"]);
  if (!s.token) {
    hiddenState.textContent = "Nothing hidden.";
    return;
  }
  try {
    const asked = Date.now();
    const dismissed = await api.getLibrary(s.backendUrl, s.token, "dismissed", HIDDEN_PAGE);
    const kept = dismissed.items.filter((i) => !(undoneAt.get(i.paper.id) >= asked));
    await keepForReader(
      storage, { token: s.token, userId: s.userId }, { cachedHidden: { ...dismissed, items: kept } },
    );
    showHidden(dismissed.items);
    offerMore(dismissed.next);
    hiddenState.textContent = dismissed.items.length ? "" : "Nothing hidden.";
  } catch (error) {
    if (error.kind === "offline" && s.cachedHidden) {
      showHidden(s.cachedHidden.items);
      hiddenState.textContent = "Offline: the list as it was last seen; undo is sent later.";
    } else {
      hiddenState.textContent = api.KINDS[error.kind] ?? "The hidden papers could not be read.";
    }
  }
}

loadHidden();

// --- the same reader on other browsers ----------------------------------------------

const pairingState = document.getElementById("pairing-state");
async function installed() {
  const s = await read(storage, ["backendUrl", "token"]);
  if (s.token) return s;
  const install = await chrome.runtime.sendMessage({ kind: "install" });
  if (install.error) throw new api.ApiError(install.error);
  return { backendUrl: s.backendUrl, token: install.token };
}

document.getElementById("pairing-show").addEventListener("click", async () => {
  try {
    const s = await installed();
    const answer = await api.createPairingCode(s.backendUrl, s.token);
    document.getElementById("pairing-code").textContent = answer.code;
    pairingState.textContent = `Enter it in the other browser within ${Math.round(answer.expires_in / 60)} minutes.`;
  } catch (error) {
    pairingState.textContent = api.KINDS[error.kind] ?? "No code could be made.";
  }
});

document.getElementById("pairing-link").addEventListener("submit", async (event) => {
  event.preventDefault();
  const code = document.getElementById("pairing-input").value;
  try {
    const s = await installed();
    const linked = await api.linkInstall(s.backendUrl, s.token, code);
    // One step: a cached answer of the reader this browser was is never kept after (and
    // nothing, if this install was forgotten while the link was made).
    const kept = await withInstallLock(async () => {
      if ((await read(storage, ["token"])).token !== s.token) return false;
      await storage.remove(READER_CACHES);
      await storage.set({ userId: linked.user_id });
      return true;
    });
    if (!kept) {
      pairingState.dataset.ok = "false";
      pairingState.textContent = "This browser was reset while linking: show a new code and try again.";
      return;
    }
    pairingState.dataset.ok = "true";
    pairingState.textContent = "Linked: this browser now shares that reader's feed and library.";
    unlinkButton.hidden = false;
    document.getElementById("pairing-input").value = "";
    loadHidden();
  } catch (error) {
    pairingState.dataset.ok = "false";
    pairingState.textContent = {
      404: "That code is not valid (a typo, or expired, or used). Show a new one in the other browser.",
      409: error.message.includes("made by this browser")
        ? "That is this browser's own code: enter it in the other browser."
        : "Other browsers are linked to this one: enter this browser's code in them instead.",
    }[error.status] ?? (api.KINDS[error.kind] ?? "Linking failed.");
  }
});

document.getElementById("pairing-unlink").addEventListener("click", async () => {
  const s = await read(storage, ["backendUrl", "token"]);
  if (!s.token) return;
  try {
    await api.unlinkInstall(s.backendUrl, s.token);
  } catch (error) {
    pairingState.textContent = error.kind === "rejected"
      ? "This browser is the reader's first one: nothing to unlink (Delete my data erases the reader)."
      : (api.KINDS[error.kind] ?? "Unlinking failed.");
    return;
  }
  await withInstallLock(() => withQueueLock(() => storage.remove(INSTALL_KEYS)));
  unlinkButton.hidden = true;
  pairingState.textContent = "Unlinked: this browser starts afresh as a reader of its own.";
});

// "Unlink this browser" only for a browser linked to its reader by a code (the reader's
// first browser has nothing to unlink: Delete my data erases the reader).

async function showPairing() {
  const s = await read(storage, ["backendUrl", "token"]);
  if (!s.token) {
    unlinkButton.hidden = true;
    return;
  }
  try {
    const pairing = await api.getPairing(s.backendUrl, s.token);
    unlinkButton.hidden = !pairing.linked;
  } catch {
    unlinkButton.hidden = true; // offline, or unknown to the service: nothing to unlink
  }
}

showPairing();

// On an arXiv abstract/PDF/HTML page or a Hugging Face paper page: one `view` event for
// the visit, with the time the page was visible. A single file (not a module), as
// content scripts declared in a manifest must be.
(() => {
  const ARXIV_ID = /^(\d{4}\.\d{4,5})(v\d+)?$/;
  const MIN_DWELL_MS = 1000;
  const CHECKPOINT_MS = 15_000;

  function paperId() {
    const parts = location.pathname.split("/").filter(Boolean);
    let candidate = null;
    if (location.hostname.endsWith("arxiv.org") && ["abs", "pdf", "html"].includes(parts[0])) {
      candidate = (parts[1] ?? "").replace(/\.pdf$/, "");
    } else if (location.hostname === "huggingface.co" && parts[0] === "papers" && parts.length === 2) {
      candidate = parts[1];
    }
    const match = ARXIV_ID.exec(candidate ?? "");
    return match ? match[1] : null;
  }

  function meta(...names) {
    for (const name of names) {
      const node = document.querySelector(`meta[name="${name}"], meta[property="${name}"]`);
      if (node?.content) return node.content.trim();
    }
    return null;
  }

  const id = paperId();
  if (!id) return;
  const site = location.hostname === "huggingface.co" ? "huggingface" : "arxiv";
  let visibleSince = document.visibilityState === "visible" ? performance.now() : null;
  let dwell = 0;
  let reported = 0;
  let viewSent = false;

  function settle() {
    if (visibleSince !== null) {
      dwell += performance.now() - visibleSince;
      visibleSince = document.visibilityState === "visible" ? performance.now() : null;
    }
  }

  // The visit's `view` goes out at the checkpoint or when the page is first hidden;
  // reading time after that goes out as `read` events carrying only what was not
  // reported yet (hiding the page twice reports nothing twice), so a long read counts.
  function send() {
    settle();
    if (dwell < MIN_DWELL_MS) return;
    const more = Math.round(dwell - reported);
    if (viewSent && more < MIN_DWELL_MS) return;
    const event = viewSent
      ? { type: "read", paper_id: id, dwell_ms: more }
      : {
          type: "view",
          paper_id: id,
          dwell_ms: more,
          // The page's title: a hint the service keeps (cut) for this reader's own
          // library when its catalog lacks the paper. Nothing else of the page is sent.
          title: (meta("citation_title", "og:title") ?? document.title)?.slice(0, 300) ?? undefined,
        };
    viewSent = true;
    reported += more;
    chrome.runtime.sendMessage({ kind: "track", site, events: [event] });
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") send();
    else if (visibleSince === null) visibleSince = performance.now();
  });
  addEventListener("pagehide", send);
  setTimeout(send, CHECKPOINT_MS);
})();

// On the Hugging Face papers lists (the daily list, trending, and the date, week and
// month lists): a small "for you" mark after the title of each paper the reader's feed
// ranks highly. Adds elements only; never moves or removes any. These pages render on
// the client and move between days without reloading, so the marks follow the page:
// every change of the document marks what is new, and a paper is never marked twice.
(() => {
  const ARXIV_ID = /^\/papers\/(\d{4}\.\d{4,5})$/;
  const MARK = "paperfeed-for-you";
  const SETTLE_MS = 150;

  function mark(reasons) {
    for (const link of document.querySelectorAll('a[href^="/papers/"]')) {
      const match = ARXIV_ID.exec(link.getAttribute("href"));
      if (!match || !reasons.has(match[1])) continue;
      if (!link.textContent.trim() || link.querySelector(`.${MARK}`)) continue;
      if (link.parentElement?.querySelector(`.${MARK}`)) continue;
      const badge = document.createElement("span");
      badge.className = MARK;
      badge.textContent = "for you";
      badge.title = reasons.get(match[1]) || "ranked highly in your paperfeed";
      link.insertAdjacentElement("afterend", badge);
    }
  }

  function follow(reasons) {
    let pending = null;
    const observer = new MutationObserver((changes) => {
      // Our own marks change the document too: only others' changes call for a pass.
      const theirs = changes.some((change) =>
        [...change.addedNodes].some((node) => !(node.classList?.contains(MARK))),
      );
      if (!theirs || pending !== null) return;
      pending = setTimeout(() => {
        pending = null;
        mark(reasons);
      }, SETTLE_MS);
    });
    observer.observe(document.body, { childList: true, subtree: true });
  }

  chrome.runtime.sendMessage({ kind: "for-you" }).then((answer) => {
    if (!answer?.papers?.length) return;
    const reasons = new Map(answer.papers.map((p) => [p.id, p.reason]));
    mark(reasons);
    follow(reasons);
  });
})();

// On the Hugging Face papers list: a small "for you" mark after the title of each paper
// the reader's feed ranks highly. Adds elements only; never moves or removes any.
(() => {
  const ARXIV_ID = /^\/papers\/(\d{4}\.\d{4,5})$/;
  const MARK = "paperfeed-for-you";

  function mark(papers) {
    const reasons = new Map(papers.map((p) => [p.id, p.reason]));
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

  chrome.runtime.sendMessage({ kind: "for-you" }).then((answer) => {
    if (answer?.papers?.length) mark(answer.papers);
  });
})();

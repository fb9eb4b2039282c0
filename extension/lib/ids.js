// Paper ids from page URLs: arXiv abstract/PDF/HTML pages and Hugging Face paper pages.
// The id is the version-less arXiv id, as the api stores it.

const ARXIV_ID = /^(\d{4}\.\d{4,5})(v\d+)?$/;

export function arxivId(value) {
  if (typeof value !== "string") return null;
  const match = ARXIV_ID.exec(value.trim());
  return match ? match[1] : null;
}

export function paperIdFromUrl(href) {
  let url;
  try {
    url = new URL(href);
  } catch {
    return null;
  }
  const parts = url.pathname.split("/").filter(Boolean);
  if (url.hostname === "arxiv.org" || url.hostname === "www.arxiv.org") {
    if (["abs", "pdf", "html"].includes(parts[0]) && parts[1]) {
      return arxivId(parts[1].replace(/\.pdf$/, ""));
    }
    return null;
  }
  if (url.hostname === "huggingface.co" && parts[0] === "papers" && parts.length === 2) {
    return arxivId(parts[1]);
  }
  return null;
}

export function siteOf(href) {
  try {
    const host = new URL(href).hostname;
    if (host.endsWith("arxiv.org")) return "arxiv";
    if (host === "huggingface.co") return "huggingface";
  } catch {
    // not a URL
  }
  return null;
}

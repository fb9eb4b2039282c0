"""The mails: a confirmation, and the digest with a plain-text and an HTML part."""

from __future__ import annotations

import datetime as dt
import html
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import quote_plus, urlsplit

import msgspec

from paperfeed.catalog.importers import web_url
from paperfeed.catalog.papers import Paper, arxiv_id
from paperfeed.serving.feed import FeedItem


class DigestItem(msgspec.Struct):
    paper_id: str
    title: str
    link: str
    summary: str
    reason: str


def paper_link(paper: Paper) -> str:
    """Where a paper's title leads: its URL when that is http(s) (a ``javascript:`` or
    ``data:`` URL never reaches a mail, as the extension never shows one), else arXiv."""
    url = web_url(paper.url)
    if url:
        return url
    found = arxiv_id(paper.id)
    if found:
        return f"https://arxiv.org/abs/{found}"
    return f"https://arxiv.org/search/?searchtype=title&query={quote_plus(paper.title)}"


def one_line(abstract: str, limit: int = 200) -> str:
    """The abstract's first sentence, at most ``limit`` characters."""
    text = " ".join(abstract.split())
    end = text.find(". ")
    if 0 < end < limit:
        return text[: end + 1]
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def items_of(feed_items: list[FeedItem]) -> list[DigestItem]:
    return [
        DigestItem(
            paper_id=item.paper.id,
            title=item.paper.title,
            link=paper_link(item.paper),
            summary=one_line(item.paper.abstract),
            reason=item.reasons[0] if item.reasons else "trending",
        )
        for item in feed_items
    ]


FOLLOWED_AUTHOR_REASON = "new from "
"""How the feed's reason for a followed author's paper starts (``paperfeed.follows``)."""


def follows_note(items: list[DigestItem]) -> str:
    """ "3 new papers from authors you follow" (the extension's badge says the same), or
    "" when no paper of the digest is by one."""
    n = sum(item.reason.startswith(FOLLOWED_AUTHOR_REASON) for item in items)
    return f"{n} new paper{'s' if n != 1 else ''} from authors you follow" if n else ""


def domain_of(url: str) -> str:
    return urlsplit(url).hostname or "paperfeed.local"


def digest_message_id(user_id: str, period: str, public_url: str) -> str:
    """The same for every attempt at one digest: a resend after a crash can be deduped."""
    return f"<digest.{user_id}.{period}@{domain_of(public_url)}>"


def confirmation_message(sender: str, to: str, confirm_link: str, public_url: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = "Confirm your paperfeed digest"
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = make_msgid(domain=domain_of(public_url))
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        "Someone (hopefully you) asked the paperfeed browser extension to send trending\n"
        "papers picked for you to this address.\n\n"
        f"Confirm by opening this link:\n{confirm_link}\n\n"
        "Nothing is sent until you confirm. If it was not you, ignore this mail.\n"
    )
    return message


def digest_message(
    *,
    sender: str,
    to: str,
    message_id: str,
    period: str,
    items: list[DigestItem],
    unsubscribe_link: str,
) -> EmailMessage:
    count = f"{len(items)} paper{'s' if len(items) != 1 else ''}"
    message = EmailMessage()
    message["Subject"] = f"paperfeed: {count} for you ({period})"
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = message_id
    message["List-Unsubscribe"] = f"<{unsubscribe_link}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(render_text(items, period, unsubscribe_link))
    message.add_alternative(render_html(items, period, unsubscribe_link), subtype="html")
    return message


def render_text(items: list[DigestItem], period: str, unsubscribe_link: str) -> str:
    lines = [f"Trending papers for you ({period})", ""]
    if note := follows_note(items):
        lines += [note, ""]
    for n, item in enumerate(items, start=1):
        lines += [f"{n}. {item.title}", f"   {item.link}"]
        if item.summary:
            lines.append(f"   {item.summary}")
        lines += [f"   Why: {item.reason}", ""]
    lines += [
        "You get this because you subscribed in the paperfeed extension.",
        f"Unsubscribe: {unsubscribe_link}",
    ]
    return "\n".join(lines) + "\n"


def render_html(items: list[DigestItem], period: str, unsubscribe_link: str) -> str:
    e = html.escape
    note = follows_note(items)
    note_html = f'<p style="margin:0 0 16px;font-weight:600">{e(note)}</p>' if note else ""
    rows = "".join(
        f"""
      <li style="margin:0 0 18px">
        <a href="{e(item.link)}" style="color:#1a5fb4;font-weight:600;font-size:16px;
           text-decoration:none">{e(item.title)}</a>
        <div style="color:#333;margin:4px 0">{e(item.summary)}</div>
        <div style="color:#777;font-size:13px">Why: {e(item.reason)}</div>
      </li>"""
        for item in items
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>paperfeed digest</title></head>
<body style="font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:640px;
  margin:0 auto;padding:24px;background:#fff;color:#111">
  <h1 style="font-size:20px;margin:0 0 4px">Trending papers for you</h1>
  <div style="color:#777;margin:0 0 20px">{e(period)}</div>
  {note_html}
  <ol style="padding-left:20px">{rows}
  </ol>
  <p style="color:#777;font-size:12px;border-top:1px solid #ddd;padding-top:12px">
    You get this because you subscribed in the paperfeed extension.
    <a href="{e(unsubscribe_link)}" style="color:#777">Unsubscribe</a>
  </p>
</body></html>
"""

"""The e-mail digest: the reader's subscription, and the links in the mails."""

from __future__ import annotations

import html
from typing import Annotated

from litestar import Controller, Response, delete, get, post, put
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency, Provide
from litestar.enums import MediaType
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_202_ACCEPTED,
    HTTP_204_NO_CONTENT,
    HTTP_403_FORBIDDEN,
)

from paperfeed.api.deps import provide_user_id
from paperfeed.api.openapi import INSTALL_AUTH, documented, html_pages
from paperfeed.core import Core
from paperfeed.digest.subscriptions import DigestRequest, DigestStatus, status_of
from paperfeed.errors import described

UserParam = Annotated[
    str,
    QueryParameter(
        pattern=described(r"^[0-9a-f]{24}$", "the user id of the e-mail's link, as it was"),
        description="User id",
    ),
]
SignatureParam = Annotated[
    str,
    QueryParameter(
        pattern=described(r"^[0-9a-f]{40}$", "the signature of the e-mail's link, as it was"),
        description="Signature of the link",
    ),
]


class MyDigestController(Controller):
    path = "/v1/me/digest"
    tags = ["digest"]
    dependencies = {"user_id": Provide(provide_user_id)}
    security = INSTALL_AUTH

    @put(
        status_code=HTTP_202_ACCEPTED,
        summary="Subscribe to (or change) the e-mail digest",
        responses=documented(400, 401, 403, 413),
    )
    async def subscribe(
        self,
        data: JSONBody[DigestRequest],
        core: NamedDependency[Core],
        user_id: NamedDependency[str],
    ) -> Response[DigestStatus]:
        """A new address gets a confirmation mail with a link; nothing else is sent to it
        before that link is opened. Changing frequency or size keeps a confirmation."""
        needs_confirming = await core.digests.subscribe(user_id, data)
        sub = await core.digests.subscriptions.get(user_id)
        assert sub is not None
        background = (
            BackgroundTask(core.digests.send_confirmation_quietly, user_id)
            if needs_confirming
            else None
        )
        return Response(status_of(sub), status_code=HTTP_202_ACCEPTED, background=background)

    @get(summary="The caller's digest subscription", responses=documented(401))
    async def status(
        self, core: NamedDependency[Core], user_id: NamedDependency[str]
    ) -> DigestStatus | None:
        """``null`` when the caller is not subscribed (an answer, not an error: the
        options page asks each time it opens)."""
        sub = await core.digests.subscriptions.get(user_id)
        return None if sub is None else status_of(sub)

    @delete(
        status_code=HTTP_204_NO_CONTENT,
        summary="Stop the digest and forget the address",
        responses=documented(401),
    )
    async def unsubscribe(self, core: NamedDependency[Core], user_id: NamedDependency[str]) -> None:
        await core.digests.subscriptions.delete(user_id)


def page(title: str, text: str, status: int = HTTP_200_OK, form: str = "") -> Response[str]:
    body = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width'>"
        f"<title>{html.escape(title)}</title></head>"
        "<body style='font-family:system-ui,sans-serif;max-width:520px;margin:48px auto'>"
        f"<h1 style='font-size:20px'>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
        f"{form}</body></html>"
    )
    return Response(body, status_code=status, media_type=MediaType.HTML)


def not_valid() -> Response[str]:
    return page(
        "Link not valid",
        "This confirmation link is not valid (the address may have changed).",
        HTTP_403_FORBIDDEN,
    )


class DigestLinkController(Controller):
    """What the links in the mails open (no token: the signature is the authority)."""

    path = "/v1/digest"
    tags = ["digest"]
    include_in_schema = True

    @get(
        "/confirm",
        summary="Ask before confirming an address (link scanners open links)",
        media_type=MediaType.HTML,
        responses=html_pages(400, 403),
    )
    async def ask_to_confirm(
        self, core: NamedDependency[Core], user: UserParam, sig: SignatureParam
    ) -> Response[str]:
        """The link in the confirmation mail: a page whose button confirms (a GET changes
        nothing: mail scanners open every link, and would confirm for nobody)."""
        state = await core.digests.confirmation_state(user, sig)
        if state == "invalid":
            return not_valid()
        if state == "confirmed":
            return page("Subscribed", "Your paperfeed digest is confirmed already.")
        form = (
            f"<form method='post' action='confirm?user={html.escape(user)}"
            f"&amp;sig={html.escape(sig)}'>"
            "<button type='submit'>Confirm</button></form>"
        )
        return page(
            "Confirm your paperfeed digest",
            "Send trending papers picked for you to this address? Nothing is sent until "
            "you confirm.",
            form=form,
        )

    @post(
        "/confirm",
        status_code=HTTP_200_OK,
        summary="Confirm an address (the button of the confirmation page)",
        media_type=MediaType.HTML,
        responses=html_pages(400, 403),
    )
    async def confirm(
        self, core: NamedDependency[Core], user: UserParam, sig: SignatureParam
    ) -> Response[str]:
        if await core.digests.confirm(user, sig):
            return page("Subscribed", "Your paperfeed digest is confirmed. See you soon.")
        return not_valid()

    @get(
        "/unsubscribe",
        summary="Ask before unsubscribing (link scanners open links)",
        media_type=MediaType.HTML,
        responses=html_pages(400),
    )
    async def ask(self, user: UserParam, sig: SignatureParam) -> Response[str]:
        form = (
            f"<form method='post' action='unsubscribe?user={html.escape(user)}"
            f"&amp;sig={html.escape(sig)}'>"
            "<input type='hidden' name='List-Unsubscribe' value='One-Click'>"
            "<button type='submit'>Unsubscribe</button></form>"
        )
        return page("Unsubscribe", "Stop the paperfeed digest to this address?", form=form)

    @post(
        "/unsubscribe",
        status_code=HTTP_200_OK,
        summary="Unsubscribe (RFC 8058 one-click, or the button of the page)",
        media_type=MediaType.HTML,
        responses=html_pages(400, 403),
    )
    async def unsubscribe(
        self, core: NamedDependency[Core], user: UserParam, sig: SignatureParam
    ) -> Response[str]:
        if await core.digests.unsubscribe(user, sig):
            return page("Unsubscribed", "No more paperfeed digests go to this address.")
        return page("Link not valid", "This unsubscribe link is not valid.", HTTP_403_FORBIDDEN)

"""What the OpenAPI document promises beyond the handlers' own types.

Clients (and the schema fuzzer in the tests) hold the api to this document, so it says
everything a response can be: the error statuses of each operation, closed request
objects (unknown fields are refused), and the bearer-token schemes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import msgspec
from litestar import Router

# Litestar's own Struct schema plugin (not exported): this one only adds to its answer.
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.datastructures import CacheControlHeader
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    RedocRenderPlugin,
    SwaggerRenderPlugin,
    YamlRenderPlugin,
)
from litestar.openapi.spec import Components, Schema, SecurityScheme
from litestar.plugins import OpenAPISchemaPlugin
from litestar.static_files import create_static_files_router
from litestar.typing import FieldDefinition


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    message: str
    key: str | None = None
    """The field at fault (``events[3].ts``, ``cursor``)."""
    source: str | None = None
    """Where that field was: ``body``, ``query``, ``path``, ``header``."""


class ErrorBody(msgspec.Struct, omit_defaults=True):
    status_code: int
    detail: str
    extra: list[ErrorDetail] | None = None


MEANING = {
    400: "Invalid input (or a body cut short: the client went away); `extra` names the field",
    401: "Missing, unknown or revoked bearer token",
    403: (
        "Not allowed (admin endpoints without the admin token; a link with a bad signature), "
        "or not offered by this service (e-mail digests without SMTP: GET /v1/meta says so)"
    ),
    404: "No such paper (or pairing code: wrong, expired or used)",
    409: "Not possible in this state (unlinking a reader's first install; linking with own code)",
    413: (
        "Request body larger than PAPERFEED_MAX_BODY_BYTES (a library import: larger than "
        "2 MiB, or more than 5,000 entries)"
    ),
    429: (
        "Rate limit of this install (or address) reached; see Retry-After (asking for a "
        "paper: the reader's papers a day, until the next day, UTC)"
    ),
    503: "Storage unavailable or an event batch not yet replicated; retry after Retry-After",
}
ALWAYS = (429, 503)


def documented(*statuses: int) -> dict[int, ResponseSpec]:
    """Response specs of ``statuses`` plus the ones every operation may answer."""
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=MEANING[status], generate_examples=False
        )
        for status in sorted({*statuses, *ALWAYS})
    }


def html_pages(*statuses: int) -> dict[int, ResponseSpec]:
    """Statuses answered with a small HTML page (the links in mails open in a browser)."""
    return {
        status: ResponseSpec(
            data_container=str,
            media_type=MediaType.HTML,
            description=MEANING.get(status, "A page saying what happened"),
            generate_examples=False,
        )
        for status in sorted({*statuses, *ALWAYS})
    }


INSTALL_AUTH: list[dict[str, list[str]]] = [{"install": []}]
ADMIN_AUTH: list[dict[str, list[str]]] = [{"admin": []}]

COMPONENTS = Components(
    security_schemes={
        "install": SecurityScheme(
            type="http",
            scheme="bearer",
            description="The token `POST /v1/installs` returned (stored only as a hash).",
        ),
        "admin": SecurityScheme(type="http", scheme="bearer", description="PAPERFEED_ADMIN_TOKEN."),
    }
)


class ClosedStructSchemaPlugin(OpenAPISchemaPlugin):
    """msgspec Structs that refuse unknown fields say so: ``additionalProperties: false``."""

    _structs = StructSchemaPlugin()

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return self._structs.is_plugin_supported_field(field_definition)

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        schema = self._structs.to_openapi_schema(field_definition, schema_creator)
        if field_definition.type_.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        if getattr(field_definition.type_, "__exactly_one_field__", False):
            # A body naming one of its fields (``{"author"}`` or ``{"topic"}``).
            schema.min_properties = schema.max_properties = 1
        return schema


# --- the documentation pages, from the package's own files ----------------------------

STATIC_DIR = Path(__file__).parent / "static"
"""Swagger UI and ReDoc as published on npm (``static/README.md``): served by the api."""
ASSETS_PATH = "/schema/assets"
FAVICON = f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/swagger-ui/favicon-32x32.png'>"


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """ReDoc (also at ``/schema``), Swagger UI and the JSON (and YAML, when PyYAML is
    installed) documents, every script and style from ``ASSETS_PATH``: the documentation
    needs no CDN, and works offline."""
    plugins: list[OpenAPIRenderPlugin] = [
        RedocRenderPlugin(
            js_url=f"{ASSETS_PATH}/redoc/redoc.standalone.js",
            google_fonts=False,
            path=["/", "/redoc"],
            favicon=FAVICON,
        ),
        SwaggerRenderPlugin(
            js_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui-bundle.js",
            css_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui.css",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui-standalone-preset.js",
            path="/swagger",
            favicon=FAVICON,
        ),
        JsonRenderPlugin(),
    ]
    if importlib.util.find_spec("yaml") is not None:
        plugins.append(YamlRenderPlugin())
    return plugins


def assets_router() -> Router:
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[STATIC_DIR],
        cache_control=CacheControlHeader(max_age=86_400, public=True),
        include_in_schema=False,
    )

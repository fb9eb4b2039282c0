"""Lua scripts shipped with the package, registered once per client."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def lua(name: str) -> str:
    return resources.files("paperfeed.store").joinpath(f"lua/{name}.lua").read_text("utf-8")

"""Writes docs/configuration.md from the Settings class (its fields and docstrings)."""

from __future__ import annotations

import ast
import inspect
import sys

from paperfeed import settings

HEADER = """# Configuration

Every setting is an environment variable, read once at start-up by
`paperfeed.settings.load_settings` (one frozen msgspec Struct). A wrong value stops the
process with a message naming the variable. `paperfeed settings` prints the values in
force. This page is generated: `python scripts/settings_doc.py > docs/configuration.md`.

| variable | default | meaning |
|---|---|---|
"""


def render() -> str:
    cls = ast.parse(inspect.getsource(settings.Settings)).body[0]
    assert isinstance(cls, ast.ClassDef)
    defaults = settings.Settings()
    rows = []
    for node, following in zip(cls.body, [*cls.body[1:], None], strict=True):
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        name = node.target.id
        doc = ""
        if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
            doc = " ".join(str(following.value.value).split())
        value = getattr(defaults, name)
        shown = "unset" if value is None else f"`{value}`".replace("|", "\\|")
        rows.append(f"| `{settings.env_name(name)}` | {shown} | {doc} |")
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

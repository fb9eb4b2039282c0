"""paperfeed: personalized trending research papers."""

# anyio (under httpx) builds the lazy-import maps of `anyio` and `anyio.abc` by
# parsing its own source with `ast` the first time each is imported, which httpx
# can leave to the middle of a request. CPython 3.11 keeps the AST constructor's
# recursion depth per interpreter, not per thread, so that parse fails with
# "SystemError: AST constructor recursion depth mismatch" when numba's JIT (which
# parses the source of what it compiles) runs in a worker thread at the same time.
# Importing both here, before any thread starts, does that parse once, safely.
import anyio.abc  # noqa: F401

__version__ = "0.1.0"

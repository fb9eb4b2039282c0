"""paperfeed: personalized trending research papers."""

# anyio (under httpx) builds the lazy-import maps of `anyio` and `anyio.abc` by
# parsing its own source with `ast` the first time each is imported, which httpx
# can leave to the middle of a request. CPython up to 3.11.7 keeps the AST
# constructor's recursion depth per interpreter, not per thread (gh-106905, fixed in
# 3.11.8), so that parse fails with "SystemError: AST constructor recursion depth
# mismatch" when numba's JIT (which parses array expressions as it compiles) runs in a
# worker thread at the same time. Importing both here, before any thread starts, does
# that parse once, safely.
import anyio.abc  # noqa: F401

__version__ = "0.1.0"

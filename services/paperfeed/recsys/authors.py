"""Author names as readers and catalogs write them, matched after normalisation.

One person is written many ways: "Yann LeCun", "Y. LeCun", "yann lecun", "LeCun, Yann",
"André F. T. Martins" and "Andre F. T. Martins", "Diego de las Casas" and "Diego de Las
Casas". A name is normalised (``author_name``) to

- ``key``: the first given name's initial and the family name ("y lecun"), accents
  dropped (NFKD, then letters such as ø, ł, ß spelled in ASCII), case folded, everything
  but letters and digits dropped, a comma form ("LeCun, Yann") turned around, a suffix
  ("Jr.", "III") left out;
- ``given``: the first given name in full ("yann"; a hyphenated one joined, "rizhao"
  for "Ri-Zhao"), or "" when the name gives only an initial ("Y. LeCun").

Two names are the same author (``same_author``) when their keys are equal and their
first given names do not contradict: equal, or one of them only an initial. So "Y.
LeCun" matches "Yann LeCun" and "Yves LeCun", but "Yann LeCun" does not match "Yves
LeCun", and "Xiaolong Wang" does not match "Xin Wang" (a full name is never widened to
everyone of that initial). Middle names and initials are not compared ("Christopher D.
Manning" is "Christopher Manning"): catalogs drop them as often as they keep them.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import NamedTuple

# Letters NFKD leaves whole (no combining mark to drop): spelled the way ASCII
# bibliographies spell them.
_SPELLED = str.maketrans(
    {"ø": "o", "ł": "l", "đ": "d", "ð": "d", "ß": "ss", "æ": "ae", "œ": "oe", "ı": "i", "þ": "th"}
)
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv"})
_WORD = re.compile(r"[^\W_]+(?:-[^\W_]+)*\.?")
MAX_NAME = 200
"""Characters of a name a reader may follow (longer is refused, not cut)."""


class AuthorName(NamedTuple):
    key: str
    """First given name's initial and family name: "y lecun" (the family name alone for
    a one-word name)."""
    given: str
    """The first given name in full, "" when only its initial is known."""


def fold(text: str) -> str:
    """Lower case, accents dropped: "Çağlar Ünlü" is "caglar unlu"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return plain.translate(_SPELLED)


@functools.lru_cache(maxsize=65_536)
def author_name(name: str) -> AuthorName | None:
    """The normalised form of ``name`` (the module doc says how), None for a name with
    no letter or digit."""
    text = fold(name)
    if "," in text:
        family, _, given = text.partition(",")
        text = f"{given} {family}"
    words = [w.rstrip(".") for w in _WORD.findall(text)]
    while len(words) > 1 and words[-1] in _SUFFIXES:
        words.pop()
    if not words:
        return None
    family = words[-1].replace("-", "")
    if len(words) == 1:
        return AuthorName(family, "")
    first = words[0]
    parts = first.split("-")
    # "Y." and "J.-B." are initials; "Yann" and "Jean-Baptiste" are names.
    given = "" if all(len(p) == 1 for p in parts) else first.replace("-", "")
    return AuthorName(f"{first[0]} {family}", given)


def same_author(a: AuthorName, b: AuthorName) -> bool:
    return a.key == b.key and (not a.given or not b.given or a.given == b.given)


class AuthorIndex:
    """Papers by normalised author: for each key, the positions of the papers with an
    author of that key, and that author's first given name as the paper writes it."""

    def __init__(self, authors: Iterable[tuple[int, Sequence[str]]]) -> None:
        by_key: dict[str, list[tuple[int, str]]] = {}
        for position, names in authors:
            for raw in names:
                name = author_name(raw)
                if name is not None:
                    by_key.setdefault(name.key, []).append((position, name.given))
        self._by_key = by_key

    @classmethod
    def from_keys(cls, by_key: dict[str, list[tuple[int, str]]]) -> AuthorIndex:
        """The index whose ``by_key`` is this (as the serving artifact stores it)."""
        index = cls(())
        index._by_key = by_key
        return index

    @property
    def by_key(self) -> dict[str, list[tuple[int, str]]]:
        """Normalised key -> (position, first given name) of each paper with an author
        of that key."""
        return self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def papers(self, name: AuthorName) -> list[int]:
        """Positions of the papers by an author who is ``name`` (``same_author``), each
        once, in the order they were indexed."""
        found = [
            position
            for position, given in self._by_key.get(name.key, ())
            if not name.given or not given or given == name.given
        ]
        return list(dict.fromkeys(found))

    def nbytes(self) -> int:
        """Roughly: a key and a tuple an entry."""
        return sum(len(k) + 60 + 70 * len(v) for k, v in self._by_key.items())


NO_AUTHORS = AuthorIndex(())

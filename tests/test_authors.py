"""Author names matched after normalisation, on the real names of the Hugging Face daily
papers fixture (tests/fixtures/hf-daily-papers.jsonl, a copy of the shared data set)."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from paperfeed.recsys.authors import AuthorIndex, author_name, fold, same_author
from paperfeed.recsys.index import CatalogPaper, build_index

FIXTURE = Path(__file__).parent / "fixtures" / "hf-daily-papers.jsonl"


@pytest.fixture(scope="module")
def papers() -> list[dict[str, object]]:
    with open(FIXTURE) as handle:
        return [json.loads(line) for line in handle]


def by(papers: list[dict[str, object]], name: str) -> set[str]:
    """Ids of the fixture's papers that list exactly ``name``."""
    return {str(p["id"]) for p in papers if name in p["authors"]}  # type: ignore[operator]


def found(papers: list[dict[str, object]], name: str) -> set[str]:
    index = AuthorIndex((i, p["authors"]) for i, p in enumerate(papers))  # type: ignore[misc]
    wanted = author_name(name)
    assert wanted is not None
    return {str(papers[i]["id"]) for i in index.papers(wanted)}


@pytest.mark.parametrize(
    "spellings",
    [
        ["Yann LeCun", "Y. LeCun", "yann lecun", "LeCun, Yann", "YANN LECUN", "Y LeCun"],
        ["André F. T. Martins", "Andre F. T. Martins", "André Martins", "A. F. T. Martins"],
        ["Diego de las Casas", "Diego de Las Casas", "D. de las Casas"],
        ["Çağlar Ünlü", "Caglar Unlu", "Ç. Ünlü"],
        ["Michał Krutul", "Michal Krutul"],
        ["Jean-Baptiste Alayrac", "J.-B. Alayrac", "jean-baptiste alayrac"],
        ["Robert L. Logan IV", "Robert Logan", "Logan, Robert L."],
    ],
)
def test_spellings_of_one_author_match(spellings: list[str]) -> None:
    names = [author_name(s) for s in spellings]
    assert all(n is not None for n in names)
    for a in names:
        for b in names:
            assert a is not None
            assert b is not None
            assert same_author(a, b), (a, b)


def test_different_first_names_do_not_match() -> None:
    def same(a: str, b: str) -> bool:
        x, y = author_name(a), author_name(b)
        assert x is not None
        assert y is not None
        return same_author(x, y)

    assert not same("Yann LeCun", "Yves LeCun")
    assert not same("Xiaolong Wang", "Xin Wang")
    assert same("X. Wang", "Xin Wang")
    assert same("X. Wang", "Xiaolong Wang")
    assert author_name(":") is None
    assert author_name("  ") is None


def test_the_fixtures_variant_spellings_find_each_others_papers(
    papers: list[dict[str, object]],
) -> None:
    # Two real pairs of the data set: one author, two spellings (an accent, a case).
    for a, b in [
        ("André F. T. Martins", "Andre F. T. Martins"),
        ("Diego de las Casas", "Diego de Las Casas"),
    ]:
        both = by(papers, a) | by(papers, b)
        assert by(papers, a)
        assert by(papers, b)
        assert by(papers, a) != both
        assert found(papers, a) == both
        assert found(papers, b) == both


def test_every_real_name_finds_its_papers_however_it_is_written(
    papers: list[dict[str, object]],
) -> None:
    index = AuthorIndex((i, p["authors"]) for i, p in enumerate(papers))  # type: ignore[misc]
    names = sorted({a for p in papers for a in p["authors"]})  # type: ignore[attr-defined]
    assert len(names) > 6_000
    checked = 0
    for name in names:
        own = author_name(name)
        if own is None:
            continue
        mine = {i for i, p in enumerate(papers) if name in p["authors"]}  # type: ignore[operator]
        words = name.split()
        plain = "".join(
            c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c)
        )
        variants = [name.lower(), name.upper(), plain]
        if len(words) >= 2 and len(words[0]) > 1:
            variants.append(f"{words[0][0]}. {' '.join(words[1:])}")  # "Y. LeCun"
            variants.append(f"{words[-1]}, {' '.join(words[:-1])}")  # "LeCun, Yann"
        for variant in variants:
            wanted = author_name(variant)
            assert wanted is not None, variant
            assert same_author(wanted, own), (name, variant)
            assert mine <= set(index.papers(wanted)), (name, variant)
        checked += 1
    assert checked > 6_000


def test_a_full_name_is_not_widened_to_its_initial(papers: list[dict[str, object]]) -> None:
    """Real authors sharing an initial and a family name ("h wang": Hao, Hanqing,
    Haoxiang, ... Wang) are told apart by their given names; only an initial alone
    matches them all."""
    names = sorted({a for p in papers for a in p["authors"]})  # type: ignore[attr-defined]
    by_key: dict[str, list[str]] = {}
    for name in names:
        parsed = author_name(name)
        if parsed is not None and parsed.given:
            by_key.setdefault(parsed.key, []).append(name)
    crowded = {k: v for k, v in by_key.items() if len({author_name(n) for n in v}) >= 3}
    assert len(crowded) >= 5
    told_apart = 0
    for key, full in crowded.items():
        first = author_name(full[0])
        assert first is not None
        compatible = set().union(
            *(by(papers, n) for n in names if (a := author_name(n)) and same_author(a, first))
        )
        others_only = set().union(*(by(papers, n) for n in full)) - compatible
        assert found(papers, full[0]) == compatible
        assert found(papers, full[0]).isdisjoint(others_only)
        told_apart += bool(others_only)
        initial = f"{key.split()[0].upper()}. {full[0].split()[-1]}"
        assert found(papers, initial) >= set().union(*(by(papers, n) for n in full))
    assert told_apart >= 5


def test_fold_spells_letters_nfkd_keeps() -> None:
    assert fold("Søren Łukasz Straße") == "soren lukasz strasse"


def test_the_catalog_index_has_its_newest_papers_by_author(papers: list[dict[str, object]]) -> None:
    catalog = [
        CatalogPaper(
            id=str(p["id"]),
            title=str(p["title"]),
            abstract=str(p["abstract"]),
            authors=list(p["authors"]),  # type: ignore[call-overload]
            published=str(p["published"]),
        )
        for p in papers
    ]
    index = build_index(catalog, None, "1")
    wanted = author_name("andre martins")
    assert wanted is not None
    ids = {index.ids[i] for i in index.authors.papers(wanted)}
    assert ids == by(papers, "André F. T. Martins") | by(papers, "Andre F. T. Martins")

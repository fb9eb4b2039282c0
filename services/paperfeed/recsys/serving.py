"""The model an api process serves with, kept current without restarts.

Each process polls ``pf:{model}:current`` every ``model_poll_s``; a new version is loaded
beside the old one and swapped in only when it loaded completely, so a broken or
missing blob leaves the process serving the model it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from paperfeed.catalog.papers import Paper
from paperfeed.recsys.content import ContentEncoder, FloatArray, paper_text
from paperfeed.recsys.model import RecModel
from paperfeed.recsys.repository import ModelRepository

log = logging.getLogger(__name__)

EXTRA_CACHE = 20_000


class TextIndex(NamedTuple):
    ids: list[str]
    encoder: ContentEncoder
    vectors: FloatArray
    """(len(ids), dims) float32, L2-normalised."""


class ModelHolder:
    def __init__(self, repository: ModelRepository, poll_s: float) -> None:
        self.repository = repository
        self.poll_s = poll_s
        self.model: RecModel | None = None
        self.failed_version: str | None = None
        # Text vectors and projected factors of papers newer than the model.
        self._extra: OrderedDict[str, tuple[FloatArray, FloatArray]] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._fallback: TextIndex | None = None

    @property
    def version(self) -> str | None:
        return self.model.version if self.model else None

    async def refresh(self) -> bool:
        """Load the current version if it is new; True when the model changed."""
        version = await self.repository.current_version()
        if version is None or version == self.version or version == self.failed_version:
            return False
        try:
            model = await self.repository.load(version)
        except Exception:
            log.exception(
                "loading model failed; keeping the current one", extra={"version": version}
            )
            self.failed_version = version
            return False
        self.model = model
        self._extra.clear()
        log.info("model loaded", extra={"version": version, "items": len(model.item_ids)})
        return True

    async def _poll(self) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                await self.refresh()
                failing = False
            except Exception as exc:  # Redis down for a moment: keep serving, try again
                if not failing:
                    log.warning("model poll failed", extra={"error": repr(exc)})
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.poll_s)

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._poll(), name="model-poll")

    async def stop(self) -> None:
        # An event, not a cancel: redis-py may turn a cancel inside a command into a
        # ConnectionError, which the loop would take for a Redis hiccup and go on.
        if self._task:
            self._stopping.set()
            await self._task

    def item_vectors(
        self, model: RecModel, papers: Sequence[Paper]
    ) -> tuple[FloatArray, FloatArray]:
        """(factors, text vectors) of papers: the model's own, or projected from text."""
        indexes = np.array([model.index.get(p.id, -1) for p in papers], dtype=np.int64)
        known = indexes >= 0
        factors = np.zeros((len(papers), model.item_factors.shape[1]), dtype=np.float32)
        content = np.zeros((len(papers), model.item_content.shape[1]), dtype=np.float32)
        factors[known] = model.item_factors[indexes[known]]
        content[known] = model.item_content[indexes[known]]
        missing: list[int] = []
        for row in np.flatnonzero(~known).tolist():
            paper = papers[row]
            if paper.id in self._extra:
                content[row], factors[row] = self._extra[paper.id]
                self._extra.move_to_end(paper.id)
            else:
                missing.append(row)
        if missing:
            texts = [paper_text(papers[row].title, papers[row].abstract) for row in missing]
            new_content, new_factors = model.text_vectors(texts)
            for offset, row in enumerate(missing):
                content[row], factors[row] = new_content[offset], new_factors[offset]
                self._extra[papers[row].id] = (new_content[offset], new_factors[offset])
            while len(self._extra) > EXTRA_CACHE:
                self._extra.popitem(last=False)
        return factors, content

    def text_index(self, ids: Sequence[str]) -> TextIndex | None:
        """The catalog's text index for similar papers before any model exists, if it was
        built for exactly these ids."""
        if self._fallback is not None and self._fallback.ids == list(ids):
            return self._fallback
        return None

    def build_text_index(self, ids: Sequence[str], texts: Sequence[str]) -> TextIndex:
        """Fit a text model on the catalog and encode it once (kept until it changes)."""
        encoder = ContentEncoder.fit(texts, dims=64)
        self._fallback = TextIndex(list(ids), encoder, encoder.encode(texts))
        return self._fallback

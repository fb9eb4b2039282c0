"""Synthetic readers with clear tastes: papers on three topics, readers of one topic each."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

TOPICS = {
    "graphs": (
        "graph neural network message passing node classification link prediction "
        "graph convolution molecular graphs heterophily oversmoothing spectral"
    ),
    "robots": (
        "reinforcement learning robot manipulation policy gradient reward shaping "
        "locomotion sim-to-real grasping offline RL actor critic"
    ),
    "proteins": (
        "protein structure prediction folding amino acid sequence enzyme design "
        "molecular dynamics binding affinity antibody docking"
    ),
}
PAPERS_PER_TOPIC = 40


def paper_id(topic_index: int, n: int) -> str:
    return f"2410.{topic_index}{n:04d}"


def topic_of(paper: str) -> str:
    return list(TOPICS)[int(paper.split(".")[1][0])]


def papers() -> list[dict[str, Any]]:
    rng = random.Random(7)
    out = []
    for t, (topic, vocabulary) in enumerate(TOPICS.items()):
        words = vocabulary.split()
        for n in range(PAPERS_PER_TOPIC):
            title = " ".join(rng.sample(words, 5)).capitalize()
            abstract = " ".join(rng.choices(words, k=60))
            out.append(
                {
                    "id": paper_id(t, n),
                    "title": f"{title} ({topic} {n})",
                    "abstract": abstract,
                    "published": "2024-10-01T00:00:00Z",
                }
            )
    return out


def event(paper: str, kind: str = "view", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "paper_id": paper,
        "type": kind,
        "ts": time.time(),
        **extra,
    }


def history(topic_index: int, rng: random.Random, size: int = 8) -> list[dict[str, Any]]:
    """A reader of one topic: views of ``size`` papers, some clicked, saved or upvoted."""
    chosen = rng.sample(range(PAPERS_PER_TOPIC), size)
    events = []
    for n in chosen:
        pid = paper_id(topic_index, n)
        events.append(event(pid, "view", dwell_ms=rng.randint(5_000, 200_000)))
        kind = rng.choice(["click", "save", "upvote", "view"])
        events.append(event(pid, kind))
    return events

"""The recommender's shared room: what both the serving and the training code import.

The recommender lives in three packages (docs/recommender.md, "Two rooms"):

- ``paperfeed.serving``: runs per request in every api process, under asyncio, over
  Redis: the feed, similar papers, search for a reader (``serving.feed``) and the model
  and catalog index each process serves with, kept current (``serving.holder``).
- ``paperfeed.training``: runs in the trainer process the worker starts (``paperfeed
  train``) and in ``paperfeed eval``, with numpy, scikit-learn and implicit: reading the
  training data, learning, the gate, publishing, offline evaluation.
- ``paperfeed.recsys`` (this package): the pieces both use. The model's format
  (``model``), the text features (``content``, ``stop_words``), the signals and their
  blend (``ranker``, ``affinity``, ``authors``, ``itemknn``, ``topics``, ``matrix``), the
  compiled kernels (``kernels``), the catalog index and the search over it (``index``,
  ``search``), the model repository in Redis (``repository``) and the serving artifact
  the worker builds and the api processes load (``artifact``).

``recsys`` imports neither ``serving`` nor ``training``, and neither room imports the
other (the import contracts of ``make lint``, ``[tool.importlinter]`` in pyproject.toml).
"""

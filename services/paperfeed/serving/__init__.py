"""The recommender's serving room: what runs per request in every api process, under
asyncio, over Redis (``feed``: feeds, similar papers, a reader's search; ``holder``: the
model and catalog index a process serves with, kept current without restarts).

It imports the shared room (``paperfeed.recsys``), never the training code
(``paperfeed.training``). Importing it loads neither scikit-learn nor implicit (an api
process starts light): implicit comes with the first model loaded (a reader's fold-in),
scikit-learn only if the process builds a catalog index itself and fits its topics.
"""

"""The recommender's training room: what runs in the trainer process the worker starts
(``paperfeed train``) and in ``paperfeed eval``, with numpy, scikit-learn and implicit,
never per request (``data``: the training data read from Redis and the trainer's cache
of it, which the worker's ``repairs`` job clears of erased readers; ``learn``: learning
the model, the text features and the blend; ``train``: one training, its gate and
publishing; ``evaluate``: offline evaluation; ``cli``: the two commands).

It imports the shared room (``paperfeed.recsys``), never the serving code
(``paperfeed.serving``).
"""

"""paperfeed: personalized trending research papers."""

__version__ = "0.1.0"

"""Bring your library (issue 26): a reader's BibTeX, CSL-JSON (Zotero), RIS file or list of
arXiv ids becomes their history.

``parse``: the file read by maintained parsers (bibtexparser, rispy, the standard json
decoder), one ``Entry`` each with the identities it carries (arXiv id, DOI, title) and the
line it starts on, and a ``Problem`` for each entry or line that could not be read.
``library``: the entries matched to catalog papers and saved as the reader's own ``save``
events, through the event ingest (``docs/import.md``).
"""

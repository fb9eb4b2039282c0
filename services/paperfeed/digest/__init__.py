"""The opt-in e-mail digest: a reader's own trending papers in their inbox."""

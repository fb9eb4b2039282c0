"""The Redis key layout: every key paperfeed reads or writes is built here.

All keys start with ``pf:``. Keys of one user share the hash tag ``{u:<id>}`` so that
every multi-key operation on a user (the ingest script, erasure) runs in one
Redis Cluster slot. Global structures that a script touches together share a tag too.

Key (type) — contents — bound / TTL

Catalog
- ``pf:papers`` (HASH) paper id -> Paper JSON — one entry per catalogued paper.
- ``pf:papers:by_date`` (ZSET) paper id -> published (or added) unix time — same members.
- ``pf:papers:version`` (STRING) a counter bumped by every import that changed the
  catalog (api processes rebuild their catalog index when it moves).
- ``pf:papers:seeded`` (HASH) paper id -> upvotes already credited to trending — same members.
- ``pf:papers:alias`` (HASH) old paper id -> the id it was merged into (a demo page's
  title slug -> its arXiv id, once a source brings the id): the old id keeps resolving.
- ``pf:sync:state`` (HASH) ``<unit>:<field>`` -> the catalog sync's bookkeeping per unit
  (last success, failures, retry time, last error, papers added): ``hf``, each arXiv
  category ``arxiv:<category>``, ``arxiv`` (the source: a summary of its categories,
  ``refused_until``, ``last_request_at``), ``reported`` (the lookup of reported ids) —
  a few fields per unit; a category no longer configured loses its fields.
  ``pf:sync:lock`` (STRING) the lease of the one sync running.
- ``pf:cand:{c}:score`` (ZSET) arXiv id of a paper not in the catalog -> distinct
  installs that reported it (no text from a client is kept) — at most
  ``candidate_cap`` members (the first reported evicted first).
- ``pf:cand:{c}:seen`` (ZSET) paper id -> first report time — same members, eviction order.
- ``pf:cand:{c}:papers`` (HASH) paper id -> its lookups so far, JSON ``{"misses", "next"}``
  (sources that did not know it, when it is asked again) — only ids looked up and not
  found yet, a subset of the same members.
- ``pf:cand:{c}:by:<paper>`` (SET) user ids that reported the paper — deleted on admission,
  drop or eviction, TTL 30 days.
- ``pf:cand:{c}:requested`` (ZSET) paper id -> readers who asked for it
  (``POST /v1/catalog/requests``: their choice to make the id public, so it is looked up
  with a single reporter) — members of ``pf:cand:{c}:score`` only (stale ones are
  dropped at the next lookup).
- ``pf:cand:{c}:req:<paper>`` (SET) user ids that asked for the paper — deleted with the
  candidate, TTL 30 days.

Trending (one tag per window so the decay script owns both keys)
- ``pf:trend:{<window>}:scores`` (ZSET) paper id -> sum of w * 2^((t - epoch)/half_life) —
  at most ``trending_cap`` members.
- ``pf:trend:{<window>}:epoch`` (STRING) the epoch t0 of the scores (unix seconds).
- ``pf:trend:{<window>}:once:<id>`` (STRING) marks a once-only addition made (an
  erasure's or a link's taking back, run again by a retry) — TTL 30 days.

Installs
- ``pf:token:<sha256(token)>`` (STRING) user id — deleted with the user.
- ``pf:users`` (ZSET) user id -> last activity unix time — one member per install.
- ``pf:installs:silent`` (ZSET) user id -> creation time of installs with no event yet —
  erased after ``forget_silent_installs_days``.
- ``pf:deployment`` (STRING) this deployment's random id (what the trainer's cache of
  training data belongs to), made once.
- ``pf:stats`` (HASH) ``events`` (accepted events, all time), ``installs``.
- ``pf:erasures`` (ZSET) user id -> when its erasure was asked: an erasure not finished
  yet (a retry or the worker's ``repairs`` job finishes it) — removed when done.
- ``pf:erased`` (ZSET) user id -> when it was erased: what the trainer's cache of training
  data must forget — removed once the cache holds none of it.

Per user (tag ``{u:<id>}``)
- ``pf:{u:<id>}:profile`` (HASH) created_at, token_hash, last_event_at, events, follows
  (changes of the reader's follows: the cached feed's stamp carries it).
- ``pf:{u:<id>}:papers`` (HASH) paper id -> packed interaction record, a JSON array of
  numbers (see ``paperfeed.events``) — at most ``user_papers_cap`` fields.
- ``pf:{u:<id>}:events`` (STRING) the accepted events as short lines, oldest first —
  at most ``event_log_bytes``.
- ``pf:{u:<id>}:seen`` (STRING) 12-hex-digit hashes of the event ids seen, oldest first —
  at most ``dedupe_cap`` of them.
- ``pf:{u:<id>}:requests`` (ZSET) arXiv id -> when the reader asked for the paper (what
  erasure takes them out of) — the last 30 days (``CANDIDATE_REPORTER_TTL_S``), at most
  ``reports_per_day`` a day.
- ``pf:{u:<id>}:follows`` (HASH) ``a:<16 hex digits of a hash of the normalised name>``
  -> an author's name as the reader wrote it, ``t:<topic id>`` -> the topic's name when
  followed (``paperfeed.follows``) — at most ``FOLLOWS_CAP`` (100) fields, names at most
  200 characters; each change counts in the profile's ``follows``.
- ``pf:{u:<id>}:titles`` (HASH) paper id -> the title its page showed, for papers the
  catalog lacked (a hint for the reader's library) — at most ``page_titles_cap`` fields.
- ``pf:{u:<id>}:touched`` (ZSET), ``pf:{u:<id>}:log`` (LIST), ``pf:{u:<id>}:dedupe`` (ZSET):
  the layout before compact records; the reader's next ingest converts and deletes them.
- ``pf:{u:<id>}:installs`` (SET) token hashes of the other installs linked to the reader
  by a pairing code (erasure revokes them all); ``pf:{u:<id>}:pairing`` (STRING) codes
  made this hour (a counter, TTL one hour).
- ``pf:links`` (ZSET) ``<token hash> <install's reader> <code's reader> moving|leaving``
  -> when: a link under way (a retry or the worker's ``repairs`` job finishes it) —
  removed when done. A reader's profile says ``leaving`` while they are being linked
  to another, and ``absorbed:<reader>`` while what that reader did is joining theirs.
- ``pf:pair:<code hash>`` (STRING) the reader a pairing code links to — TTL
  ``PAIRING_CODE_TTL_S``, deleted by its one use; ``pf:pairtry:<token hash>`` (STRING)
  an install's redeem attempts this hour.
- ``pf:{u:<id>}:vector`` (STRING) JSON {version, at, factors(base64 float32)} — fold-in cache.
- ``pf:{u:<id>}:feed`` (STRING) the reader's ranked feed (ids, scores, reasons) and what
  it was computed from (model, catalog version, trending epoch, their event count) — TTL
  ``trending_snapshot_s``; written only while the reader exists.

E-mail digest (the address is the only personal data; it lives in its own key)
- ``pf:{u:<id>}:digest`` (STRING) the subscription JSON (address, frequency, size,
  confirmation, last period sent) — one per subscribed user, erased with the user.
- ``pf:{u:<id>}:digest:sent`` (ZSET) paper id -> time sent in a digest — at most 2,000.
- ``pf:{u:<id>}:digest:outbox`` (STRING) the digest being sent (period, Message-ID,
  papers) — deleted once sent; a run that died mid-send resends exactly this one.
- ``pf:digest:subscribers`` (SET) user ids with a subscription.
- ``pf:digest:lock`` (STRING) held by the process sending digests (a renewed lease).
- ``pf:digest:confirm:<sha256(address)>`` (STRING) confirmation mails sent to an address
  today, from any install (a cap against mailing a stranger) — TTL 1 day.
- ``pf:secret:links`` (STRING) the generated key that signs links in mails.

Models (one tag: publishing switches versions and current in one transaction)
- ``pf:{model}:current`` (STRING) version of the published model.
- ``pf:{model}:versions`` (ZSET) version -> publish time — at most ``models_kept``.
- ``pf:{model}:<version>:meta`` (STRING) model metadata JSON (metrics, ids, shapes).
- ``pf:{model}:<version>:blob`` (STRING) the model arrays (``np.savez``, no pickles).
- ``pf:{model}:decisions`` (LIST) every training run's decision JSON (published or not,
  why, the metrics) and every admin rollback (``"kind": "rollback"``), newest first —
  at most 50.
- ``pf:{model}:search`` (STRING) the last hyperparameter search (when, trials, best).
- ``pf:model:events`` (pub/sub channel) a version is published (PUBLISH reaches every
  cluster node, so it needs no tag).
- ``pf:train:requested`` (STRING) a training request from the admin api, TTL 1 day.
- ``pf:train:lock`` (STRING) held by the process that trains (a renewed lease).
- ``pf:worker:state`` (HASH) per job: last run, next run, failures in a row, last
  error; the events counted at the last training (a restarted worker goes on from it).
- ``pf:worker:heartbeat`` (STRING) the last time a worker was alive — TTL 60 s.

Serving artifacts (one tag: the pointer and the versions move in one transaction;
``recsys.artifact``, docs/redis.md "The serving artifact")
- ``pf:{artifact}:current`` (STRING) id of the artifact api processes load: the catalog
  index the worker built for one (model version, catalog version).
- ``pf:{artifact}:versions`` (ZSET) id -> publish time — the current one and those
  replaced less than ``artifact.GRACE_S`` ago (processes still moving off them; the
  worker's artifact check prunes the others).
- ``pf:{artifact}:<id>:header`` (STRING) msgspec JSON: versions, array names, dtypes,
  shapes, offsets, chunk count.
- ``pf:{artifact}:<id>:<n>`` (STRING, binary) the n-th chunk (at most 16 MiB) of the
  arrays' bytes — deleted with the header.
- ``pf:{artifact}:builder`` (STRING) a worker builds artifacts (api processes wait for
  one rather than build the index themselves) — TTL ``artifact.BUILDER_TTL_S``.

Rate limiting
- ``pf:ratelimit:{<who>}:<window s>`` (STRING) requests in the current window of a
  budget (``t:<token hash>``, ``ip:<address>``, ``installs:<address>``) — expires with the window.
"""

from __future__ import annotations

PREFIX = "pf:"

PAPERS = "pf:papers"
PAPERS_BY_DATE = "pf:papers:by_date"
PAPERS_SEEDED = "pf:papers:seeded"
PAPERS_VERSION = "pf:papers:version"
PAPERS_ALIAS = "pf:papers:alias"
SYNC_STATE = "pf:sync:state"
SYNC_LOCK = "pf:sync:lock"

CANDIDATE_PAPERS = "pf:cand:{c}:papers"
CANDIDATE_SCORE = "pf:cand:{c}:score"
CANDIDATE_SEEN = "pf:cand:{c}:seen"
CANDIDATE_REQUESTED = "pf:cand:{c}:requested"
CANDIDATE_REPORTER_TTL_S = 30 * 86_400

USERS = "pf:users"
DEPLOYMENT = "pf:deployment"
STATS = "pf:stats"

MODEL_CURRENT = "pf:{model}:current"
MODEL_VERSIONS = "pf:{model}:versions"
MODEL_DECISIONS = "pf:{model}:decisions"
MODEL_SEARCH = "pf:{model}:search"
MODEL_CHANNEL = "pf:model:events"
TRAIN_REQUESTED = "pf:train:requested"
TRAIN_LOCK = "pf:train:lock"
WORKER_STATE = "pf:worker:state"
ARTIFACT_CURRENT = "pf:{artifact}:current"
ARTIFACT_VERSIONS = "pf:{artifact}:versions"
ARTIFACT_BUILDER = "pf:{artifact}:builder"
SILENT_INSTALLS = "pf:installs:silent"
ERASURES = "pf:erasures"
ERASED = "pf:erased"
LINKS = "pf:links"
WORKER_HEARTBEAT = "pf:worker:heartbeat"

RATE_LIMIT_NAMESPACE = "pf:ratelimit"


RATE_WINDOW_S = 60


def rate_limit(who: str, window_s: int = RATE_WINDOW_S) -> str:
    return f"{RATE_LIMIT_NAMESPACE}:{{{who}}}:{window_s}"


def install_rate_limit(token_hash: str) -> str:
    """An install's request budget, named by its token's hash (not by the reader)."""
    return rate_limit(f"t:{token_hash[:32]}")


DIGEST_SUBSCRIBERS = "pf:digest:subscribers"
DIGEST_LOCK = "pf:digest:lock"
LINK_SECRET = "pf:secret:links"

WINDOWS = ("day", "week", "month")


def candidate_reporters(paper_id: str) -> str:
    return f"pf:cand:{{c}}:by:{paper_id}"


def candidate_requesters(paper_id: str) -> str:
    return f"pf:cand:{{c}}:req:{paper_id}"


def trend_scores(window: str) -> str:
    return f"pf:trend:{{{window}}}:scores"


def trend_epoch(window: str) -> str:
    return f"pf:trend:{{{window}}}:epoch"


def trend_once(window: str, once: str) -> str:
    return f"pf:trend:{{{window}}}:once:{once}"


def token(token_hash: str) -> str:
    return f"pf:token:{token_hash}"


def pairing_code(code_hash: str) -> str:
    return f"pf:pair:{code_hash}"


def pairing_tries(token_hash: str) -> str:
    return f"pf:pairtry:{token_hash}"


def user_installs(user_id: str) -> str:
    return _user(user_id, "installs")


def user_pairing(user_id: str) -> str:
    return _user(user_id, "pairing")


def user_requests(user_id: str) -> str:
    """The papers the reader asked the catalog for (``POST /v1/catalog/requests``)."""
    return _user(user_id, "requests")


def user_imports(user_id: str) -> str:
    """The reader's library imports this hour (``POST /v1/me/import``'s budget)."""
    return _user(user_id, "imports")


def user_follows(user_id: str) -> str:
    """The authors and topics the reader follows (``paperfeed.follows``)."""
    return _user(user_id, "follows")


def user_candidates(user_id: str) -> str:
    """The candidates of the reader's cached feed and their signals (binary, with the
    feed's time to live): what a feed after impressions re-sorts."""
    return _user(user_id, "candidates")


def user_budget(user_id: str) -> str:
    """The request budgets of the reader's installs this minute, under the reader's hash
    tag: the script that serves a feed or ingests events spends it in the same call."""
    return _user(user_id, "budget")


def _user(user_id: str, name: str) -> str:
    return f"pf:{{u:{user_id}}}:{name}"


def user_profile(user_id: str) -> str:
    return _user(user_id, "profile")


def user_papers(user_id: str) -> str:
    return _user(user_id, "papers")


def user_events(user_id: str) -> str:
    return _user(user_id, "events")


def user_seen(user_id: str) -> str:
    return _user(user_id, "seen")


def user_page_titles(user_id: str) -> str:
    return _user(user_id, "titles")


def legacy_user_touched(user_id: str) -> str:
    return _user(user_id, "touched")


def legacy_user_log(user_id: str) -> str:
    return _user(user_id, "log")


def legacy_user_dedupe(user_id: str) -> str:
    return _user(user_id, "dedupe")


def user_vector(user_id: str) -> str:
    return _user(user_id, "vector")


def user_feed(user_id: str) -> str:
    return _user(user_id, "feed")


def user_digest(user_id: str) -> str:
    return _user(user_id, "digest")


def user_digest_sent(user_id: str) -> str:
    return _user(user_id, "digest:sent")


def user_digest_outbox(user_id: str) -> str:
    return _user(user_id, "digest:outbox")


def digest_confirmations(address_hash: str) -> str:
    return f"pf:digest:confirm:{address_hash}"


def user_keys(user_id: str) -> list[str]:
    """Every key that belongs to one user (erasure deletes them all)."""
    return [
        user_profile(user_id),
        user_papers(user_id),
        user_events(user_id),
        user_seen(user_id),
        user_page_titles(user_id),
        user_vector(user_id),
        user_feed(user_id),
        user_candidates(user_id),
        user_digest(user_id),
        user_digest_sent(user_id),
        user_digest_outbox(user_id),
        user_installs(user_id),
        user_pairing(user_id),
        user_imports(user_id),
        user_requests(user_id),
        user_follows(user_id),
        user_budget(user_id),
        legacy_user_touched(user_id),
        legacy_user_log(user_id),
        legacy_user_dedupe(user_id),
    ]


def model_meta(version: str) -> str:
    return f"pf:{{model}}:{version}:meta"


def model_blob(version: str) -> str:
    return f"pf:{{model}}:{version}:blob"


def artifact_header(artifact_id: str) -> str:
    return f"pf:{{artifact}}:{artifact_id}:header"


def artifact_chunk(artifact_id: str, n: int) -> str:
    return f"pf:{{artifact}}:{artifact_id}:{n}"

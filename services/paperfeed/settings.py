"""Every setting of paperfeed, read from the environment in one place.

Each field maps to one environment variable: ``REDIS_URL`` for ``redis_url`` and
``PAPERFEED_<FIELD>`` (upper case) for every other field. ``docs/configuration.md``
lists them; ``paperfeed settings`` prints the values in force.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

PositiveInt = Annotated[int, Meta(ge=1)]
PositiveFloat = Annotated[float, Meta(gt=0)]
Fraction = Annotated[float, Meta(ge=0, le=1)]

EXTENSION_ORIGINS = r"^(chrome-extension|moz-extension|safari-web-extension)://[A-Za-z0-9_.-]+$"


class SettingsError(ValueError):
    """A setting has a wrong value; the message names its environment variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # --- where things are
    redis_url: str | None = None
    """Redis to use (``redis://``, ``rediss://`` or ``unix://``). Unset: an embedded
    redis-server is started with its data (AOF) in ``data_dir``."""
    redis_cluster: bool = False
    """``REDIS_URL`` names one node of a Redis Cluster: use the cluster client (slots,
    redirections, failover). Every multi-key command stays inside one hash slot."""
    redis_wait_replicas: Annotated[int, Meta(ge=0, le=16)] = 0
    """Replicas that must have an event batch before it is acknowledged (Redis ``WAIT``).
    0: acknowledged once the primary has it. Set 1 with replicas, so that a failover
    cannot lose an acknowledged event; unacknowledged batches answer 503 and are retried."""
    redis_wait_timeout_ms: PositiveInt = 500
    """How long an event batch waits for ``redis_wait_replicas`` before answering 503."""
    redis_max_connections: PositiveInt = 200
    """Connections one process opens to Redis (per node of a cluster). On one Redis,
    requests beyond wait up to 5 s for a free one; a cluster answers 503 beyond."""
    redis_maxmemory: Annotated[str, Meta(pattern=r"^[0-9]+([kKmMgG][bB]?|[bB])?$")] = "1gb"
    """``maxmemory`` of the embedded redis-server (``REDIS_URL`` unset), as Redis writes it
    (``512mb``, ``2gb``; ``0``: no limit). At it Redis evicts nothing and refuses writes:
    the api answers writes 503 and keeps serving reads (docs/deploy.md, "Memory limit and
    eviction"). Applied when the server starts."""
    data_dir: str = "./var"
    """Directory of the embedded Redis (socket, AOF files) and of trainer artefacts."""
    host: str = "127.0.0.1"
    """Address ``paperfeed serve`` listens on (``0.0.0.0`` in containers)."""
    port: Annotated[int, Meta(ge=1, le=65535)] = 8000
    """Port ``paperfeed serve`` listens on."""
    forwarded_allow_ips: str = "127.0.0.1"
    """Proxies whose X-Forwarded-For is believed (comma-separated, ``*`` for any): behind
    an ingress, its address; otherwise every client shares one rate-limit budget."""
    workers: PositiveInt = 1
    """uvicorn worker processes of ``paperfeed serve``."""
    keep_alive_s: PositiveInt = 75
    """How long an idle client connection is kept open. Longer than a proxy's own idle
    timeout (nginx and cloud load balancers: 60 s): a connection the api closes just as
    the proxy reuses it fails that request (a 502)."""
    demo_catalog: bool = True
    """Load the shipped Hugging Face trending page when the catalog is empty."""

    # --- security
    admin_token: str | None = None
    """Bearer token of the admin endpoints. Unset: admin endpoints answer 403."""
    cors_origin_regex: str = EXTENSION_ORIGINS
    """Origins allowed by CORS (default: browser-extension origins only)."""
    rate_limit_per_minute: PositiveInt = 600
    """Requests a minute per install; requests without a valid token share their client
    address's budget of the same size."""
    installs_per_hour: PositiveInt = 30
    """Installs one client address may create an hour (``POST /v1/installs``)."""
    max_body_bytes: PositiveInt = 1_000_000
    """Largest request body accepted (413 beyond)."""

    # --- events
    max_batch: Annotated[int, Meta(ge=1, le=10_000)] = 500
    """Most events one ``POST /v1/events`` may carry."""
    event_log_bytes: Annotated[int, Meta(ge=1_024, le=1_048_576)] = 32_768
    """Bytes of event log kept per reader (the newest events; about 30 bytes an event,
    see docs/events.md): what the export lists."""
    user_papers_cap: Annotated[int, Meta(ge=20, le=100_000)] = 1_000
    """Papers remembered per reader. Past it, papers the reader never upvoted, saved,
    dismissed or shared are forgotten first, oldest first."""
    dedupe_cap: Annotated[int, Meta(ge=100, le=100_000)] = 2_000
    """Event ids remembered per reader (the newest), for idempotent replay."""
    page_titles_cap: Annotated[int, Meta(ge=0, le=10_000)] = 50
    """Page titles kept per reader for papers the catalog lacks (their library shows
    them until a source describes the paper)."""
    reports_per_day: Annotated[int, Meta(ge=0, le=10_000)] = 100
    """Papers the catalog lacks that one reader may report a day (for a source to look
    up); beyond, their events are kept but report nothing."""
    candidate_min_users: PositiveInt = 2
    """Distinct installs that must report an unknown arXiv id before the worker looks it
    up at the sources (only a source's metadata admits a paper; with 2, the catalog never
    tells what one reader opened)."""
    candidate_cap: PositiveInt = 10_000
    """Reported arXiv ids remembered while they wait for a source to confirm them."""
    candidate_lookup_interval_s: Annotated[float, Meta(ge=0)] = 300.0
    """How often the worker looks reported arXiv ids up at the sources (0: never, and no
    reported paper is admitted; ``paperfeed sync --source reported`` still does)."""
    candidate_lookup_batch: Annotated[int, Meta(ge=1, le=500)] = 50
    """Reported ids looked up in one run at most, most reporters first (one arXiv
    ``id_list`` request; one Hugging Face request for each id arXiv does not know)."""
    candidate_lookup_tries: Annotated[int, Meta(ge=1, le=20)] = 3
    """Lookups answered "not known" by every source (an hour apart) before a reported id
    is dropped. A source's failure is not an answer: it is retried after a backoff."""

    # --- trending
    half_life_day_h: PositiveFloat = 8.0
    """Half-life (hours) of the ``day`` trending window."""
    half_life_week_h: PositiveFloat = 48.0
    """Half-life (hours) of the ``week`` trending window."""
    half_life_month_h: PositiveFloat = 240.0
    """Half-life (hours) of the ``month`` trending window."""
    trending_cap: PositiveInt = 50_000
    """Papers kept per trending window (the lowest scores are dropped)."""
    trending_cache_s: Annotated[int, Meta(ge=0)] = 2
    """Seconds each api process answers ``GET /v1/trending`` from its response cache
    (0: no cache)."""
    upvote_seed_weight: PositiveFloat = 1.0
    """Trending weight of one imported upvote (an in-app upvote weighs 4)."""

    # --- recommender
    model_poll_s: PositiveFloat = 5.0
    """How often each api process checks for a newly published model and catalog changes."""
    trending_snapshot_s: PositiveFloat = 600.0
    """The feed ranks with a snapshot of trending taken once in each epoch of this many
    seconds; a reader's cached feed lasts until the next epoch at most (or their next
    event, a new model, a catalog change)."""
    feed_threads: Annotated[int, Meta(ge=1, le=64)] = 2
    """Feeds ranked at once by each api process (in threads, off the event loop); more
    wait their turn."""
    artifact_wait_s: Annotated[float, Meta(ge=0)] = 60.0
    """While a worker builds serving artifacts, an api process waits up to this long for
    the one of a new model or catalog version (serving its previous catalog index
    meanwhile) before it builds the index itself; with no worker it builds at once
    (docs/recommender.md, "Serving")."""
    models_kept: PositiveInt = 3
    """Published model versions kept in Redis (older ones are pruned)."""
    train_interval_s: PositiveFloat = 3_600.0
    """The worker retrains at least this often when events arrived since the last run ..."""
    train_min_new_events: PositiveInt = 500
    """... or as soon as this many new events arrived since the last training."""
    train_min_readers: Annotated[int, Meta(ge=2)] = 2
    """Readers with a liked paper needed before a first model is trained; until then, and
    while it trains, the feed ranks by each reader's content profile."""
    first_train_delay_s: Annotated[float, Meta(ge=0)] = 30.0
    """Before the first model, the worker tries again this long after new events."""
    search_trials: Annotated[int, Meta(ge=0, le=100)] = 8
    """ALS hyperparameter settings tried by a search (0 or 1: never search; the
    ``PAPERFEED_ALS_*`` values are used as they are)."""
    search_interval_s: PositiveFloat = 86_400.0
    """A training searches the hyperparameters again when the last search is this old;
    retrainings in between reuse its result."""
    lock_ttl_s: PositiveFloat = 60.0
    """The locks of the trainer and of the digest run expire this long after their holder
    stopped renewing them (died)."""
    als_factors: Annotated[int, Meta(ge=1, le=1024)] = 256
    """ALS latent factors: where the hyperparameter search starts (and what is used when
    ``PAPERFEED_SEARCH_TRIALS`` is 0)."""
    als_iterations: Annotated[int, Meta(ge=3)] = 15
    """ALS sweeps (each training and each search trial's final model)."""
    als_regularization: PositiveFloat = 20.0
    """ALS L2 regularization (where the search starts)."""
    als_alpha: PositiveFloat = 80.0
    """Confidence scaling: the matrix holds ``alpha * log1p(weight)`` (where the search
    starts)."""
    als_scaling: Literal["log", "bm25"] = "log"
    """Confidence form: ``log`` or ``bm25`` (log1p re-weighted by BM25; where the search
    starts)."""
    itemknn_neighbours: Annotated[int, Meta(ge=0, le=1000)] = 200
    """Item-kNN neighbours the trainer keeps per paper (0: no item-kNN signal). The blend
    weighs the signal only where it clearly helps on the deployment's validation
    readers; models then carry the lists (about 8 bytes a neighbour)."""
    gate_tolerance: Fraction = 0.02
    """A new model may be this much (relative nDCG) worse than the current one."""

    # --- catalog sync
    sync_interval_s: Annotated[float, Meta(ge=0)] = 3_600.0
    """How often the worker syncs the catalog from its sources (0: never; ``paperfeed
    sync`` still does)."""
    sync_sources: Annotated[str, Meta(pattern=r"^ *(hf|arxiv) *(, *(hf|arxiv) *)*$")] = "hf,arxiv"
    """Sources the worker syncs, comma-separated: ``hf`` (Hugging Face daily papers),
    ``arxiv`` (the arXiv API's newest submissions)."""
    sync_days: Annotated[int, Meta(ge=1, le=30)] = 3
    """Days of Hugging Face daily papers read by each sync (today and the days before)."""
    sync_timeout_s: PositiveFloat = 30.0
    """Time limit of one request to a source."""
    hf_api_url: str = "https://huggingface.co"
    """Base URL of the Hugging Face api (``/api/daily_papers``); a mirror or a test server."""
    arxiv_api_url: str = "https://export.arxiv.org"
    """Base URL of the arXiv API (``/api/query``); a mirror or a test server."""
    arxiv_categories: str = "cs.LG,cs.CL,cs.CV,cs.AI"
    """arXiv categories synced, comma-separated."""
    arxiv_page_size: Annotated[int, Meta(ge=1, le=2_000)] = 100
    """Entries asked for in one arXiv request."""
    arxiv_max_pages: Annotated[int, Meta(ge=1, le=100)] = 5
    """Pages read per category in one sync at most (paging stops earlier at a page that
    holds a paper already catalogued)."""
    arxiv_delay_s: Annotated[float, Meta(ge=0)] = 3.0
    """Seconds between two arXiv requests at least (the arXiv API's terms ask for 3)."""

    # --- retention
    forget_inactive_days: PositiveFloat = 365.0
    """Installs with no event (and no digest sent) for this many days are erased, like
    ``DELETE /v1/me`` (``paperfeed worker`` daily, or ``paperfeed forget-inactive``)."""
    forget_silent_installs_days: PositiveFloat = 2.0
    """Installs that sent no event (and subscribed to no digest) this many days after
    they were created are erased by the same job (an install flood does not stay)."""

    # --- e-mail digest
    smtp_host: str | None = None
    """SMTP server for the e-mail digest. Unset: digests are off (subscribing answers 503)."""
    smtp_port: Annotated[int, Meta(ge=1, le=65535)] = 587
    """SMTP port (587 for STARTTLS, 465 for TLS, 25 for none)."""
    smtp_tls: Literal["none", "starttls", "tls"] = "starttls"
    """Transport security to the SMTP server."""
    smtp_user: str | None = None
    """SMTP login (unset: no authentication)."""
    smtp_password: str | None = None
    """SMTP password."""
    smtp_from: str = "paperfeed <digest@localhost>"
    """The digest's From address."""
    public_url: str = "http://127.0.0.1:8000"
    """Where readers reach this api: the base of the links in mails (confirm, unsubscribe)."""
    secret_key: str | None = None
    """Key that signs the links in mails. Unset: one is generated once and kept in Redis."""
    digest_hour_utc: Annotated[int, Meta(ge=0, le=23)] = 6
    """A new day's (or week's) digest is due from this hour (UTC) on."""
    digest_check_s: PositiveFloat = 300.0
    """How often ``paperfeed worker`` looks for due digests."""

    # --- logs
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Least severe log level written."""
    log_json: bool | None = None
    """JSON lines on stderr (true), or readable lines for people (false). Unset: readable
    on a terminal, JSON lines otherwise (containers, files, log collectors)."""

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def half_lives_s(self) -> dict[str, float]:
        return {
            "day": self.half_life_day_h * 3600,
            "week": self.half_life_week_h * 3600,
            "month": self.half_life_month_h * 3600,
        }


def env_name(field: str) -> str:
    return "REDIS_URL" if field == "redis_url" else f"PAPERFEED_{field.upper()}"


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce ``settings`` in another process."""
    env = {}
    for field in Settings.__struct_fields__:
        value = getattr(settings, field)
        if value is not None:
            env[env_name(field)] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from ``environ`` (default ``os.environ``), then ``overrides``.

    Raises ``SettingsError`` naming the variable at fault.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    for field in Settings.__struct_fields__:
        value = environ.get(env_name(field))
        if value is not None and value != "":
            raw[field] = value
    raw.update(overrides)
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        for field in Settings.__struct_fields__:
            if f"`$.{field}`" in message:
                message = message.replace(f"`$.{field}`", env_name(field))
        raise SettingsError(f"invalid setting: {message}") from exc

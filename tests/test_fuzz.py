"""Property-based fuzzing of the real api from its own OpenAPI schema (schemathesis).

Every operation gets generated requests, valid ones (positive) and invalid ones
(negative); each response must not be a 5xx and must match the schema: a documented
status code, a body and headers as declared. The run is bounded (``FUZZ_EXAMPLES`` per
operation and mode) so that CI stays fast; raise it with that environment variable for
a longer hunt (``bench/README`` in docs/reliability.md).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import ignored_auth

from tests.conftest import (
    LiveServer,
    Mailbox,
    live_server,
    make_settings,
    register,
    smtp_settings,
)

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))


@pytest.fixture(scope="module")
def fuzz_server(redis_url: str) -> Iterator[LiveServer]:
    # No admin token: admin endpoints must refuse every generated request (and a fuzzer
    # must not start training runs).
    mailbox = Mailbox()  # digest subscriptions send their confirmation mail here
    mailbox.controller.start()
    settings = make_settings(
        redis_url, admin_token=None, **smtp_settings(mailbox, "http://127.0.0.1:1")
    )
    with live_server(settings) as live:
        yield live
    mailbox.controller.stop()


class Fuzzer:
    """Runs generated requests of one operation against the server, keeping the verdicts."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url)
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []

    def send(self, case: schemathesis.Case, label: str) -> None:
        # A fresh install for each case: generated DELETE /v1/me calls erase theirs.
        _, auth = register(self.http)
        # The valid token is set on the case itself: schemathesis re-checks whether a
        # negative case is still negative after the change.
        case.headers = {**(case.headers or {}), **auth}
        try:
            response = case.call(base_url=self.base_url)
            self.statuses[response.status_code] += 1
            assert response.status_code < 500, response.text[:300]
            # ignored_auth takes our real token for a generated one; tokens have their own
            # tests in test_reliability.py (forged, another user's, admin).
            case.validate_response(response, excluded_checks=[ignored_auth])
        except (AssertionError, BaseExceptionGroup) as error:
            # schemathesis reports its checks' failures as an exception group
            self.failures.append(f"{label}: {str(error)[:800]}")
            raise

    def fuzz(self, operation: Any, mode: GenerationMode) -> None:
        label = f"{operation.label} [{mode.value}]"

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            self.send(case, label)

        try:
            run()
        except (AssertionError, BaseExceptionGroup):
            pass  # recorded; every operation is fuzzed before the verdict
        except Unsatisfiable:
            # No invalid request exists (an operation without parameters or body).
            assert mode is GenerationMode.NEGATIVE, label


def test_no_5xx_and_every_response_matches_the_schema(fuzz_server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    fuzzer = Fuzzer(fuzz_server.url)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzzer.fuzz(operation, mode)
    fuzzer.http.close()
    total = sum(fuzzer.statuses.values())
    print(f"fuzz cases: {total}; statuses: {dict(sorted(fuzzer.statuses.items()))}")
    assert not fuzzer.failures, "\n".join(dict.fromkeys(fuzzer.failures))
    assert total >= len(operations) * 2
    assert not any(status >= 500 for status in fuzzer.statuses)

"""The test suite's own rules: a failure anywhere in a test fails it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_an_assertion_that_fails_in_a_thread_fails_its_test(tmp_path: Path) -> None:
    """Load generators and fault-injection senders assert in threads: with the suite's
    configuration, such an assertion fails the test that started the thread (pytest
    alone would only warn)."""
    (tmp_path / "test_threaded.py").write_text(
        "import threading\n"
        "\n"
        "def test_a_thread_asserts():\n"
        "    def work():\n"
        "        assert 1 == 2, 'a failure inside a thread'\n"
        "    thread = threading.Thread(target=work)\n"
        "    thread.start()\n"
        "    thread.join()\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q",
         str(tmp_path / "test_threaded.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed" in run.stdout, run.stdout
    assert "a failure inside a thread" in run.stdout

"""bench/two_nodes_kill.py in CI: two gunicorn nodes and two schedulers on one PostgreSQL, one of
each killed with SIGKILL mid-work; no payment lost or doubled, each nightly job done once, the
killed reconciliation taken over. It runs once, in `make test` (the `two_nodes` marker keeps it
out of `make test-postgres`, which would only repeat it on the same server)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PROJECT_ROOT

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.two_nodes, pytest.mark.timeout(280)]


def test_two_nodes_and_two_schedulers_survive_a_kill_each(postgres_url: str) -> None:
    # A database of its own beside the race tests' one: the script drops and re-creates it.
    url = make_url(postgres_url)
    database = url.set(database=f"{url.database}_two_nodes").render_as_string(hide_password=False)
    run = subprocess.run([sys.executable, "-m", "bench.two_nodes_kill", "--database", database],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240, check=False)
    print(run.stdout)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-3000:]}"
    assert "all checks passed" in run.stdout

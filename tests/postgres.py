"""A real PostgreSQL for the feedback-store tests.

`postgres_url` (session): `TEST_DATABASE_URL` when set (CI's .ci/run starts one), else a throwaway
cluster started by scripts/postgres.sh (which installs Debian's postgresql when missing). When
PostgreSQL cannot be had the tests are skipped with the reason, except under CI (CI=true), where
that is a failure: both databases must be tested for real there.

`fresh_postgres_database(url)`: a new, empty database on that server for one test; dropped after.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "postgres.sh"


def _unavailable(reason: str):
    message = f"PostgreSQL is not available: {reason}"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(message + " (CI must test the feedback store on PostgreSQL)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    work = tempfile.mkdtemp(prefix="hematotox-pg-")
    os.chmod(work, 0o755)  # the cluster belongs to the postgres user when we are root
    cluster = os.path.join(work, "cluster")
    try:
        result = subprocess.run([str(SCRIPT), "start", cluster], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(work, ignore_errors=True)
        _unavailable(f"scripts/postgres.sh could not run ({exc})")
    if result.returncode != 0 or not result.stdout.strip():
        shutil.rmtree(work, ignore_errors=True)
        _unavailable("scripts/postgres.sh start failed: " + result.stderr.strip()[-800:])
    try:
        yield result.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(SCRIPT), "stop", cluster], capture_output=True, timeout=120)
        shutil.rmtree(work, ignore_errors=True)


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    u = make_url(url)
    conn = await asyncpg.connect(host=u.host, port=u.port, user=u.username, password=u.password, database=u.database)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def fresh_postgres_database(url: str) -> Iterator[str]:
    name = f"hematotox_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

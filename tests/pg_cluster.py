"""A throwaway PostgreSQL cluster for tests: initdb in a temp folder, a server on a local port,
trust authentication, no fsync; stopped and deleted afterwards.

Used two ways (one implementation):
- ``.ci/run``: ``python tests/pg_cluster.py start DIR`` prints the server URL (exported as
  ``LUNGPIPE_TEST_POSTGRES_URL``), ``python tests/pg_cluster.py stop DIR`` tears it down (trap);
- the pytest fixtures below: they use ``LUNGPIPE_TEST_POSTGRES_URL`` when set, else start a
  cluster of their own when the Debian ``postgresql`` binaries exist, else skip saying how to run
  the tests (or fail, when ``LUNGPIPE_REQUIRE_POSTGRES=1``, as ``.ci/run`` sets).

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user (runuser).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from servers import free_port

URL_ENV = "LUNGPIPE_TEST_POSTGRES_URL"
REQUIRE_ENV = "LUNGPIPE_REQUIRE_POSTGRES"
BIN_GLOB = "/usr/lib/postgresql/*/bin"
USER = "lungpipe"
HOW_TO = ("run .ci/run (it installs the Debian postgresql package and starts a cluster), install "
          "postgresql (apt-get install postgresql), or set LUNGPIPE_TEST_POSTGRES_URL=postgresql://user@host:port/postgres")


def find_bin() -> Path | None:
    found = sorted(glob.glob(f"{BIN_GLOB}/initdb"))
    return Path(found[-1]).parent if found else None


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start(base: Path) -> str:
    """initdb + start in ``base`` (created); returns the server URL (database ``postgres``)."""
    bindir = find_bin()
    if bindir is None:
        raise RuntimeError(f"PostgreSQL binaries not found under {BIN_GLOB}; {HOW_TO}")
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    port = free_port()
    run = lambda cmd: subprocess.run(_as_server_user(cmd), check=True, capture_output=True, text=True)
    try:
        run([str(bindir / "initdb"), "-D", str(base / "data"), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"])
        run([str(bindir / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "server.log"), "-w", "-t", "60",
             "-o", (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                    "-c full_page_writes=off -c max_connections=200"), "start"])
    except subprocess.CalledProcessError as exc:
        log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
        raise RuntimeError(f"PostgreSQL did not start in {base}: {exc.stderr or exc.stdout}\n{log[-2000:]}") from exc
    (base / "url").write_text(f"postgresql://{USER}@127.0.0.1:{port}/postgres")
    return (base / "url").read_text()


def stop(base: Path) -> None:
    """Stop the cluster in ``base`` (immediate shutdown) and delete the folder."""
    bindir = find_bin()
    base = Path(base)
    if bindir is not None and (base / "data" / "postmaster.pid").exists():
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "-w",
                                        "stop"]), capture_output=True, check=False)
    shutil.rmtree(base, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """A new empty database on the server; returns its URL."""
    import psycopg2

    conn = psycopg2.connect(server_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def postgres_server():
    """URL of a running PostgreSQL server (from .ci/run, or a cluster started for this session)."""
    url = os.environ.get(URL_ENV)
    if url:
        yield url
        return
    if find_bin() is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"PostgreSQL is required here ({REQUIRE_ENV}=1) but not installed; {HOW_TO}")
        pytest.skip(f"PostgreSQL binaries not found under {BIN_GLOB}: {HOW_TO}")
    base = Path(tempfile.mkdtemp(prefix="lungpipe-pg-"))
    try:
        yield start(base)
    finally:
        stop(base)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database for one test."""
    return create_database(postgres_server, f"t_{uuid.uuid4().hex[:12]}")


if __name__ == "__main__":
    action, folder = sys.argv[1], Path(sys.argv[2])
    if action == "start":
        print(start(folder))
    elif action == "stop":
        stop(folder)
    else:
        sys.exit(f"usage: {sys.argv[0]} start|stop DIR")

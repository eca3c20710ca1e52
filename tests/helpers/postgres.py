"""A throwaway PostgreSQL server for the tests and the reliability bench.

`PostgresServer` runs Debian's server binaries (``initdb``, ``pg_ctl``; not on PATH, found
under ``/usr/lib/postgresql/<version>/bin``) on a fresh cluster in a private temporary
folder, listening only on a Unix socket in that folder (no TCP port, so parallel runs never
collide). ``initdb`` refuses to run as root, so as root the cluster runs as the
``postgres`` OS user that Debian's package creates. Durability is switched off: the cluster
is deleted at the end anyway, and fsync would make every test slower.

Each test gets its own database (`create_database`), dropped afterwards. A server that
cannot start raises `PostgresUnavailable` with the reason; the fixtures turn that into a
failing test, never a skipped one. ``scripts/test.sh`` installs the binaries where missing.

One user, ``secret_user``, must log in with a password (scram-sha-256; everyone else is
trusted): the tests that check that a password never shows need a server that checks it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

PORT = 5432  # only names the socket file inside the private folder
PASSWORD_USER = "secret_user"
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """The throwaway server cannot be started; the message says why and what to do."""


def server_binaries() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl`` (newest installed version first)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent

    def version(folder: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", folder.parent.name))

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise PostgresUnavailable(
        "PostgreSQL's server binaries (initdb, pg_ctl) are not installed; "
        "run scripts/test.sh, which installs Debian's postgresql package."
    )


class PostgresServer:
    """One throwaway cluster: `start`, then `create_database` per test, `stop` at the end."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self._names = itertools.count(1)
        self._bin: Path | None = None
        self._as_user: list[str] = []

    # ------------------------------------------------------------ lifecycle
    def start(self) -> PostgresServer:
        self._bin = server_binaries()
        self.root = Path(tempfile.mkdtemp(prefix="distillery-pg-"))
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresUnavailable(
                    "initdb refuses to run as root and there is no 'postgres' OS user; "
                    "install Debian's postgresql package (scripts/test.sh does)."
                ) from exc
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        data = self.root / "data"
        self._run(
            "initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        hba = data / "pg_hba.conf"
        # First match wins: the password user is checked, everyone else is trusted.
        self._write_as_owner(hba, f"local all {PASSWORD_USER} scram-sha-256\n" + hba.read_text())
        options = (
            f"-p {PORT} -k {self.root} -c listen_addresses='' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            "pg_ctl", "-D", str(data), "-o", options, "-l", str(self.root / "server.log"),
            "-w", "-t", str(START_TIMEOUT_S), "start",
        )  # fmt: skip
        self.execute(
            f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD 'x' CREATEDB",
        )
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        with contextlib.suppress(PostgresUnavailable):
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ databases
    def url(self, database: str = "postgres", user: str = "postgres", password: str = "") -> str:
        """A psycopg 3 SQLAlchemy URL through the socket folder."""
        credentials = f"{user}:{password}" if password else user
        return f"postgresql+psycopg://{credentials}@/{database}?host={self.root}&port={PORT}"

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host=str(self.root), port=PORT, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(sql)

    def create_database(self, owner: str = "postgres") -> tuple[str, str]:
        """A new empty database; returns (name, URL for the postgres user)."""
        name = f"distillery_test_{os.getpid()}_{next(self._names)}"
        # FILE_COPY: with fsync off, copying the template is faster than WAL-logging it.
        self.execute(f"CREATE DATABASE {name} OWNER {owner} STRATEGY FILE_COPY")
        return name, self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def set_password(self, password: str) -> None:
        """Give `PASSWORD_USER` this password (tests pick ones they can search for)."""
        self.execute(f"ALTER ROLE {PASSWORD_USER} PASSWORD '{password}'")

    # ------------------------------------------------------------ helpers
    def _run(self, tool: str, *args: str) -> None:
        assert self._bin is not None
        command = [*self._as_user, str(self._bin / tool), *args]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresUnavailable(f"{tool} could not run: {exc}") from exc
        if done.returncode != 0:
            log = self.root / "server.log" if self.root else None
            tail = log.read_text()[-1500:] if log and log.is_file() else ""
            raise PostgresUnavailable(
                f"{tool} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-1500:]} {tail}".strip()
            )

    def _write_as_owner(self, path: Path, text: str) -> None:
        stat = path.stat()
        path.write_text(text)
        if os.geteuid() == 0:  # root wrote it; the server must still own its config
            os.chown(path, stat.st_uid, stat.st_gid)

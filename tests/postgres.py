"""A real PostgreSQL server for the tests, started and stopped by them.

`initdb` in a temporary folder (as the `postgres` user when the tests run as root: initdb refuses
root), `pg_ctl` on a free loopback port with password authentication (scram-sha-256), so that
a wrong or missing password is refused as on a real server. Debian keeps the server binaries off
PATH, in /usr/lib/postgresql/<version>/bin; `make postgres` installs them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

USER = "tuner"


def server_binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's newest version."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                         key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                         reverse=True):
        if (folder / "pg_ctl").is_file() and (folder / "initdb").is_file():
            return folder
    return None


def why_not() -> str | None:
    """Why no server can be started here, or None."""
    if server_binaries() is None:
        return ("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
                "/usr/lib/postgresql/*/bin: `make postgres` installs Debian's package")
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no `postgres` user to run initdb as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install -e '.[test,postgres]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    folder: Path
    port: int
    password: str

    def url(self, database: str, *, password: bool = True) -> str:
        """A SQLAlchemy URL of `database`, with the password in it or (password=False) left to
        libpq's PGPASSWORD / ~/.pgpass."""
        secret = f":{quote(self.password, safe='')}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=USER,
                               password=self.password, dbname=database, autocommit=True)

    def create_database(self) -> str:
        name = f"t_{secrets.token_hex(6)}"
        with self.connect() as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return name

    def dump(self, database: str) -> str:
        """Every row of every table of `database`, as text (to search for what was stored)."""
        with self.connect(database) as connection:
            tables = [r[0] for r in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            return "\n".join(str(row) for table in tables
                             for row in connection.execute(f'SELECT * FROM "{table}"'))


def _as_owner(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a server command as the folder's owner: `postgres` when we are root."""
    if os.geteuid() == 0:
        kwargs.update(user="postgres", group="postgres")
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


@contextlib.contextmanager
def running_server():
    """Start a server in a temporary folder; stop it and remove the folder at the end."""
    binaries = server_binaries()
    # Not under pytest's tmp_path: the postgres user must be able to reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
    # Characters a URL must encode, so that masking is tested on what users really write.
    password = f"pw-{secrets.token_hex(8)}@/:?"
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        (folder / "pwfile").write_text(password + "\n")
        if os.geteuid() == 0:
            shutil.chown(folder / "pwfile", "postgres", "postgres")
        init = _as_owner([str(binaries / "initdb"), "-D", str(folder / "data"), "-U", USER,
                          f"--pwfile={folder / 'pwfile'}", "--auth-host=scram-sha-256",
                          "--auth-local=trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
                         cwd=folder)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.strip()[-2000:]}")
        port = _free_port()
        options = (f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        start = _as_owner([str(binaries / "pg_ctl"), "-D", str(folder / "data"), "-l",
                           str(folder / "log"), "-o", options, "-w", "-t", "60", "start"],
                          cwd=folder)
        if start.returncode != 0:
            log = (folder / "log").read_text() if (folder / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {start.stderr.strip()} {log[-2000:]}")
        try:
            yield Server(folder, port, password)
        finally:
            _as_owner([str(binaries / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate",
                       "-w", "stop"], cwd=folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

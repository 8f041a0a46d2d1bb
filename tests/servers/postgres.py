"""A real PostgreSQL server for tests: its own cluster in a temp folder, 127.0.0.1, a free port.

Why a private cluster: fault tests stop and restart the server (`stop("immediate")` is a
crash), which is never safe on a shared one. Local (unix socket) connections trust; TCP needs
the generated password, so a URL with a wrong or missing password fails the way it would in a
plant. The socket lives in the temp folder, not /var/run/postgresql.

initdb and postgres refuse to run as root; as root (CI, containers) they run as an
unprivileged user (`postgres` where the Debian package made one, else `nobody`) through
`runuser`/`setpriv`, and the temp folder is chowned to it. It is made with `mkdtemp` in the
system temp folder, not under pytest's tmp_path, whose parent is private to root.

Binaries: $CELLINSPECT_PG_BINDIR, `pg_config --bindir`, /usr/lib/postgresql/<newest>/bin (the
Debian package keeps them off PATH), then PATH.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from tests.servers import unavailable

StopMode = Literal["smart", "fast", "immediate"]
Scope = Literal["function", "class", "module", "package", "session"]
TOOLS = ("initdb", "pg_ctl", "postgres")
START_TIMEOUT_S = 60


class PostgresUnavailableError(RuntimeError):
    """No usable PostgreSQL binaries (or no unprivileged user to run them as root)."""


def _has_tools(folder: Path) -> bool:
    return all(os.access(folder / tool, os.X_OK) for tool in TOOLS)


def _version_key(folder: Path) -> tuple[int, ...]:
    name = folder.parent.name  # /usr/lib/postgresql/15/bin -> "15"
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def find_bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres; else an error naming where it looked."""
    candidates: list[Path] = []
    env = os.environ.get("CELLINSPECT_PG_BINDIR")
    if env:
        candidates.append(Path(env))
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=_version_key, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if _has_tools(folder):
            return folder
    looked = ", ".join(str(c) for c in candidates) or "nothing found"
    raise PostgresUnavailableError(
        f"PostgreSQL server binaries ({', '.join(TOOLS)}) not found (looked in: {looked}; "
        "PATH, pg_config and /usr/lib/postgresql/*/bin); install the Debian package "
        "'postgresql' (scripts/bootstrap.sh --dev does)"
    )


def _run_as() -> tuple[list[str], pwd.struct_passwd | None]:
    """The command prefix that drops root, and the user it drops to (none when not root)."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"], user
        if shutil.which("setpriv"):
            return [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--clear-groups",
                "--",
            ], user
        raise PostgresUnavailableError("running as root without runuser or setpriv to drop it")
    raise PostgresUnavailableError("running as root and no 'postgres' or 'nobody' user to drop to")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One private PostgreSQL cluster; `start()` creates it, `close()` removes it all."""

    def __init__(
        self,
        bindir: Path | None = None,
        user: str = "cellinspect",
        max_connections: int = 50,
        shared_buffers: str = "16MB",
    ) -> None:
        """`max_connections`/`shared_buffers`: the tests' small server unless told otherwise
        (the plant load benchmark needs one connection per simulated station)."""
        self.max_connections = max_connections
        self.shared_buffers = shared_buffers
        self.bindir = bindir if bindir is not None else find_bindir()
        self.user = user
        self.password = secrets.token_urlsafe(18)
        self.port = free_port()
        self._prefix, self._owner = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="cellinspect-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.logfile = self.root / "postgres.log"
        self._initialised = False

    # ------------------------------------------------------------------ processes

    def _pg(self, tool: str, *args: str, timeout: float = 120.0) -> None:
        """Run a server tool (as the unprivileged owner under root); its output on failure."""
        cmd = [*self._prefix, str(self.bindir / tool), *args]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        done = subprocess.run(
            cmd, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout}"
                f"{done.stderr}\n{self.log_tail()}"
            )

    def _chown(self, path: Path) -> None:
        if self._owner is not None:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    def _initdb(self) -> None:
        self._chown(self.root)
        self.sockets.mkdir()
        self._chown(self.sockets)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        try:
            self._pg(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-locale",
                "--encoding=UTF8",
                "--no-sync",
            )
        finally:
            pwfile.unlink()
        self._initialised = True

    def start(self) -> PostgresServer:
        """Create the cluster on the first call, then start the server and wait until ready."""
        if not self._initialised:
            self._initdb()
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.sockets} -F "
            f"-c max_connections={self.max_connections} -c shared_buffers={self.shared_buffers}"
        )
        self._pg(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-o",
            options,
            timeout=START_TIMEOUT_S + 30,
        )
        return self

    def stop(self, mode: StopMode = "fast") -> None:
        """`pg_ctl stop -m mode`; "immediate" is a crash (recovery runs at the next start)."""
        self._pg("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w")

    def restart(self) -> None:
        """Start again on the same port, so URLs handed out before keep working."""
        self.start()

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        """Stop the server if it runs and remove the cluster and its folder."""
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------------ databases

    def url(self, database: str = "postgres", driver: str = "psycopg") -> URL:
        """The SQLAlchemy URL over TCP with the password; render with hide_password for logs."""
        return URL.create(
            f"postgresql+{driver}",
            username=self.user,
            password=self.password,
            host="127.0.0.1",
            port=self.port,
            database=database,
        )

    def url_string(self, database: str = "postgres") -> str:
        """`url()` as a string with the password in it (for a child's environment only)."""
        return self.url(database).render_as_string(hide_password=False)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its name."""
        name = name or f"cellinspect_{secrets.token_hex(6)}"
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and _ only")
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return name


def require_postgres() -> Path:
    """The binaries folder, or skip (fail with CELLINSPECT_REQUIRE_SERVERS=1) naming why not."""
    try:
        bindir = find_bindir()
        _run_as()
    except PostgresUnavailableError as err:
        unavailable(str(err))
        raise  # unreachable: unavailable() skips or fails
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("the PostgreSQL driver is not installed (pip install -e '.[postgres]')")
    return bindir


def postgres_fixture(scope: Scope = "function") -> Callable[[], Iterator[PostgresServer]]:
    """A pytest fixture yielding a started private server, closed after `scope`.

    In a test module: `postgres = postgres_fixture("module")`.
    """

    @pytest.fixture(scope=scope)
    def postgres() -> Iterator[PostgresServer]:
        server = PostgresServer(require_postgres())
        try:
            server.start()
            yield server
        finally:
            server.close()

    return postgres

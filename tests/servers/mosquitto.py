"""A real Mosquitto broker for tests: its own config in a temp folder, 127.0.0.1, a free port.

Why a private broker: the MQTT tests stop, restart and crash it mid-run. Persistence is on
(`mosquitto.db` in the temp folder, written at a clean stop) so a subscriber's persistent
session and the retained messages outlive a restart, as at a plant broker. With `users` the
broker refuses anonymous clients and checks a password file made by mosquitto_passwd.

Clients: `Subscriber` runs the third-party `mosquitto_sub` and collects what it prints, so
the station's messages are read by a client that shares no code with it.
Binaries: /usr/sbin/mosquitto (Debian keeps it off PATH), mosquitto_sub, mosquitto_passwd.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.servers import unavailable
from tests.servers.postgres import free_port

START_TIMEOUT_S = 20.0


def find_broker() -> Path | None:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def require_mosquitto() -> Path:
    """The broker binary, or skip (fail with CELLINSPECT_REQUIRE_SERVERS=1) naming why not."""
    broker = find_broker()
    missing = [t for t in ("mosquitto_sub", "mosquitto_passwd") if shutil.which(t) is None]
    if broker is None or missing:
        unavailable(
            "Mosquitto not found (install the Debian packages 'mosquitto' and "
            "'mosquitto-clients'; scripts/bootstrap.sh --dev does)"
        )
    assert broker is not None
    return broker


class MosquittoServer:
    """One private broker; `start()`/`stop()`/`kill()` as often as a test needs, `close()`."""

    def __init__(
        self,
        broker: Path,
        users: dict[str, str] | None = None,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """`tls`: (CA, server certificate, server key) PEM files: the listener speaks TLS."""
        self.broker = broker
        self.users = users
        self.tls = tls
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cellinspect-mqtt-"))
        self.logfile = self.root / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            *(
                [f"cafile {self.tls[0]}", f"certfile {self.tls[1]}", f"keyfile {self.tls[2]}"]
                if self.tls
                else []
            ),
            f"allow_anonymous {'false' if self.users else 'true'}",
            "persistence true",
            f"persistence_location {self.root}/",
            f"log_dest file {self.logfile}",
            # As root the broker would drop to user 'mosquitto', which cannot read this folder.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        ]
        if self.users:
            pwfile = self.root / "passwords"
            pwfile.touch(mode=0o600)
            for name, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(pwfile), name, password],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            lines.append(f"password_file {pwfile}")
        (self.root / "mosquitto.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self) -> MosquittoServer:
        """Start on the same port every time; returns once the port accepts connections."""
        conf = self.root / "mosquitto.conf"
        self.proc = subprocess.Popen(
            [str(self.broker), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        end = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(
                    f"mosquitto exited ({self.proc.returncode}): {err}\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"mosquitto did not listen in {START_TIMEOUT_S} s\n{self.log_tail()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM: a clean stop (persistence saved); SIGKILL: a crash."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        try:
            self.stop(signal.SIGKILL)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def subscribe(self, topic: str, *args: str) -> Subscriber:
        return Subscriber(self, topic, *args)


class Subscriber:
    """`mosquitto_sub -F '%r %t %p'` (retain flag, topic, payload) as a child process.

    `args` adds options (`-c -i name -q 1` for a persistent session that keeps messages
    across a broker restart, `-C n` to exit after n messages).
    """

    def __init__(self, server: MosquittoServer, topic: str, *args: str) -> None:
        auth: list[str] = []
        if server.users:
            name, password = next(iter(server.users.items()))
            auth = ["-u", name, "-P", password]
        cmd = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(server.port), *auth]
        self.proc = subprocess.Popen(
            [*cmd, "-t", topic, "-F", "%r %t %p", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.messages: list[tuple[bool, str, str]] = []
        self._queue: queue.Queue[tuple[bool, str, str] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            retained, topic, payload = line.rstrip("\n").split(" ", 2)
            message = (retained == "1", topic, payload)
            self.messages.append(message)
            self._queue.put(message)
        self._queue.put(None)

    def wait_for(
        self, match: Callable[[tuple[bool, str, str]], bool], timeout: float = 30.0
    ) -> tuple[bool, str, str]:
        """The next message (from the queue of those not yet waited for) that matches."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                message = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if message is None:
                raise RuntimeError(f"mosquitto_sub exited: {self.stderr()}")
            if match(message):
                return message
        raise TimeoutError(f"no matching message in {timeout} s; got {self.messages[-5:]}")

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def mosquitto_fixture(
    users: dict[str, str] | None = None,
) -> Callable[[], Iterator[MosquittoServer]]:
    """A pytest fixture yielding a started private broker (function scope), closed after."""

    @pytest.fixture
    def mosquitto() -> Iterator[MosquittoServer]:
        server = MosquittoServer(require_mosquitto(), users)
        try:
            server.start()
            yield server
        finally:
            server.close()

    return mosquitto

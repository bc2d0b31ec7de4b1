"""Detached service processes: spawn, pid records, ownership checks, stopping, probes.

What this module is: the process plumbing under `gan.stack.supervisor`. A service is started in
its own session (it outlives the `gan stack up` command and forms its own process group), its output
goes to a log file, and a pid record (pid, start time, command line, URL) lets a later command
prove that a pid is still the process it started before signalling it: a reused pid has another
start time or command line and is never touched.

What it is not: it knows no service (see `gan.stack.services`) and reads no setting.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from gan.io.jsonio import read_json, write_json

# Variables a child must not inherit from the caller: keys of some other store, and URLs
# that would point a server at another server. Each service gets what it needs in its own env.
SCRUBBED_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_API_KEY",
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING",
)


@dataclass(frozen=True)
class ProcRecord:
    """What a pid file holds: enough to recognise the process later, and no secret."""

    pid: int
    create_time: float  # psutil's start time: a reused pid has another one
    cmdline: list[str]
    url: str
    # Start time in seconds since boot (Linux /proc/<pid>/stat starttime). `create_time` is
    # that plus the boot time the kernel reports *now*, which moves whenever the wall clock is
    # stepped (NTP on a CI machine): compared across commands it made live services look
    # stale. None where /proc is absent (then `create_time` is compared, 1 s slack).
    boot_start_s: float | None = None


def spawn(
    argv: Sequence[str], env: Mapping[str, str], *, cwd: Path, log: Path, pid_file: Path, url: str
) -> ProcRecord:
    """Start `argv` detached (new session), output appended to `log`; write its pid record."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=child_env(env),
            start_new_session=True,  # own session and process group: survives our exit
            close_fds=True,
        )
    p = psutil.Process(proc.pid)
    rec = ProcRecord(proc.pid, p.create_time(), _settled_cmdline(p, argv), url,
                     boot_start_s(proc.pid))
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    write_json(pid_file, asdict(rec))
    return rec


def _settled_cmdline(p: psutil.Process, argv: Sequence[str], timeout_s: float = 5.0) -> list[str]:
    """The command line once the kernel has set it up.

    Popen returns when exec has begun, but the new image's argument area is set a moment
    later: read too early, /proc/<pid>/cmdline is empty (seen with the large static `weed`).
    It ends with `argv` once settled (a script's interpreter may come first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cmd = p.cmdline()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return list(argv)  # died at once: `up` reports it via the log
        if cmd[-len(argv):] == list(argv) or time.monotonic() > deadline:
            return cmd
        time.sleep(0.02)


def boot_start_s(pid: int) -> float | None:
    """When `pid` started, in seconds since boot: field 22 of /proc/<pid>/stat (clock ticks),
    which no change of the wall clock moves. None off Linux or when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name "(...)" (which may hold spaces) start at field 3.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment (PATH, HOME, locale: passed through, not interpreted) less
    `SCRUBBED_ENV`, plus the service's own variables."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    return env | dict(extra)


def read_record(pid_file: Path) -> ProcRecord | None:
    """The record in `pid_file`, or None when absent or unreadable (treated as stale)."""
    try:
        data = read_json(pid_file)
        boot = data.get("boot_start_s")
        return ProcRecord(int(data["pid"]), float(data["create_time"]),
                          [str(a) for a in data["cmdline"]], str(data["url"]),
                          None if boot is None else float(boot))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def owned(rec: ProcRecord) -> psutil.Process | None:
    """The live process of `rec` if it is still the one we started (same start time and
    command line), else None. Zombies count as gone."""
    try:
        p = psutil.Process(rec.pid)
        if not _same_start(p, rec) or p.cmdline() != rec.cmdline:
            return None
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _same_start(p: psutil.Process, rec: ProcRecord) -> bool:
    """Same start time: exact in ticks since boot where recorded; else the wall-clock start
    with 1 s slack (a reused pid also needs the same command line to pass)."""
    if rec.boot_start_s is not None and (now := boot_start_s(p.pid)) is not None:
        return abs(now - rec.boot_start_s) < 1e-6
    return abs(p.create_time() - rec.create_time) <= 1.0


def terminate_trees(roots: Sequence[psutil.Process], *, grace_s: float,
                    root_only: Sequence[psutil.Process] = ()) -> None:
    """SIGTERM each root's group and descendants at once, SIGKILL what is left after `grace_s`.

    All at once so that `down` takes the slowest service's shutdown time, not the sum.
    `root_only`: roots that stop their own children on SIGTERM (`ray start --block`): only the
    root is signalled first; its descendants (recorded now) get SIGKILL only if still there
    after `grace_s` (a Ray GCS signalled beside its parent hangs for the whole grace)."""
    tree: list[psutil.Process] = []
    gentle: set[int] = set()  # pids of the root_only trees: not SIGTERMed one by one
    for root in roots:
        try:
            kids = root.children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        tree += [root, *kids]  # all waited for, and SIGKILLed if left, below
        if root in root_only:
            gentle |= {p.pid for p in (root, *kids)}
            _signal(root, signal.SIGTERM)
            continue
        try:
            # Our services lead their own group (start_new_session): the group is theirs alone.
            if os.getpgid(root.pid) == root.pid:
                os.killpg(root.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    for p in tree:  # also those that left the group; psutil re-checks identity first
        if p.pid not in gentle:
            _signal(p, signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    for p in alive:
        _signal(p, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)


def _signal(p: psutil.Process, sig: int) -> None:
    try:
        p.send_signal(sig)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass


def tree_pids(rec: ProcRecord) -> list[int]:
    """Pids of our process and its descendants (empty when it is gone)."""
    p = owned(rec)
    if p is None:
        return []
    try:
        return [p.pid, *(c.pid for c in p.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on `port` (SO_REUSEADDR: TIME_WAIT leftovers don't count).

    Binding 127.0.0.1 also fails when another program holds the wildcard address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, chosen by the OS (bind to port 0). Another process may
    take it before the caller binds: for short-lived helpers, not for the stack's plan."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_ok(url: str, *, local: bool, timeout_s: float = 3.0,
            headers: Mapping[str, str] | None = None) -> bool:
    """Local services: GET answers 200. External ones: any answer below 500 (reachable).
    A `tcp://host:port` URL (a service without HTTP, e.g. Ray's GCS): the port accepts.
    `headers`: sent with the GET (an Authorization header for a protected API)."""
    if url.startswith("tcp://"):
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            return False
    # Loopback URLs must never go through an HTTP(S)_PROXY the user may have set.
    handlers = [urllib.request.ProxyHandler({})] if local else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(urllib.request.Request(url, headers=dict(headers or {})),
                         timeout=timeout_s) as r:
            return r.status == 200 or (not local and r.status < 500)
    except urllib.error.HTTPError as e:
        return not local and e.code < 500
    except (urllib.error.URLError, OSError, ValueError):
        return False


def listening_sockets(procs: Sequence[psutil.Process]) -> list[tuple[str, str, int]]:
    """(process name, ip, port) of every listening TCP socket of `procs`; processes that are
    gone or unreadable are skipped (used to prove services bind loopback only)."""
    out = []
    for p in procs:
        try:
            out += [(p.name(), c.laddr.ip, c.laddr.port) for c in p.net_connections("inet")
                    if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return out

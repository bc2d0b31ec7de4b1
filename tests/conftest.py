"""Shared fixtures.

- `settings_env` (unit): a clean environment (no GAN_*/AWS_*/MLFLOW_*/PREFECT_*/RAY_* from the
  caller) with GAN_HOME in a temporary folder; `load()` gives `Settings.load()`.
- `stack` (integration, session): a real local stack, as a user starts it (`gan stack up` in a
  subprocess), in a temporary GAN_HOME on free ports; yields `Settings.load()`. The session's
  environment then holds GAN_HOME, GAN_*_PORT, MLFLOW_TRACKING_URI and PREFECT_API_URL, so
  subprocesses and Ray workers find the same stack. `gan stack down` runs at the end, even
  after a failure, and any process left with its working directory in that GAN_HOME is killed.
- `storage`: `gan.io.storage.Storage` on that stack.
- `gan_cli`: run the `gan` command in a subprocess (`.run`, `.status`, `.start`).
- `make_stack_env` (integration): environments for extra, independent stacks (own GAN_HOME and
  ports), each brought down at the end of the test.
- `portable_client` (both tiers): run `tests/portable_client.py` (a consumer with only torch and
  MLflow: importing `gan`/`flows` refused) on a list of cases; returns its JSON results. With
  GAN_CLIENT_PYTHON set (e.g. a venv holding only torch and mlflow), that interpreter runs it.

Only integration tests may request `stack`, `storage` or `make_stack_env`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from gan.core.settings import Settings
from gan.io.storage import Storage
from gan.stack.procs import port_free

GAN_EXE = str(Path(sys.executable).parent / "gan")
# Variables that point at services or keys: never taken from the caller's environment.
STACK_VARS = (
    "GAN_HOME", "GAN_S3_ENDPOINT_URL", "GAN_S3_BUCKET", "GAN_S3_PORT", "GAN_MLFLOW_PORT",
    "GAN_PREFECT_PORT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_PROFILE", "AWS_DEFAULT_REGION", "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL",
    "PREFECT_API_URL", "PREFECT_API_KEY", "RAY_ADDRESS", "GAN_SERVE_CRON", "GAN_RAY_PORT",
    "GAN_RAY_CPUS", "GAN_BACKUP_S3_ENDPOINT_URL", "GAN_BACKUP_AWS_ACCESS_KEY_ID",
    "GAN_BACKUP_AWS_SECRET_ACCESS_KEY", "GAN_MLFLOW_WORKERS", "GAN_RAY_WORKER_RESOURCE",
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING",
)
UP_TIMEOUT_S = 300  # a cold start on a busy 2-core machine takes ~30 s; leave room
_rng = random.Random()


# --------------------------------------------------------------------------- helpers


def free_stack_ports(taken: set[int] | None = None) -> dict[str, str]:
    """GAN_S3_PORT (P..P+4 and P+10000..P+10004 all free), GAN_MLFLOW_PORT, GAN_PREFECT_PORT,
    GAN_RAY_PORT.

    Chosen below the kernel's ephemeral range (32768+) so outgoing connections can't take them,
    and above Ray's worker port range (10002-19999): the session stack's Ray workers bind ports
    there at any time (once one took a SeaweedFS master port P+1 between choosing and binding).
    """
    taken = set(taken or ())
    for _ in range(500):
        p = _rng.randrange(20000, 22000)
        weed = [p + i for i in range(5)] + [p + 10000 + i for i in range(5)]
        if not taken.intersection(weed) and all(port_free(x) for x in weed):
            taken.update(weed)
            break
    else:
        raise RuntimeError("no free block of SeaweedFS ports found")
    others = []
    while len(others) < 3:
        x = _rng.randrange(22000, 32000)
        if x not in taken and port_free(x):
            taken.add(x)
            others.append(x)
    return {"GAN_S3_PORT": str(p), "GAN_MLFLOW_PORT": str(others[0]),
            "GAN_PREFECT_PORT": str(others[1]), "GAN_RAY_PORT": str(others[2])}


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without STACK_VARS, with GAN_HOME=home and free ports."""
    env = {k: v for k, v in os.environ.items() if k not in STACK_VARS}
    # GAN_SERVE_CRON=off: a suite running at the nightly hour must not start a retrain.
    # GAN_RAY_CPUS=2: the stack's Ray head stays within a 2-core CI machine.
    return env | {"GAN_HOME": str(home), "GAN_SERVE_CRON": "off", "GAN_RAY_CPUS": "2"} \
        | free_stack_ports() | extra


def run_gan(*args: str, env: dict[str, str] | None = None,
            timeout: float = UP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run the `gan` command as a user would (env None: this process's environment)."""
    return subprocess.run([GAN_EXE, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def auth_env(settings: Settings) -> dict[str, str]:
    """MLFLOW_TRACKING_USERNAME / _PASSWORD and PREFECT_API_AUTH_STRING of `settings`."""
    out = {}
    if settings.mlflow_tracking_username and settings.mlflow_tracking_password:
        out["MLFLOW_TRACKING_USERNAME"] = settings.mlflow_tracking_username
        out["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow_tracking_password.get_secret_value()
    if settings.prefect_api_auth_string:
        out["PREFECT_API_AUTH_STRING"] = settings.prefect_api_auth_string.get_secret_value()
    return out


def stack_status(env: dict[str, str] | None = None) -> dict:
    r = run_gan("stack", "status", "--json", env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def kill_leftovers(home: Path) -> list[int]:
    """Kill processes whose working directory lies in `home` (the stack starts its services
    there): only what this test session started, never another user's services."""
    home_s = str(home.resolve())
    victims = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and (p.cwd() + "/").startswith(home_s + "/"):
                victims.append(p)
        except (psutil.Error, OSError):
            continue
    for p in victims:
        p.kill()
    psutil.wait_procs(victims, timeout=10)
    return [p.pid for p in victims]


def start_stack(env: dict[str, str], retries: int = 2) -> subprocess.CompletedProcess[str]:
    """`gan stack up`; on a port taken meanwhile by someone else, pick new ports and retry."""
    r = run_gan("stack", "up", env=env)
    while r.returncode != 0 and "is in use" in r.stderr and retries > 0:
        env.update(free_stack_ports())
        retries -= 1
        r = run_gan("stack", "up", env=env)
    return r


def _logs_of(home: Path) -> str:
    out = []
    for log in sorted((home / "logs").glob("*.log")):
        out.append(f"--- {log.name} (last 30 lines)\n" + "\n".join(
            log.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(out)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Unit tests: a clean environment, GAN_HOME=tmp_path/home; `.load()` reads it."""
    for k in STACK_VARS:
        monkeypatch.delenv(k, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("GAN_HOME", str(home))

    class Env:
        gan_home = home

        @staticmethod
        def set(**values: str) -> None:
            for k, v in values.items():
                monkeypatch.setenv(k, v)

        @staticmethod
        def load() -> Settings:
            return Settings.load()

    return Env


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The session's local stack (see the module docstring)."""
    home = tmp_path_factory.mktemp("gan_home")
    env = isolated_env(home)
    with pytest.MonkeyPatch.context() as mp:
        for k in STACK_VARS:
            mp.delenv(k, raising=False)
        # Prefect clients keep their own profile and files out of the user's ~/.prefect.
        mp.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect_client")))
        try:
            r = start_stack(env)
            for k in ("GAN_HOME", "GAN_S3_PORT", "GAN_MLFLOW_PORT", "GAN_PREFECT_PORT",
                      "GAN_RAY_PORT", "GAN_RAY_CPUS"):
                mp.setenv(k, env[k])
            if r.returncode != 0:
                pytest.fail(f"gan stack up failed ({r.returncode}):\n{r.stdout}\n{r.stderr}\n"
                            + _logs_of(home), pytrace=False)
            settings = Settings.load()
            mp.setenv("MLFLOW_TRACKING_URI", settings.require_mlflow())
            mp.setenv("PREFECT_API_URL", settings.require_prefect())
            # The owner's identities, for tests that call MLflow or Prefect clients directly
            # (the `gan` commands they start read them from GAN_HOME without these).
            for k, v in auth_env(settings).items():
                mp.setenv(k, v)
            yield settings
        finally:
            run_gan("stack", "down", env=env, timeout=120)
            kill_leftovers(home)


@pytest.fixture(scope="session")
def gan_cli() -> SimpleNamespace:
    """Drive the `gan` command as a user would: `.run(*args, env=None)` (CompletedProcess),
    `.status(env=None)` (the parsed `stack status --json`), `.start(env)` (`stack up`)."""
    return SimpleNamespace(run=run_gan, status=stack_status, start=start_stack)


@pytest.fixture
def storage(stack: Settings) -> Storage:
    return Storage.from_settings(stack)


@pytest.fixture
def make_stack_env(tmp_path: Path) -> Iterator[Callable[..., dict[str, str]]]:
    """`make_stack_env(**extra)` → env of a new, independent stack; downed after the test."""
    made: list[dict[str, str]] = []

    def make(**extra: str) -> dict[str, str]:
        env = isolated_env(tmp_path / f"gan_home{len(made)}", **extra)
        made.append(env)
        return env

    yield make
    for env in made:
        run_gan("stack", "down", env=env, timeout=120)
        kill_leftovers(Path(env["GAN_HOME"]))


@pytest.fixture
def portable_client(tmp_path: Path) -> Callable[..., list[dict]]:
    """`run(cases, tracking_uri=None, identity=None)`: the client script in a fresh process, in
    `tmp_path`, with no PYTHONPATH, no pickle permission and no storage keys (a registered
    version must come through MLflow's artifact proxy), as MLflow user `identity` (user name,
    password; e.g. the stack's read-only consumer); fails the test when the script fails."""
    script = Path(__file__).resolve().parent / "portable_client.py"

    def run(cases: list[dict], tracking_uri: str | None = None,
            identity: tuple[str, str] | None = None) -> list[dict]:
        path = tmp_path / "portable_cases.json"
        path.write_text(json.dumps(cases))
        drop = {"PYTHONPATH", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION", *STACK_VARS}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        if tracking_uri:
            env["MLFLOW_TRACKING_URI"] = tracking_uri
        if identity:
            env |= {"MLFLOW_TRACKING_USERNAME": identity[0],
                    "MLFLOW_TRACKING_PASSWORD": identity[1]}
        python = os.environ.get("GAN_CLIENT_PYTHON") or sys.executable
        r = subprocess.run([python, str(script), str(path)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr[-3000:]
        return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]

    return run



@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for a module, restored after it. On two shared cores one
    thread is several times faster than two under contention (modules opt in with an autouse
    fixture that asks for this one)."""
    import torch  # lazy: the stack fixtures here need no torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

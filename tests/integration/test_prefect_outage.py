"""A Prefect server killed (SIGKILL) while a task trains: the epochs go on at full speed (the
progress artifact is best-effort), and once the server is back the flow run completes.

The "training" is a loop of fixed-length epochs calling the real `EpochProgress` in a real
flow and task, run in a subprocess against a second stack; between epochs 3 and 4 the test
kills that stack's Prefect server, and brings it back with `gan stack up` after the last epoch.
Before the fix each progress update blocked on the client's retries (tens of seconds)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from gan.stack import procs

pytestmark = pytest.mark.integration
EPOCH_S = 0.5
SCRIPT = r'''
import sys, time
from pathlib import Path
from prefect import flow, task
from flows.retrain import EpochProgress

marks = Path(sys.argv[1])

def wait_for(name):
    while not (marks / name).exists():
        time.sleep(0.1)

@task
def fake_train(n):
    progress = EpochProgress("outage-test", total_epochs=n)
    for e in range(1, n + 1):
        t0 = time.monotonic()
        time.sleep(float(sys.argv[2]))  # one epoch of training
        progress({"epoch": e, "step": e, "loss_d": 1.0, "loss_g": 1.0})
        print(f"EPOCH {e} {time.monotonic() - t0:.3f}", flush=True)
        if e == 3:
            print("KILL NOW", flush=True)
            wait_for("killed")
    print("EPOCHS DONE", flush=True)
    wait_for("restarted")
    progress.close(timeout_s=30)

@flow
def fake_retrain():
    fake_train(10)

state = fake_retrain(return_state=True)
print("FINAL", state.type.value, flush=True)
'''


def _kill_tree(pid_file: Path) -> None:
    rec = procs.read_record(pid_file)
    assert rec and (proc := procs.owned(rec)), f"no live process in {pid_file}"
    victims = [proc, *proc.children(recursive=True)]
    for p in victims:
        p.kill()
    psutil.wait_procs(victims, timeout=10)


def _wait_line(proc: subprocess.Popen, want: str, seen: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line.rstrip())
        if line.startswith(want):
            return
    raise AssertionError(f"no {want!r} from the flow; output:\n" + "\n".join(seen[-40:]))


def test_training_keeps_its_speed_through_a_prefect_outage(gan_cli, make_stack_env,
                                                            tmp_path: Path) -> None:
    env = make_stack_env()
    r = gan_cli.start(env)
    assert r.returncode == 0, r.stdout + r.stderr
    st = gan_cli.status(env)
    (tmp_path / "flow.py").write_text(SCRIPT)
    # A script of one's own talks to the stack's Prefect with its auth string (README).
    auth = (Path(env["GAN_HOME"]) / "prefect-auth").read_text().strip()
    child_env = env | {"PREFECT_API_URL": st["prefect_api_url"], "PREFECT_API_AUTH_STRING": auth,
                       "PREFECT_HOME": str(tmp_path / "prefect_client"),
                       "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    argv = [sys.executable, str(tmp_path / "flow.py"), str(tmp_path), str(EPOCH_S)]
    proc = subprocess.Popen(argv, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen: list[str] = []
    try:
        _wait_line(proc, "KILL NOW", seen, 120)
        _kill_tree(Path(env["GAN_HOME"]) / "run" / "prefect.pid")
        (tmp_path / "killed").touch()
        _wait_line(proc, "EPOCHS DONE", seen, 120)
        r = gan_cli.start(env)  # the server comes back (same port, same database)
        assert r.returncode == 0, r.stdout + r.stderr
        (tmp_path / "restarted").touch()
        _wait_line(proc, "FINAL", seen, 180)
        assert proc.wait(60) == 0, "\n".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
    epochs = {int(w[1]): float(w[2]) for w in (s.split() for s in seen) if w[:1] == ["EPOCH"]}
    print("epoch seconds (Prefect down from epoch 4 on):", epochs)
    assert sorted(epochs) == list(range(1, 11))
    during = [epochs[e] for e in range(4, 11)]  # Prefect was down for all of these
    assert max(during) < EPOCH_S + 0.5, f"epochs slowed by the outage: {epochs}"
    assert seen[-1] == "FINAL COMPLETED", "\n".join(seen[-20:])

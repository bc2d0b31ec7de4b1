"""Which Ray a run uses (`gan.train.ray.cluster.ray_session`), without starting one: the
stack's warm head when it answers, a local Ray of the run's own when it does not, and a
RAY_ADDRESS cluster always (a user's cluster is never silently replaced)."""

from __future__ import annotations

import socket

import pytest

from gan.train.ray import cluster


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    seen: list[tuple] = []
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster, "start_local", lambda **kw: seen.append(("local", kw)) or
                        cluster.RaySession(owned=True, local=True, init_s=0.0))
    monkeypatch.setattr(cluster, "join", lambda address, **kw: seen.append(("join", address, kw))
                        or cluster.RaySession(owned=True, local=False, init_s=0.0))
    monkeypatch.setattr(cluster, "check_resources", lambda *a, **kw: None)
    monkeypatch.setattr(cluster, "stop", lambda session: seen.append(("stop",)))
    return seen


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reachable_probes_the_gcs_port():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert cluster.reachable(f"127.0.0.1:{port}")
    assert not cluster.reachable(f"127.0.0.1:{port}")
    assert not cluster.reachable("no-port-here")


def test_stack_head_down_falls_back_to_a_local_ray(calls, tmp_path):
    address = f"127.0.0.1:{_closed_port()}"
    with cluster.ray_session(address, num_cpus=2, token_file=tmp_path / "t",
                             fallback_local=True):
        pass
    assert calls == [("local", {"num_cpus": 2, "num_gpus": 0}), ("stop",)]


def test_stack_head_up_is_joined_with_its_token(calls, tmp_path):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        address = f"127.0.0.1:{srv.getsockname()[1]}"
        with cluster.ray_session(address, num_cpus=2, token_file=tmp_path / "t",
                                 fallback_local=True):
            pass
    assert calls == [("join", address, {"token_file": tmp_path / "t"}), ("stop",)]


def test_ray_address_is_joined_even_when_it_does_not_answer_yet(calls):
    """A user's cluster may still be starting or scaling: join it (ray.init waits), never
    train somewhere else."""
    address = f"127.0.0.1:{_closed_port()}"
    with cluster.ray_session(address, num_cpus=1):
        pass
    assert calls[0] == ("join", address, {"token_file": None})


def test_token_env_is_restored_after_a_join(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Joining the stack's head switches this process to its token; leaving restores the
    caller's settings, so a later local Ray uses Ray's own default token again."""
    monkeypatch.setenv("RAY_AUTH_TOKEN", "callers")
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    refreshed: list[str | None] = []
    monkeypatch.setattr(cluster, "_refresh_auth", refreshed.append)
    token = tmp_path / "ray-token"
    before = cluster._use_token(token)
    assert cluster.os.environ["RAY_AUTH_TOKEN_PATH"] == str(token)
    assert "RAY_AUTH_TOKEN" not in cluster.os.environ
    cluster._restore_env(before)
    assert cluster.os.environ["RAY_AUTH_TOKEN"] == "callers"
    assert "RAY_AUTH_TOKEN_PATH" not in cluster.os.environ
    assert refreshed[0] == "token" and len(refreshed) == 2

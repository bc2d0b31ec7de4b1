"""The code version a run is logged with (issue 23, item 6), on REAL temporary git checkouts.

The "nothing changed" step skips training when the champion was trained from the same code; a
checkout with uncommitted changes must therefore never look clean. The bug: `git -C <repo>/gan
status -- gan` read the pathspec as gan/gan, so a modified gan/ counted as clean. What counts as
code (`CODE_PATHS`): gan/, flows/, pyproject.toml, constraints.txt; not tests, docs or infra.
Without git (the container image), the version baked in at build time (`gan/CODE_VERSION`,
written by infra/k8s/Dockerfile from its build argument) is read.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gan.registry import run_log
from gan.registry.code_version import BAKED_FILE, CODE_PATHS, code_version

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A committed git repository laid out like this one; returns its top."""
    repo = tmp_path / "repo"
    for f in ("gan/__init__.py", "gan/registry/run_log.py", "flows/retrain.py",
              "pyproject.toml", "constraints.txt", "README.md", "tests/unit/test_x.py",
              "infra/k8s/Dockerfile"):
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_text("# v1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one")
    return repo


def test_a_clean_checkout_gives_its_commit(checkout: Path) -> None:
    head = _git(checkout, "rev-parse", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{40}", head)
    assert code_version(checkout / "gan") == head


@pytest.mark.parametrize("changed", ["gan/registry/run_log.py", "flows/retrain.py",
                                     "pyproject.toml", "constraints.txt"])
def test_a_change_to_the_code_marks_it_dirty(checkout: Path, changed: str) -> None:
    (checkout / changed).write_text("# v2\n")
    assert code_version(checkout / "gan") == _git(checkout, "rev-parse", "HEAD") + "+dirty"


def test_a_new_file_in_the_package_marks_it_dirty(checkout: Path) -> None:
    (checkout / "gan" / "new_module.py").write_text("X = 1\n")  # untracked: still code
    assert code_version(checkout / "gan").endswith("+dirty")


@pytest.mark.parametrize("changed", ["README.md", "tests/unit/test_x.py", "infra/k8s/Dockerfile"])
def test_docs_tests_and_infra_are_not_code(checkout: Path, changed: str) -> None:
    (checkout / changed).write_text("# v2\n")
    assert code_version(checkout / "gan") == _git(checkout, "rev-parse", "HEAD")


def test_without_git_the_version_baked_into_the_image_is_read(tmp_path: Path) -> None:
    """What the image holds: the package copied without .git, CODE_VERSION written at build."""
    package = tmp_path / "opt" / "gan" / "gan"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert code_version(package).startswith("gan-retrain==")  # nothing baked: the package
    (package / BAKED_FILE).write_text("0123456789abcdef0123456789abcdef01234567\n")
    assert code_version(package) == "0123456789abcdef0123456789abcdef01234567"


def test_a_package_inside_another_repository_is_not_that_repositorys_code(
        checkout: Path) -> None:
    """A package installed somewhere inside an unrelated checkout (a venv in a repository) is
    not that checkout's code: its baked version (or the package version) is used instead."""
    package = checkout / "venv" / "site-packages" / "gan"
    package.mkdir(parents=True)
    (package / BAKED_FILE).write_text("baked-1\n")
    assert code_version(package) == "baked-1"


def test_this_checkout_and_run_log_agree() -> None:
    """run_log logs the same function (tests elsewhere stub `run_log.code_version`)."""
    assert run_log.code_version is code_version
    assert set(CODE_PATHS) <= {p.name for p in ROOT.iterdir()}  # the paths exist here
    printed = subprocess.run([sys.executable, "-m", "gan.registry.code_version"], check=True,
                             capture_output=True, text=True, cwd=ROOT).stdout.strip()
    assert printed == code_version()


def test_the_image_bakes_the_build_argument_into_the_package() -> None:
    """infra/k8s/Dockerfile writes GAN_CODE_VERSION to the file code_version reads, before
    installing the package, and refuses to build without it; pyproject ships the file."""
    text = (ROOT / "infra" / "k8s" / "Dockerfile").read_text()
    assert re.search(r"^ARG GAN_CODE_VERSION$", text, re.M)
    write = re.search(r'printf .%s\\n. "\$GAN_CODE_VERSION" > gan/(\S+)', text)
    assert write and write[1] == BAKED_FILE
    assert text.index(write[0]) < text.index("pip install")
    assert 'test -n "$GAN_CODE_VERSION"' in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^gan = \["{BAKED_FILE}"\]$', pyproject, re.M)
    assert f"gan/{BAKED_FILE}" in (ROOT / ".gitignore").read_text().split()

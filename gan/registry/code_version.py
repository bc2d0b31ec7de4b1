"""Which code a run trains with: the code version logged with every run (tag `gan.code_version`)
and compared by the "nothing changed" step (`gan.registry.lineage`).

What this module is: `code_version()`, in this order:
  1. a git checkout holding this package: its commit, with `+dirty` when the code has
     uncommitted changes; the code is CODE_PATHS (the package, the flows, the dependency pins),
     not the tests, docs or infra, which do not change what a run trains;
  2. no git (the container image copies `gan/` without `.git`): the version baked into the
     package at build time, the file `gan/CODE_VERSION` (`infra/k8s/Dockerfile` writes it from
     the build argument GAN_CODE_VERSION: `python -m gan.registry.code_version` prints it);
  3. otherwise `gan-retrain==<package version>` (never equal to a commit, so never "unchanged"
     against a run that knew its commit), or "unknown".

What it is not: no MLflow (run_log logs it), no comparison (lineage compares).
"""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../gan
BAKED_FILE = "CODE_VERSION"  # in the package directory, written by the image build only
# What counts as code, relative to the checkout's top: what decides what a run trains.
CODE_PATHS = ("gan", "flows", "pyproject.toml", "constraints.txt")


def _git(top: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(top), *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()


def git_version(package_dir: Path = PACKAGE_DIR) -> str | None:
    """`<commit>` or `<commit>+dirty` when `package_dir` lies at the top of a git checkout,
    else None (no git, not a checkout, or a package installed inside another repository)."""
    top = package_dir.parent
    try:
        if Path(_git(top, "rev-parse", "--show-toplevel")).resolve() != top.resolve():
            return None  # e.g. site-packages inside some other repository: not this code's git
        commit = _git(top, "rev-parse", "HEAD")
        # Pathspecs are read relative to -C's directory, which is the top here.
        dirty = _git(top, "status", "--porcelain", "--", *CODE_PATHS)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def baked_version(package_dir: Path = PACKAGE_DIR) -> str | None:
    """The version the image build wrote into the package (`CODE_VERSION`), else None."""
    try:
        text = (package_dir / BAKED_FILE).read_text().strip()
    except OSError:
        return None
    return text or None


def code_version(package_dir: Path = PACKAGE_DIR) -> str:
    """The git commit of the checkout (`+dirty` with local changes to the code), else the
    version baked in at image build, else the package version (see the module docstring)."""
    found = git_version(package_dir) or baked_version(package_dir)
    if found:
        return found
    try:
        return f"gan-retrain=={dist_version('gan-retrain')}"
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":  # the image build's argument: see infra/k8s/Dockerfile
    print(code_version())

"""The test tiers hold: pytest collects the whole tree, and no stack test runs in the unit tier.

What it checks, by running pytest's own collection in a fresh process as a user would call it
(`pytest --collect-only -q tests`, the project's addopts: `-m 'not integration and not gpu'`):
- collection succeeds over all of tests/ (no "import file mismatch": two test files with the
  same name in two tiers, which pytest's default import mode cannot hold at once);
- every test under tests/integration and tests/reliability carries the `integration` marker and
  every test under tests/gpu the `gpu` marker: none of them is left in the default selection,
  where it would run in the unit tier (needing a stack) or, as `make test-integration` selects
  `-m integration`, in neither.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKED_TIERS = ("tests/integration/", "tests/reliability/", "tests/gpu/")


def _collect(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_test_file_names_are_unique_across_tiers() -> None:
    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert not [n for n, k in names.items() if k > 1], names.most_common(3)


def test_pytest_collects_all_of_tests_and_stack_tests_only_under_their_marker() -> None:
    r = _collect("tests")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    ids = [line for line in r.stdout.splitlines() if "::" in line]
    assert any(i.startswith("tests/unit/") for i in ids)
    unmarked = [i for i in ids if i.startswith(MARKED_TIERS)]
    assert not unmarked, ("tests outside the unit tier without their tier's marker "
                          f"(add pytestmark = pytest.mark.integration): {unmarked[:10]}")

"""Every script in bench/ still starts: a bench that no test runs rots unseen (the pacing bench
had stopped importing after the replication bench changed under it)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

BENCHES = sorted(path.name for path in (ROOT / "bench").glob("*.py") if path.name != "__init__.py")


@pytest.mark.parametrize("script", BENCHES)
def test_each_bench_script_starts_and_explains_itself(script):
    done = subprocess.run([sys.executable, f"bench/{script}", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr[-2000:]

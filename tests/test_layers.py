"""The layers of the house: `lint-imports` checks the import contracts in setup.cfg (each layer
imports only the layers below it, `trading` does no I/O, the paper exchange stands apart), so an
import that runs back up, or a cycle between the top-level folders, fails the suite."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_import_contract_of_setup_cfg_is_kept():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this tree's packages, not an installed copy
    done = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                           "sys.exit(lint_imports(config_filename='setup.cfg', no_cache=True, no_logo=True))"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "No module named 'importlinter'" not in done.stderr, (
        "import-linter is missing: pip install -e '.[test]' (or ./test.sh) installs it")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]

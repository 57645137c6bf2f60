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


def _untyped_handling(path: Path) -> list[str]:
    """Where an actor's on_receive matches a message against a string or takes a tuple or a Tick."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.FunctionDef) and node.name == "on_receive"):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Compare) and any(
                    isinstance(side, ast.Constant) and isinstance(side.value, str)
                    for side in [inner.left, *inner.comparators]):
                found.append(f"{path.name}:{inner.lineno}: compares a message with a string")
            if isinstance(inner, ast.Name) and inner.id in ("Tick", "tuple"):
                found.append(f"{path.name}:{inner.lineno}: handles a {inner.id}")
    return found


def test_every_actor_matches_its_messages_by_type_never_by_string():
    found = [line for path in sorted((ROOT / "actors").glob("*.py"))
             for line in _untyped_handling(path)]
    assert not found, "messages are frozen dataclasses in actors/messages/:\n" + "\n".join(found)

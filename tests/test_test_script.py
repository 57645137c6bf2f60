"""The README's test command is one script that installs what the suite needs and runs it, and
the observability tests say how to get promtool where it is missing (and fail under CI)."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import ROOT, run_test_without_tools


def quick_start() -> list[str]:
    """The commands of the README's first code block."""
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "the README has no sh code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def test_readme_quick_start_is_the_demo_then_the_test_script_ci_runs():
    demo, tests = quick_start()
    assert "pip install -e ." in demo and "python run.py" in demo
    assert tests == "./test.sh"
    assert os.access(ROOT / "test.sh", os.X_OK)
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.startswith("#")]
    assert ci[-1] == "exec bash ./test.sh" and not any("pytest" in line or "apt-get" in line for line in ci)


def fake_machine(tmp_path: Path, with_prometheus: bool, with_nats: bool = True) -> tuple[Path, Path]:
    """A PATH of stand-ins that record their arguments: apt-get, python3, id (root); promtool and
    prometheus only `with_prometheus`, nats-server only `with_nats`."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    record = f'#!/bin/bash\necho "$(basename "$0") $*" >> {calls}\n'
    tools = {"apt-get": record, "python3": record, "id": "#!/bin/bash\necho 0\n"}
    if with_prometheus:
        tools.update(promtool=record, prometheus=record)
    if with_nats:
        tools["nats-server"] = record
    for name, text in tools.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for name in ("dirname", "basename", "env"):
        (bin_dir / name).symlink_to(f"/usr/bin/{name}")
    return bin_dir, calls


def run_script(bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/bash", str(ROOT / "test.sh"), *args],
                          env={"PATH": str(bin_dir), "NATS_SERVER_SEARCH": str(bin_dir)},  # not this machine's /usr/sbin
                          capture_output=True, text=True, timeout=60)


def test_test_script_installs_prometheus_and_the_test_extras_then_runs_pytest(tmp_path):
    bin_dir, calls = fake_machine(tmp_path, with_prometheus=False)
    result = run_script(bin_dir, "-q", "tests/test_store.py")
    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends prometheus",
        "python3 -m pip install -q -e .[test]",
        "python3 -m pytest -q tests/test_store.py",
    ]


def test_test_script_leaves_apt_alone_when_prometheus_is_installed(tmp_path):
    bin_dir, calls = fake_machine(tmp_path, with_prometheus=True)
    assert run_script(bin_dir).returncode == 0
    assert calls.read_text().splitlines() == ["python3 -m pip install -q -e .[test]", "python3 -m pytest"]


def test_test_script_installs_nats_server_for_the_shard_tests(tmp_path):
    bin_dir, calls = fake_machine(tmp_path, with_prometheus=True, with_nats=False)
    result = run_script(bin_dir, "-q", "tests/test_shards.py")
    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends nats-server",
        "python3 -m pip install -q -e .[test]",
        "python3 -m pytest -q tests/test_shards.py",
    ]


def observability_without_promtool(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess:
    return run_test_without_tools("tests/test_observability.py::test_promtool_checks_the_alert_rules", tmp_path, ci)


def test_without_promtool_the_observability_tests_skip_saying_how_to_get_it(tmp_path):
    result = observability_without_promtool(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and "apt-get install -y prometheus" in result.stdout


def test_without_promtool_the_observability_tests_fail_under_ci(tmp_path):
    result = observability_without_promtool(tmp_path, ci=True)
    assert result.returncode == 1, result.stdout
    assert "1 failed" in result.stdout and "apt-get install -y prometheus" in result.stdout

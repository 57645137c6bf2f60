"""The command line as installed: `dhan-copytrader` (the same as `python run.py`), `--version`, and
relative paths in a config file that mean the same wherever the command is started from."""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys

import yaml

from app import __version__
from tests.conftest import ROOT


def console_scripts() -> dict[str, str]:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    lines = setup.get("options.entry_points", "console_scripts", fallback="").strip().splitlines()
    return {name.strip(): target.strip() for name, target in (line.split("=") for line in lines)}


def test_dhan_copytrader_console_script_runs_the_command_line_and_tells_its_version():
    assert console_scripts() == {"dhan-copytrader": "app.cli:main"}
    # what the script pip writes does: import the target and exit with what it returns
    script = "import sys; from app.cli import main; sys.argv[0] = 'dhan-copytrader'; sys.exit(main())"
    installed = subprocess.run([sys.executable, "-c", script, "--version"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60)
    assert installed.returncode == 0 and installed.stdout.strip() == f"dhan-copytrader {__version__}"
    help_text = subprocess.run([sys.executable, "-c", script, "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60).stdout
    assert help_text.startswith("usage: dhan-copytrader") and "reconcile" in help_text
    run_py = subprocess.run([sys.executable, "run.py", "--version"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert run_py.stdout == installed.stdout


def test_relative_paths_in_the_config_are_relative_to_its_folder(tmp_path):
    folder = tmp_path / "deploy"
    folder.mkdir()
    shutil.copy(ROOT / "paper" / "data" / "instruments.csv", folder / "master.csv")
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["storage"]["path"] = "state/copytrader.db"
    raw["instruments"]["master"] = "master.csv"
    (folder / "copier.yaml").write_text(yaml.safe_dump(raw))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "--config", "../deploy/copier.yaml", "status"],
                            cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (folder / "state" / "copytrader.db").exists()
    assert not (elsewhere / "state").exists()

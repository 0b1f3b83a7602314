"""bin/pynet and bin/pynet-cni as pip installs them: pynet is a shell
launcher that starts the interpreter pip wrote into bin/pynet-boot's first
line with -S, pynet-boot finding the package without `site`; pynet-cni is a
Python launcher (a runtime may copy it).  The layout is built by hand
(bin/ and lib/pythonX.Y/site-packages/netstack under a prefix), as
`pip install .` lays it out, so no build is needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = {"PYNET_HOST": "unix:///nonexistent/pynet.sock"}


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    """tmp/bin/{pynet,pynet-cni,pynet-boot}, tmp/lib/pythonX.Y/site-packages/netstack."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy(ROOT / "bin" / "pynet", bindir / "pynet")
    for name in ("pynet-boot", "pynet-cni"):
        text = (ROOT / "bin" / name).read_text().split("\n", 1)[1]
        (bindir / name).write_text(f"#!{sys.executable}\n{text}")  # what pip does to `#!python`
    for f in bindir.iterdir():
        f.chmod(0o755)
    site = tmp_path / "lib" / ("python%d.%d" % sys.version_info[:2]) / "site-packages"
    site.mkdir(parents=True)
    (site / "netstack").symlink_to(ROOT / "netstack")
    return tmp_path


def run(argv: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYNET"))}
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env={**full, **(env or {})}, **kw)


def test_cli_starts_without_site_and_finds_its_package(prefix: Path):
    out = run([str(prefix / "bin" / "pynet"), "--help"], {"PYTHONPROFILEIMPORTTIME": "1"})
    assert out.returncode == 0, out.stderr
    assert "Manage networks" in out.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time")]
    assert "netstack.cli.main" in imported
    assert "site" not in imported


def test_errors_and_exit_status_pass_through(prefix: Path):
    out = run([str(prefix / "bin" / "pynet"), "network", "ls"], UNREACHABLE)
    assert out.returncode == 1
    assert "Cannot connect to the pynet daemon" in out.stderr and "Traceback" not in out.stderr
    out = run([str(prefix / "bin" / "pynet"), "network", "bogus"])
    assert out.returncode == 125 and "is not a pynet network command" in out.stderr


def test_through_a_symlink_and_a_closed_pipe(prefix: Path, tmp_path: Path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "pynet").symlink_to(prefix / "bin" / "pynet")
    out = run(["sh", "-c", f"{other / 'pynet'} --help | head -c 5"])
    assert out.returncode == 0 and out.stdout == "\nUsag"
    assert out.stderr == ""


def test_a_copied_cli_launcher_says_what_to_do(prefix: Path, tmp_path: Path):
    shutil.copy(prefix / "bin" / "pynet", tmp_path / "pynet")
    out = run([str(tmp_path / "pynet"), "--help"])
    assert out.returncode == 1 and "link (ln -s) the pynet launcher rather than copy it" in out.stderr


def test_cni_plugin_copied_into_a_cni_bin_directory(prefix: Path, tmp_path: Path):
    cnibin = tmp_path / "cni-bin"
    cnibin.mkdir()
    shutil.copy(prefix / "bin" / "pynet-cni", cnibin / "pynet-cni")
    out = run([str(cnibin / "pynet-cni")], {"CNI_COMMAND": "VERSION"}, input="{}")
    assert out.returncode == 0, out.stderr
    assert "1.1.0" in json.loads(out.stdout)["supportedVersions"]
    out = run([str(cnibin / "pynet-cni")], {"CNI_COMMAND": "BOGUS"}, input="{}")
    assert out.returncode == 1 and json.loads(out.stdout)["code"] == 4


def test_an_interpreter_line_that_is_not_a_plain_path_starts_the_usual_way(prefix: Path):
    """pip writes `#!/bin/sh` and an exec line when the interpreter's path
    is too long or has spaces; then pynet-boot is run as it is (with site:
    the development venv's editable install provides the package)."""
    boot = prefix / "bin" / "pynet-boot"
    text = boot.read_text().split("\n", 1)[1]
    boot.write_text(f"#!/bin/sh\n'''exec' {sys.executable} \"$0\" \"$@\"\n' '''\n{text}")
    out = run([str(prefix / "bin" / "pynet"), "--help"], {"PYTHONPROFILEIMPORTTIME": "1"})
    assert out.returncode == 0, out.stderr
    assert any(line.endswith("| site") for line in out.stderr.splitlines())

"""The host probe's search for interpreters that import torch: a host whose probed Python lacks
torch is offered the ones that have it (a venv, a conda env, another python3 on the PATH).
Real interpreters: this machine's Debian python3 (with python3-torch) behind a venv-style path,
and a real venv made from it without system packages (no torch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvscope_agent import probe

HAS_TORCH = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


@pytest.mark.skipif(not HAS_TORCH, reason=f"{sys.executable} has no torch (Debian: apt-get install python3-torch)")
def test_lists_the_interpreters_that_import_torch_and_only_those(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    # ~/.venv-torch/bin/python3: this machine's python3 with torch, as a venv's link to it.
    with_torch = home / ".venv-torch" / "bin"
    with_torch.mkdir(parents=True)
    (with_torch / "python3").symlink_to(sys.executable)
    # A real venv without system packages: python3 there cannot import torch.
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    # ~/venv-broken/bin/python3: not an interpreter at all.
    broken = home / "venv-broken" / "bin"
    broken.mkdir(parents=True)
    (broken / "python3").write_text("#!/bin/sh\nexit 3\n")
    (broken / "python3").chmod(0o755)
    # Not executable: never tried.
    (home / ".venv-x" / "bin").mkdir(parents=True)
    (home / ".venv-x" / "bin" / "python3").write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", os.pathsep.join([str(bare / "bin"), str(with_torch)]))
    monkeypatch.setattr(probe, "login_shell_path", lambda: "")  # this machine's profile adds its own

    candidates = probe.python_candidates()
    # The PATH first, one entry per interpreter (the venv dir is on the PATH and in ~/.venv*).
    assert candidates == [str(bare / "bin" / "python3"), str(with_torch / "python3"), str(broken / "python3")]
    found = probe.probe_torch_pythons()
    import torch

    assert found == [{"executable": str(with_torch / "python3"), "version": f"{sys.version_info[0]}.{sys.version_info[1]}.{sys.version_info[2]}",
                      "torch": str(torch.__version__), "cuda_available": bool(torch.cuda.is_available())}]


def test_the_probe_answer_carries_the_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    monkeypatch.setattr(probe, "login_shell_path", lambda: "")  # this machine's profile adds its own
    got = probe.probe(str(tmp_path))
    assert got["torch_pythons"] == []
    assert set(got) >= {"python", "torch", "torch_pythons", "engines", "gpus", "notes"}


def test_the_login_shells_path_is_searched_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile that puts a venv on the PATH runs for login shells only (SSH commands run in a
    non-login one): the search asks the user's login shell for its PATH and looks there too."""
    venv_bin = tmp_path / "profile-venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python3").symlink_to(sys.executable)
    shell = tmp_path / "login-shell"
    # A stand-in login shell: prints a banner (as some profiles do), then runs the command with
    # the profile's PATH, as a login shell would after reading the profile.
    shell.write_text(f'#!/bin/sh\necho "Welcome"\nshift\nPATH="{venv_bin}:$PATH" exec /bin/sh -c "$1"\n')
    shell.chmod(0o755)
    monkeypatch.setenv("SHELL", str(shell))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(probe, "TORCH_PYTHON_GLOBS", ())
    assert probe.login_shell_path().split(os.pathsep)[0] == str(venv_bin)
    assert str(venv_bin / "python3") in probe.python_candidates()
    # Without that profile the venv is not found: the check can fail.
    monkeypatch.setattr(probe, "login_shell_path", lambda: "")
    assert str(venv_bin / "python3") not in probe.python_candidates()

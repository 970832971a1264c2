"""The tcmalloc re-exec: when it happens, what it runs, and when it must not happen."""

import os
import subprocess
import sys

import pytest

from vanish import runtime


@pytest.fixture
def captured(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime.os, "execve", lambda exe, args, env: calls.append((exe, args, env)))
    monkeypatch.setattr(runtime, "find_tcmalloc", lambda: "/lib/libtcmalloc_minimal.so.4")
    monkeypatch.setattr(runtime.sys, "platform", "linux")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("VANISH_TCMALLOC", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setattr(sys, "argv", ["/x/vanish/run.py", "--config", "c.py"])
    return calls


def test_reexec_preloads_tcmalloc_and_keeps_arguments(captured, monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "libother.so")
    runtime.reexec_with_tcmalloc(["-m", "vanish.run"])
    (exe, args, env), = captured
    assert exe == sys.executable
    assert args == [sys.executable, "-m", "vanish.run", "--config", "c.py"]
    assert env["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4 libother.so"


@pytest.mark.parametrize("setup", ["already", "opt_out", "gpu", "missing", "not_linux"])
def test_no_reexec_when_not_wanted(captured, monkeypatch, setup):
    if setup == "already":
        monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libtcmalloc_minimal.so.4")
    elif setup == "opt_out":
        monkeypatch.setenv("VANISH_TCMALLOC", "0")
    elif setup == "gpu":
        monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    elif setup == "missing":
        monkeypatch.setattr(runtime, "find_tcmalloc", lambda: None)
    else:
        monkeypatch.setattr(runtime.sys, "platform", "darwin")
    runtime.reexec_with_tcmalloc()
    assert captured == []


def test_find_tcmalloc_is_bounded_and_returns_a_file_a_soname_or_none():
    # Run in a subprocess with a timeout: the old recursive glob hung for minutes.
    out = subprocess.run([sys.executable, "-c", "from vanish import runtime; "
                          "print(runtime.find_tcmalloc())"], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert out == "None" or os.path.exists(out) or out.startswith("libtcmalloc")


def _loop_tree(tmp_path):
    """A library folder whose subfolders form a symlink loop (a recursive glob never ends)."""
    root = tmp_path / "lib"
    (root / "a").mkdir(parents=True)
    os.symlink(root, root / "a" / "loop")
    os.symlink(root / "a", root / "b")
    return root


def test_find_tcmalloc_looks_only_in_the_given_folders(tmp_path, monkeypatch):
    root = _loop_tree(tmp_path)
    monkeypatch.delenv("VANISH_TCMALLOC_PATH", raising=False)
    monkeypatch.setenv("VANISH_TCMALLOC_DIRS", str(root))
    assert runtime.find_tcmalloc() is None  # nested copies are not searched
    (root / "a" / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert runtime.find_tcmalloc() is None
    monkeypatch.setenv("VANISH_TCMALLOC_DIRS", f"{tmp_path}:{root / 'a'}")
    assert runtime.find_tcmalloc() == str(root / "a" / "libtcmalloc_minimal.so.4")
    monkeypatch.setenv("VANISH_TCMALLOC_PATH", str(tmp_path / "missing.so"))
    assert runtime.find_tcmalloc() is None


def test_cli_without_tcmalloc_starts_and_says_so_once(tmp_path):
    env = dict(os.environ, VANISH_TCMALLOC_DIRS=str(_loop_tree(tmp_path)), JAX_PLATFORMS="cpu")
    env.pop("LD_PRELOAD", None)
    env.pop("VANISH_TCMALLOC", None)
    env.pop("VANISH_TCMALLOC_PATH", None)
    proc = subprocess.run([sys.executable, "-m", "vanish.run", "--help"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode in (0, 1), proc.stderr  # absl's --help exits 1
    assert "--workdir" in proc.stdout and "Traceback" not in proc.stderr
    assert proc.stderr.count("tcmalloc not found") == 1
    assert "apt-get install libtcmalloc-minimal4" in proc.stderr

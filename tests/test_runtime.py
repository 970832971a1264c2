"""The tcmalloc re-exec: when it happens, what it runs, and when it must not happen."""

import os
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


def test_find_tcmalloc_returns_an_existing_file_or_none():
    lib = runtime.find_tcmalloc()
    assert lib is None or os.path.exists(lib)

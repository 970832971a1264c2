"""Process-level runtime choices for XLA:CPU: a malloc that keeps large buffers mapped.

    from vanish import runtime
    runtime.reexec_with_tcmalloc(["-m", "vanish.run"])   # first thing in a CLI entry point

XLA:CPU allocates every large output / temporary buffer per call. glibc serves allocations
above 32 MB with fresh mmaps, so each call page-faults its buffers in (measured here: a
100 MB elementwise pass 66 ms with 25k page faults vs 6.5 ms when the buffer is reused;
the vmapped MLP step at N = 256 1.4x -> 1.8-2.0x the loop). tcmalloc keeps freed memory
mapped and removes those faults. It must be preloaded before the process starts, hence a
re-exec. Set VANISH_TCMALLOC=0 to opt out. Debian/Ubuntu: apt-get install libtcmalloc-minimal4.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import sys

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
)


def find_tcmalloc() -> str | None:
    for path in _CANDIDATES:
        if os.path.exists(path):
            return path
    found = glob.glob("/usr/lib*/**/libtcmalloc_minimal.so*", recursive=True)
    if found:
        return sorted(found)[0]
    name = ctypes.util.find_library("tcmalloc_minimal")
    return name if name and os.path.isabs(name) else None


def tcmalloc_active() -> bool:
    return "tcmalloc" in os.environ.get("LD_PRELOAD", "")


def reexec_with_tcmalloc(argv_prefix: list[str] | None = None) -> None:
    """Re-executes this Python process with tcmalloc preloaded, when useful and possible.

    Args:
      argv_prefix: how to start the program again: e.g. ["-m", "vanish.run"] for a module
        (then sys.argv[1:] follows), or None to rerun sys.argv as a script.
    """
    if (sys.platform != "linux" or tcmalloc_active()
            or os.environ.get("VANISH_TCMALLOC", "1") == "0"
            or os.environ.get("JAX_PLATFORMS", "cpu") not in ("", "cpu")):
        return
    lib = find_tcmalloc()
    if lib is None:
        return
    env = dict(os.environ, LD_PRELOAD=f"{lib} {os.environ.get('LD_PRELOAD', '')}".strip())
    args = [sys.executable, *(argv_prefix + sys.argv[1:] if argv_prefix else sys.argv)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, args, env)

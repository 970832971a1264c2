"""Process-level runtime choices: a malloc that keeps XLA:CPU's buffers mapped, and joining
a multi-process (multi-host) run.

    from vanish import runtime
    runtime.reexec_with_tcmalloc(["-m", "vanish.run"])   # first thing in a CLI entry point
    runtime.join_processes("host0:1234", 2, 0)           # before any other JAX call

XLA:CPU allocates every large output / temporary buffer per call. glibc serves allocations
above 32 MB with fresh mmaps, so each call page-faults its buffers in (measured here: a
100 MB elementwise pass 66 ms with 25k page faults vs 6.5 ms when the buffer is reused;
the vmapped MLP step at N = 256 1.4x -> 1.8-2.0x the loop). tcmalloc keeps freed memory
mapped and removes those faults. It must be preloaded before the process starts, hence a
re-exec. Set VANISH_TCMALLOC=0 to opt out. Debian/Ubuntu: apt-get install libtcmalloc-minimal4.

The search is bounded: a fixed list of library folders (never a recursive walk; a recursive
glob follows directory symlinks and hung for minutes on a fresh machine), then the dynamic
loader's own answer. VANISH_TCMALLOC_PATH=<file> names the library directly, and
VANISH_TCMALLOC_DIRS=<dir>:<dir> replaces the folder list (tests point it at odd trees).
"""

from __future__ import annotations

import ctypes.util
import os
import sys

from vanish.errors import DistributedError
_DIRS = (
    "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib", "/opt/homebrew/lib",
)
_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc_minimal.so", "libtcmalloc.so.4")
INSTALL_HINT = ("tcmalloc not found: vanish runs on CPU will be slower (XLA:CPU page-faults "
                "its large buffers under glibc malloc). Install it with "
                "`apt-get install libtcmalloc-minimal4`, or set VANISH_TCMALLOC=0 to silence "
                "this note.")


def search_dirs() -> tuple[str, ...]:
    """Folders searched for tcmalloc: VANISH_TCMALLOC_DIRS if set, else the fixed list."""
    env = os.environ.get("VANISH_TCMALLOC_DIRS")
    return tuple(d for d in env.split(os.pathsep) if d) if env is not None else _DIRS


def find_tcmalloc() -> str | None:
    """The tcmalloc library to preload, or None. Constant time: no directory walks."""
    explicit = os.environ.get("VANISH_TCMALLOC_PATH")
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    for folder in search_dirs():
        for name in _NAMES:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    if os.environ.get("VANISH_TCMALLOC_DIRS") is not None:
        return None  # an explicit folder list is the whole search
    # The loader's answer (ldconfig's cache): a soname that LD_PRELOAD resolves itself.
    return ctypes.util.find_library("tcmalloc_minimal")


def tcmalloc_active() -> bool:
    """True when tcmalloc is already preloaded (named in LD_PRELOAD)."""
    return "tcmalloc" in os.environ.get("LD_PRELOAD", "")


def reexec_with_tcmalloc(argv_prefix: list[str] | None = None) -> None:
    """Re-executes this Python process with tcmalloc preloaded, when useful and possible.

    When tcmalloc is wanted but missing, says so once on stderr (how to install it) and
    continues without it.

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
        print(f"vanish: note: {INSTALL_HINT}", file=sys.stderr, flush=True)
        return
    env = dict(os.environ, LD_PRELOAD=f"{lib} {os.environ.get('LD_PRELOAD', '')}".strip())
    args = [sys.executable, *(argv_prefix + sys.argv[1:] if argv_prefix else sys.argv)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, args, env)



def join_processes(coordinator_address: str = "", num_processes: int = 0,
                   process_id: int = -1) -> tuple[int, int]:
    """Joins a run of several processes (`jax.distributed.initialize`); (index, count).

    Each argument left unset ("", 0, -1) is read from VANISH_COORDINATOR,
    VANISH_NUM_PROCESSES and VANISH_PROCESS_ID, else left to JAX's own detection (SLURM,
    Cloud TPU, Open MPI). CPU processes exchange data with gloo collectives. Must run before
    anything starts a JAX backend (even `jax.devices()`); a second call is a no-op.
    """
    import jax  # pylint: disable=import-outside-toplevel

    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    env = os.environ
    addr = coordinator_address or env.get("VANISH_COORDINATOR") or None
    procs = int(num_processes) or int(env.get("VANISH_NUM_PROCESSES", 0)) or None
    pid: int | None = int(process_id)
    if pid is not None and pid < 0:
        pid = int(env["VANISH_PROCESS_ID"]) if "VANISH_PROCESS_ID" in env else None
    # Only the CPU client reads this; accelerators use their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    print(f"vanish: joining {procs or 'the detected'} processes as process "
          f"{'(detected)' if pid is None else pid} through {addr or 'the detected coordinator'};"
          " waits (up to JAX's 5 min) until every process has started", file=sys.stderr,
          flush=True)
    try:
        jax.distributed.initialize(coordinator_address=addr, num_processes=procs,
                                   process_id=pid)
    except (RuntimeError, ValueError) as e:
        raise DistributedError(
            f"cannot join the multi-process run (coordinator {addr}, {procs} processes, "
            f"process id {pid}): {str(e).splitlines()[0]}. Start every process with the same "
            "coordinator address and process count and its own process id, before any other "
            "JAX call") from None
    return jax.process_index(), jax.process_count()

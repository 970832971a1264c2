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

import contextlib
import ctypes.util
import os
import re
import sys
import time
from typing import NoReturn

from vanish import errors
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



# How long a process of a multi-process run may go without a heartbeat before the coordinator
# (process 0) counts it lost and ends the run. JAX's own default is 100 s.
HEARTBEAT_TIMEOUT_S = 30

# What a collective (gloo, on CPU) or JAX's coordination service raises once another process
# of the run is gone: its connections closed, its heartbeats stopped, a barrier it missed.
_LOST_MARKS = ("Connection closed by peer", "Connection reset by peer", "Gloo ", "Socket closed",
               "heartbeat timeout", "coordination service", "Barrier failed",
               "task is set to ERROR")
_ROLL = "vanish/processes"  # the coordination service's keys of `lost_processes`


def join_processes(coordinator_address: str = "", num_processes: int = 0,
                   process_id: int = -1, *,
                   heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S) -> tuple[int, int]:
    """Joins a run of several processes (`jax.distributed.initialize`); (index, count).

    Each argument left unset ("", 0, -1) is read from VANISH_COORDINATOR,
    VANISH_NUM_PROCESSES and VANISH_PROCESS_ID, else left to JAX's own detection (SLURM,
    Cloud TPU, Open MPI). CPU processes exchange data with gloo collectives. Must run before
    anything starts a JAX backend (even `jax.devices()`); a second call is a no-op.

    `heartbeat_timeout_s`: how long a process may go silent (hung, its host or network gone)
    before the coordinator counts it lost and JAX ends every process; a process that dies
    outright closes its connections and is noticed at once (`is_lost_process`). JAX's
    preemption service is left off: vanish handles SIGTERM itself (vanish/signals.py), and
    the service's notices would only add lines to a failure.
    """
    import jax  # pylint: disable=import-outside-toplevel
    from jax._src import distributed  # the coordination client: JAX has no public handle

    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    if int(heartbeat_timeout_s) < 1:
        raise ValueError(f"heartbeat_timeout_s must be >= 1 second, got {heartbeat_timeout_s}")
    env = os.environ
    addr = coordinator_address or env.get("VANISH_COORDINATOR") or None
    procs = int(num_processes) or int(env.get("VANISH_NUM_PROCESSES", 0)) or None
    pid: int | None = int(process_id)
    if pid is not None and pid < 0:
        pid = int(env["VANISH_PROCESS_ID"]) if "VANISH_PROCESS_ID" in env else None
    # Only the CPU client reads this; accelerators use their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_preemption_service", False)
    print(f"vanish: joining {procs or 'the detected'} processes as process "
          f"{'(detected)' if pid is None else pid} through {addr or 'the detected coordinator'};"
          " waits (up to JAX's 5 min) until every process has started", file=sys.stderr,
          flush=True)
    try:
        jax.distributed.initialize(coordinator_address=addr, num_processes=procs,
                                   process_id=pid,
                                   heartbeat_timeout_seconds=int(heartbeat_timeout_s))
    except (RuntimeError, ValueError) as e:
        raise DistributedError(
            f"cannot join the multi-process run (coordinator {addr}, {procs} processes, "
            f"process id {pid}): {str(e).splitlines()[0]}. Start every process with the same "
            "coordinator address and process count and its own process id, before any other "
            "JAX call") from None
    client = distributed.global_state.client
    if client is not None:  # what `lost_processes` asks after a failure: is the service up
        client.key_value_set(f"{_ROLL}/joined/{jax.process_index()}", "1")
    return jax.process_index(), jax.process_count()


def is_lost_process(error: BaseException) -> bool:
    """True when `error`, raised in a multi-process run, says another process of it is gone:
    a gloo collective whose peer closed its connection, or the coordination service
    reporting a task lost (vanish's own errors never are)."""
    import jax  # pylint: disable=import-outside-toplevel

    if errors.is_user_error(error) or not jax.distributed.is_initialized():
        return False
    text = str(error)
    return jax.process_count() > 1 and any(mark in text for mark in _LOST_MARKS)


def lost_processes(wait_s: float = 3.0) -> list[int]:
    """The processes of this run that are gone, asked after a collective failed: of two,
    the other one; of more, those that do not answer a roll call through the coordination
    service within `wait_s` (every survivor writes its key there and reads the others'); [0]
    when the service itself (on process 0) does not answer at once."""
    import jax  # pylint: disable=import-outside-toplevel
    from jax._src import distributed  # the coordination client: JAX has no public handle

    me, count = jax.process_index(), jax.process_count()
    if count == 2:
        return [1 - me]
    client = distributed.global_state.client
    if client is None:
        return []
    try:  # fast: with process 0 gone, JAX's client aborts this process within a second
        client.blocking_key_value_get(f"{_ROLL}/joined/{me}", 100)
        client.key_value_set(f"{_ROLL}/survivor/{me}", "1")
    except Exception:  # noqa: BLE001  the service is gone with process 0
        return [0]
    others, deadline = {str(i) for i in range(count) if i != me}, time.monotonic() + wait_s
    answered: set[str] = set()
    while time.monotonic() < deadline and not others <= answered:
        time.sleep(0.05)
        with contextlib.suppress(Exception):
            answered = {key.rsplit("/", 1)[-1]
                        for key, _ in client.key_value_dir_get(f"{_ROLL}/survivor/")}
    return sorted(int(i) for i in others - answered)


def exit_lost_process(error: BaseException, resume: str) -> NoReturn:
    """Ends this process after another process of the run is lost: one line on stderr,
    `vanish: error: process P of N is gone (<what the collective said>): process Q stops
    too; <resume>`, then `os._exit(1)`.

    os._exit, not sys.exit: a normal exit runs JAX's atexit handler, whose shutdown of the
    coordination client waits at a barrier for the lost process until the heartbeat timeout
    and then aborts this one (SIGABRT, a C++ check-failure trace), and JAX has no way to
    leave without it. Nothing is lost by skipping it: checkpoints and metrics rows are on
    disk before they count, the caller has released the workdir lock and flushed its
    writers, and stdout / stderr are flushed here.
    """
    import jax  # pylint: disable=import-outside-toplevel

    me, count = jax.process_index(), jax.process_count()
    lost = lost_processes()
    who = (f"process {lost[0]}" if len(lost) == 1 else
           f"processes {', '.join(map(str, lost))}" if lost else "another process")
    verb = "are" if len(lost) > 1 else "is"
    cause = re.sub(r"\[[\w/.]+:\d+\] ", "", str(error).strip().splitlines()[0])[:160]
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os.write(2, f"vanish: error: {who} of the {count} {verb} gone ({cause}): process {me} "
                f"stops too; {resume}\n".encode())
    os._exit(1)

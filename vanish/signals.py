"""Stopping a run cleanly: SIGINT / SIGTERM ask the tick loop to stop at the next boundary.

    with signals.StopRequest() as stop:
        while ... and not stop.requested: ...      # then checkpoint, raise signals.Interrupted

A first signal stops the loop after a checkpoint (exit status 128 + signum); a second one
exits at once, keeping the last complete checkpoint (as after kill -9).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

class Interrupted(SystemExit):
    """SIGINT / SIGTERM stopped a run at a tick boundary, after a checkpoint there.

    A SystemExit, so the CLI ends without a traceback with status 128 + the signal number
    (130 for SIGINT, 143 for SIGTERM); rerunning the same command resumes at `tick`.
    """

    def __init__(self, signum: int, algorithm: str, tick: int) -> None:
        super().__init__(128 + signum)
        self.signum, self.algorithm, self.tick = signum, algorithm, tick


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _ignore_signal(signum: int, frame: Any) -> None:
    del signum, frame  # StopRequest's thread reads the signal from the wakeup pipe


class StopRequest:
    """While active (`with`, main thread), SIGINT / SIGTERM ask the tick loop to stop.

    The first signal sets `signum` and says so on stderr; `run_algorithm` polls `requested`
    between its compiled calls, writes a checkpoint and raises `Interrupted`. A second signal
    exits the process at once (status 128 + signum) without a checkpoint: the last complete
    one stays, as after kill -9. A thread reads the signals from a wakeup pipe, so the second
    one is honoured even while the main thread waits in XLA or in a checkpoint write (a Python
    handler would only run once the main thread is back in the interpreter). Inert outside
    the main thread; the previous handlers are restored on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._active = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._r, self._w = os.pipe()
        try:
            os.set_blocking(self._w, False)  # the C signal handler must never block on it
            self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        except (OSError, ValueError):  # a platform without wakeup pipes: stay inert
            os.close(self._r)
            os.close(self._w)
            return self
        self._old = {s: signal.signal(s, _ignore_signal) for s in STOP_SIGNALS}
        self._thread = threading.Thread(target=self._watch, name="vanish-signals", daemon=True)
        self._thread.start()
        self._active = True
        return self

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._r, 64)
            except OSError:
                return
            if not data:  # __exit__ closed the write end
                return
            for signum in data:  # one byte per signal, also other handled signals
                if signum not in STOP_SIGNALS:
                    continue
                name = signal.Signals(signum).name
                if self.signum is None:
                    self.signum = signum
                    _say(f"vanish: {name}: stopping at the next tick boundary after a "
                         f"checkpoint (send {name} again to exit at once)")
                else:
                    _say(f"vanish: second {name}: exiting at once; the last complete "
                         "checkpoint is kept")
                    os._exit(128 + signum)

    def __exit__(self, *exc: object) -> None:
        if not self._active:
            return
        self._active = False
        for s, handler in self._old.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        signal.set_wakeup_fd(self._old_fd)
        os.close(self._w)
        self._thread.join(timeout=1.0)
        if not self._thread.is_alive():  # never close an fd that a thread still reads
            os.close(self._r)


def _say(line: str) -> None:
    os.write(2, (line + "\n").encode())

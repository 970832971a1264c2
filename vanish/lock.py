"""One run per workdir: an exclusive lock held for the whole run, naming its holder.

    with WorkdirLock(workdir):  # WorkdirLockedError if another live run holds it
        train_and_evaluate(...)

The lock is `fcntl.flock(LOCK_EX | LOCK_NB)` on `<workdir>/.vanish.lock`; the same file holds
the holder's record (JSON: pid, host, start time, command line), so a refused run can name it.
The kernel releases a flock when its process dies (kill -9 included) but the record stays:
the next run takes the lock over and logs the stale holder. The file itself is never removed
(removing a lock file lets two runs lock two different files of the same name); a clean
release empties it. flock is advisory and local: on NFS, Linux emulates it with POSIX locks.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

from vanish.errors import WorkdirLockedError

logger = logging.getLogger(__name__)

LOCK_FILE = '.vanish.lock'
PathLike = str | os.PathLike[str]


def describe_holder(record: dict[str, Any] | None) -> str:
    """One phrase naming a holder record: 'pid 12 on host h, started <time>, command: ...'."""
    if not record:
        return 'an unknown process (its record is empty or unreadable)'
    parts = [f"pid {record.get('pid', '?')} on host {record.get('host', '?')}"]
    if record.get('started'):
        parts.append(f"started {record['started']}")
    if record.get('command'):
        parts.append(f"command: {record['command']}")
    return ', '.join(parts)


def _parse(text: str) -> dict[str, Any] | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read_holder(workdir: PathLike) -> dict[str, Any] | None:
    """The holder record in `<workdir>/.vanish.lock` (None: no file, empty or unreadable).

    The record says who took the lock last; only a failed `acquire` proves that it is live.
    """
    try:
        text = (Path(workdir) / LOCK_FILE).read_text(encoding='utf-8')
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return _parse(text)


class WorkdirLock:
    """An exclusive, non-blocking lock on a workdir, held by one run from start to end.

    Args:
        workdir: an existing directory (the caller creates it; only `.vanish.lock` is made).
        command: the holder's command line to record; default: this process's argv.

    `acquire` (or entering `with`) raises `errors.WorkdirLockedError` naming the live holder
    (pid, host, start time, command line); a record left by a dead holder is taken over with
    a warning naming it. Take it in one process of a multi-process run (process 0): the others
    would find it held. Usage:

        workdir.mkdir(parents=True, exist_ok=True)
        with lock.WorkdirLock(workdir):
            ...  # resume, train, write metrics and checkpoints
    """

    def __init__(self, workdir: PathLike, *, command: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.path = self.workdir / LOCK_FILE
        self.command = command if command is not None else shlex.join(
            getattr(sys, 'orig_argv', sys.argv))
        self.record: dict[str, Any] | None = None  # ours, while held
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> WorkdirLock:
        """Takes the lock or raises WorkdirLockedError (nothing written); returns self."""
        if self._fd is not None:
            raise RuntimeError(f'{self.path} is already held by this WorkdirLock')
        if not self.workdir.is_dir():
            raise FileNotFoundError(
                errno.ENOENT, f'cannot lock {self.workdir}: no such directory (create it first)')
        # 0o666: the lock file gets the user's umask like every other file of the run.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WorkdirLockedError(self._locked_message(fd)) from None
            left = _read_fd(fd)
            if left.strip():  # a record without its lock: that run died (kill -9, a crash)
                logger.warning('%s: taking over the lock of a run that is gone (%s)',
                               self.path, describe_holder(_parse(left)))
            record = {'pid': os.getpid(), 'host': socket.gethostname(),
                      'started': datetime.datetime.now().astimezone().isoformat(
                          timespec='seconds'),
                      'command': self.command}
            _write_fd(fd, json.dumps(record) + '\n')
        except BaseException:
            os.close(fd)  # closing releases the flock too
            raise
        self._fd, self.record = fd, record
        return self

    def _locked_message(self, fd: int) -> str:
        # The holder writes its record right after locking: a reader may catch it empty.
        record = None
        for _ in range(20):
            record = _parse(_read_fd(fd))
            if record is not None:
                break
            time.sleep(0.01)
        pid = record.get('pid') if record else None
        stop = f'stop it (kill {pid})' if pid else 'stop it'
        return (f'{self.workdir} is in use by another vanish run: {describe_holder(record)}. '
                f'Wait for it to finish, {stop}, or use another --workdir; nothing was touched')

    def release(self) -> None:
        """Empties the record and releases the lock (a no-op when not held)."""
        fd, self._fd, self.record = self._fd, None, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # still locked here: no other run reads a half-empty record
        finally:
            os.close(fd)

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b''.join(chunks).decode('utf-8', errors='replace')


def _write_fd(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    data = text.encode('utf-8')
    while data:
        data = data[os.write(fd, data):]
    os.fsync(fd)

"""Tests for vanish.lock: a second process is refused with the holder named; kill -9 frees it."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from vanish import errors, lock

# A holder in its own process: takes the lock, says so on stdout, then waits to be killed.
HOLDER = textwrap.dedent('''
    import sys, time
    from vanish.lock import WorkdirLock
    held = WorkdirLock(sys.argv[1], command='vanish-holder --workdir x').acquire()
    print('locked', flush=True)
    time.sleep(600)
''')


@pytest.fixture
def holder(tmp_path):
    proc = subprocess.Popen([sys.executable, '-c', HOLDER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == 'locked'
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_second_process_is_refused_naming_the_holder(tmp_path, holder):
    with pytest.raises(errors.WorkdirLockedError) as info:
        lock.WorkdirLock(tmp_path).acquire()
    message = str(info.value)
    assert f'pid {holder.pid} on host {socket.gethostname()}' in message
    assert 'command: vanish-holder --workdir x' in message and 'started 20' in message
    assert f'kill {holder.pid}' in message and 'nothing was touched' in message
    assert errors.is_user_error(info.value)
    # The refused run changed nothing: the record is still the holder's.
    assert lock.read_holder(tmp_path)['pid'] == holder.pid
    assert sorted(p.name for p in tmp_path.iterdir()) == [lock.LOCK_FILE]


def test_lock_of_a_killed_process_is_taken_over(tmp_path, holder, caplog):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock.read_holder(tmp_path)['pid'] == holder.pid  # the record outlives the process
    with caplog.at_level(logging.WARNING, logger='vanish.lock'):
        with lock.WorkdirLock(tmp_path, command='me') as held:
            assert held.held
            record = lock.read_holder(tmp_path)
            assert record == held.record and record['pid'] == os.getpid()
            assert record['command'] == 'me'
    stale = [r.getMessage() for r in caplog.records if 'taking over' in r.getMessage()]
    assert len(stale) == 1 and f'pid {holder.pid}' in stale[0], caplog.text
    assert 'vanish-holder' in stale[0]
    assert (tmp_path / lock.LOCK_FILE).read_text() == ''  # a clean release empties it


def test_clean_release_lets_the_next_run_in_without_a_warning(tmp_path, caplog):
    with lock.WorkdirLock(tmp_path):
        # A second lock, even in the same process, is refused (flock is per open file).
        with pytest.raises(errors.WorkdirLockedError, match=f'pid {os.getpid()}'):
            lock.WorkdirLock(tmp_path).acquire()
    with caplog.at_level(logging.WARNING, logger='vanish.lock'):
        with lock.WorkdirLock(tmp_path):
            pass
    assert not caplog.records
    # A subprocess can take it now that it is released.
    out = subprocess.run([sys.executable, '-c', textwrap.dedent('''
        import sys
        from vanish.lock import WorkdirLock
        with WorkdirLock(sys.argv[1]) as held:
            print(held.record['pid'])
    '''), str(tmp_path)], capture_output=True, text=True, check=True)
    assert int(out.stdout) != os.getpid()


def test_lock_creates_only_its_file_with_the_umask_and_needs_the_workdir(tmp_path):
    old = os.umask(0o027)
    try:
        with lock.WorkdirLock(tmp_path):
            pass
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == [lock.LOCK_FILE]
    assert (tmp_path / lock.LOCK_FILE).stat().st_mode & 0o777 == 0o640
    with pytest.raises(FileNotFoundError, match='create it first'):
        lock.WorkdirLock(tmp_path / 'missing').acquire()
    assert not (tmp_path / 'missing').exists()


def test_unreadable_record_is_reported_not_crashed_on(tmp_path):
    (tmp_path / lock.LOCK_FILE).write_text('{"pid": 1, "ho')  # a holder killed mid-write
    assert lock.read_holder(tmp_path) is None
    assert 'unknown process' in lock.describe_holder(None)
    with lock.WorkdirLock(tmp_path) as held:  # no live holder: taken over
        assert json.loads((tmp_path / lock.LOCK_FILE).read_text()) == held.record
    with pytest.raises(RuntimeError, match='already held'):
        with lock.WorkdirLock(tmp_path) as held:
            held.acquire()

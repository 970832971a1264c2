"""Tests for vanish.tracking: JSONL round trip, resume truncation, fan-out, W&B wiring."""

from __future__ import annotations

import csv
import json
import logging
import os
import struct
import sys
import types
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

from vanish import tracking
from vanish.errors import MetricsLogError


class RecordingWriter(tracking.MetricWriter):
    """Remembers every call, to check what MultiWriter forwards."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def write_config(self, config):
        self.calls.append(('config', dict(config)))

    def write_scalars(self, step, scalars):
        self.calls.append(('scalars', step, dict(scalars)))

    def write_summary(self, summary):
        self.calls.append(('summary', dict(summary)))

    def write_text(self, key, text):
        self.calls.append(('text', key, text))

    def write_image(self, step, key, path):
        self.calls.append(('image', step, key, str(path)))

    def flush(self):
        self.calls.append(('flush',))

    def close(self):
        self.calls.append(('close',))


def test_to_scalar_converts_numpy_and_jax_values():
    assert tracking.to_scalar(np.float32(0.5)) == 0.5
    assert type(tracking.to_scalar(jnp.float32(0.5))) is float
    assert type(tracking.to_scalar(jnp.int32(7))) is int
    assert type(tracking.to_scalar(np.bool_(True))) is bool
    assert tracking.to_scalar(jnp.ones((1, 1)) * 2) == 2.0
    with pytest.raises(ValueError, match='scalar'):
        tracking.to_scalar(np.zeros(3))


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    with tracking.JsonlWriter(path, 'gossip') as w:
        w.write_scalars(10, {'acc_mean': jnp.float32(0.25), 'averaging_events': np.int64(4),
                             'var_ratio/Dense_0/kernel': 0.5})
        w.write_scalars(20, {'acc_mean': 0.75, 'averaging_events': 9})
        # Rows are on disk before close: an interrupted run keeps them.
        assert len(tracking.read_jsonl(path)) == 2
    rows = tracking.read_jsonl(path)
    assert rows == [
        {'algorithm': 'gossip', 'tick': 10, 'acc_mean': 0.25, 'averaging_events': 4,
         'var_ratio/Dense_0/kernel': 0.5},
        {'algorithm': 'gossip', 'tick': 20, 'acc_mean': 0.75, 'averaging_events': 9},
    ]
    assert isinstance(rows[0]['averaging_events'], int)


def test_jsonl_appends_across_writers_and_keys_summary_by_algorithm(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    for alg, acc in [('fl', 0.5), ('gossip', 0.6)]:
        with tracking.JsonlWriter(path, alg) as w:
            w.write_config({'seed': 1, 'algorithm': alg})
            w.write_scalars(5, {'acc_mean': acc})
            w.write_summary({'final_acc': np.float32(acc), 'ticks_to_target': None})
    assert [(r['algorithm'], r['acc_mean']) for r in tracking.read_jsonl(path)] == [
        ('fl', 0.5), ('gossip', 0.6)]
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary == {'fl': {'final_acc': 0.5, 'ticks_to_target': None},
                       'gossip': {'final_acc': pytest.approx(0.6), 'ticks_to_target': None}}
    config = json.loads((tmp_path / 'config.json').read_text())
    assert config['gossip'] == {'seed': 1, 'algorithm': 'gossip'}


def test_partial_last_line_is_skipped_and_repaired(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_text('{"algorithm": "fl", "tick": 1, "acc_mean": 0.1}\n{"algorithm": "fl", "ti')
    assert [r['tick'] for r in tracking.read_jsonl(path)] == [1]
    with tracking.JsonlWriter(path, 'fl') as w:
        w.write_scalars(2, {'acc_mean': 0.2})
    assert [r['tick'] for r in tracking.read_jsonl(path)] == [1, 2]


def test_read_jsonl_rejects_a_corrupt_middle_line(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_text('{"tick": 1}\nnot json\n{"tick": 2}\n')
    with pytest.raises(ValueError, match=':2:'):
        tracking.read_jsonl(path)


def test_truncate_after(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    for alg in ['fl', 'gossip']:
        with tracking.JsonlWriter(path, alg) as w:
            for tick in [10, 20, 30, 40]:
                w.write_scalars(tick, {'acc_mean': tick / 100})
    assert tracking.truncate_after(path, 20, algorithm='gossip') == 2
    ticks = [(r['algorithm'], r['tick']) for r in tracking.read_jsonl(path)]
    assert ticks == [('fl', 10), ('fl', 20), ('fl', 30), ('fl', 40), ('gossip', 10),
                     ('gossip', 20)]
    assert tracking.truncate_after(path, 10) == 4  # fl 20, 30, 40 and gossip 20
    assert [r['tick'] for r in tracking.read_jsonl(path)] == [10, 10]
    assert tracking.truncate_after(tmp_path / 'missing.jsonl', 0) == 0


def test_resume_does_not_duplicate_rows(tmp_path):
    path = tmp_path / tracking.METRICS_FILE
    with tracking.make_writers(tmp_path, 'gossip', wandb=False, console=False) as w:
        for tick in [10, 20, 30]:
            w.write_scalars(tick, {'acc_mean': 0.1})
    # Resume from a checkpoint at tick 20: tick 30 is replayed.
    with tracking.make_writers(tmp_path, 'gossip', wandb=False, console=False,
                               resume_tick=20) as w:
        w.write_scalars(30, {'acc_mean': 0.2})
    rows = tracking.read_jsonl(path)
    assert [r['tick'] for r in rows] == [10, 20, 30]
    assert rows[-1]['acc_mean'] == 0.2


def test_multiwriter_fans_out_every_call_with_python_values(tmp_path):
    a, b = RecordingWriter(), RecordingWriter()
    with tracking.MultiWriter([a, b]) as w:
        w.write_config({'lr': 0.1})
        w.write_scalars(3, {'acc_mean': jnp.float32(0.5)})
        w.write_summary({'final_acc': np.float64(0.9)})
        w.write_text('note', 'hello')
        w.write_image(3, 'accuracy', tmp_path / 'a.png')
        w.flush()
    expected = [('config', {'lr': 0.1}), ('scalars', 3, {'acc_mean': 0.5}),
                ('summary', {'final_acc': 0.9}), ('text', 'note', 'hello'),
                ('image', 3, 'accuracy', str(tmp_path / 'a.png')), ('flush',), ('close',)]
    assert a.calls == expected and b.calls == expected
    assert type(a.calls[1][2]['acc_mean']) is float


def test_multiwriter_closes_all_writers_when_one_fails():
    class Failing(RecordingWriter):
        def close(self):
            raise OSError('disk gone')

    ok = RecordingWriter()
    with pytest.raises(OSError, match='disk gone'):
        tracking.MultiWriter([Failing(), ok]).close()
    assert ok.calls == [('close',)]


def test_console_writer_one_concise_line(caplog):
    w = tracking.ConsoleWriter('gossip')
    with caplog.at_level(logging.INFO, logger='vanish.tracking'):
        w.write_scalars(100, {'acc_mean': np.float32(0.91234), 'var/Dense_0/kernel': 1.0,
                              'var_ratio/Dense_0/kernel': 0.5})
    assert len(caplog.records) == 1
    msg = caplog.records[0].getMessage()
    assert msg == '[gossip] tick 100 | acc_mean 0.9123 (+2 per-layer)'


def test_make_writers_writes_jsonl_and_config(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger='vanish.tracking'):
        with tracking.make_writers(tmp_path, 'fl', wandb=False, group='g',
                                   config={'seed': 3}) as w:
            w.write_scalars(1, {'acc_mean': 0.3})
    assert tracking.read_jsonl(tmp_path / 'metrics.jsonl') == [
        {'algorithm': 'fl', 'tick': 1, 'acc_mean': 0.3}]
    assert json.loads((tmp_path / 'config.json').read_text()) == {'fl': {'seed': 3}}
    assert any('tick 1 | acc_mean 0.3' in r.getMessage() for r in caplog.records)


def test_wandb_missing_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'wandb', None)  # makes `import wandb` fail
    with pytest.raises(ImportError, match=r"pip install 'vanish\[track\]'"):
        tracking.WandbWriter('proj', 'fl', group='g', mode='disabled', dir=tmp_path)
    with pytest.raises(ImportError, match='vanish'):
        tracking.make_writers(tmp_path, 'fl', wandb=True, console=False)


def test_resolve_wandb_mode(tmp_path, monkeypatch):
    for var in ['WANDB_MODE', 'WANDB_API_KEY', 'WANDB_BASE_URL']:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('HOME', str(tmp_path))  # no ~/.netrc yet
    assert tracking.resolve_wandb_mode() == 'offline'
    (tmp_path / '.netrc').write_text('machine api.wandb.ai\n  login user\n  password abc\n')
    (tmp_path / '.netrc').chmod(0o600)
    assert tracking.resolve_wandb_mode() == 'online'
    monkeypatch.setenv('WANDB_MODE', 'disabled')
    assert tracking.resolve_wandb_mode() == 'disabled'
    assert tracking.resolve_wandb_mode('offline') == 'offline'
    monkeypatch.delenv('WANDB_MODE')
    (tmp_path / '.netrc').unlink()
    monkeypatch.setenv('WANDB_API_KEY', 'x' * 40)
    assert tracking.resolve_wandb_mode() == 'online'


def _fake_wandb(version: str) -> types.ModuleType:
    """A stand-in wandb module that records init kwargs and run calls."""
    module = types.ModuleType('wandb')
    module.__version__ = version
    module.inits = []

    class Config(dict):
        def update(self, other, allow_val_change=False):  # pylint: disable=arguments-differ
            super().update(other)

    class Run:
        def __init__(self):
            self.logged, self.summary, self.config, self.finished = [], {}, Config(), 0

        def log(self, data, step=None):
            self.logged.append((step, data))

        def finish(self):
            self.finished += 1

    def init(**kwargs):
        module.inits.append(kwargs)
        return Run()

    module.init = init
    module.Image = lambda path: ('Image', path)
    return module


@pytest.mark.parametrize('version,reinit', [('0.21.0', 'create_new'), ('0.17.5', True)])
def test_wandb_writer_wiring_with_fake_module(tmp_path, monkeypatch, version, reinit):
    fake = _fake_wandb(version)
    monkeypatch.setitem(sys.modules, 'wandb', fake)
    monkeypatch.setenv('WANDB_MODE', 'offline')
    writers = [tracking.make_writers(tmp_path, alg, wandb=True, project='p', group='exp',
                                     config={'seed': 1}, console=False)
               for alg in ['fl', 'gossip']]
    runs = [w.writers[-1].run for w in writers]
    writers[1].write_config({'extra': 2})
    writers[1].write_scalars(7, {'acc_mean': jnp.float32(0.5)})
    writers[1].write_image(7, 'accuracy', tmp_path / 'acc.png')
    writers[1].write_summary({'final_acc': np.float32(0.5)})
    for w in writers:
        w.close()
    assert [i['name'] for i in fake.inits] == ['exp-fl', 'exp-gossip']
    assert all(i['group'] == 'exp' and i['project'] == 'p' and i['mode'] == 'offline'
               and i['reinit'] == reinit and i['config'] == {'seed': 1} for i in fake.inits)
    assert runs[0].logged == []
    assert runs[1].logged == [(7, {'acc_mean': 0.5}),
                              (7, {'accuracy': ('Image', str(tmp_path / 'acc.png'))})]
    assert runs[1].summary == {'final_acc': 0.5}
    assert runs[1].config == {'extra': 2}
    assert [r.finished for r in runs] == [1, 1]


def test_wandb_run_ids_persist_per_workdir_and_wandb_dir_wins(tmp_path, monkeypatch):
    fake = _fake_wandb('0.21.0')
    monkeypatch.setitem(sys.modules, 'wandb', fake)
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.delenv('WANDB_DIR', raising=False)
    for _ in range(2):  # the second time: a rerun of the same command in the same workdir
        for alg in ['fl', 'gossip']:
            tracking.make_writers(tmp_path, alg, wandb=True, console=False).close()
    ids = json.loads((tmp_path / tracking.WANDB_RUNS_FILE).read_text())
    assert sorted(ids) == ['fl', 'gossip'] and ids['fl'] != ids['gossip']
    assert all(len(i) == 8 and i.isalnum() and i.islower() for i in ids.values())
    assert [i['id'] for i in fake.inits] == [ids['fl'], ids['gossip']] * 2
    assert all(i['resume'] == 'allow' and i['dir'] == str(tmp_path) for i in fake.inits)
    monkeypatch.setenv('WANDB_DIR', str(tmp_path / 'elsewhere'))
    tracking.make_writers(tmp_path / 'other', 'fl', wandb=True, console=False).close()
    assert fake.inits[-1]['dir'] == str(tmp_path / 'elsewhere')
    assert fake.inits[-1]['id'] not in ids.values()  # another workdir, another run


def test_wandb_writer_disabled_mode_with_real_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv('WANDB_MODE', 'disabled')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    for alg in ['fl', 'gossip']:
        with tracking.WandbWriter('vanish-test', alg, group='g', config={'a': 1},
                                  dir=tmp_path) as w:
            assert w.mode == 'disabled'
            w.write_scalars(1, {'acc_mean': np.float32(0.5)})
            w.write_summary({'final_acc': 0.5})
            assert w.run.summary['final_acc'] == 0.5


def test_progress_bar_counts_ticks_with_or_without_tqdm(monkeypatch, capsys):
    with tracking.ProgressBar(100, enabled=False) as bar:
        bar.update(10, acc=0.5)
    assert bar.n == 10 and not bar.enabled
    with tracking.ProgressBar(100, desc='gossip', enabled=True) as bar:
        assert bar.enabled
        bar.update(30, acc=jnp.float32(0.75))
        bar.update(20)
        assert bar.n == 50 and bar._bar.n == 50  # pylint: disable=protected-access
    assert 'acc=0.75' in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, 'tqdm.auto', None)
    with tracking.ProgressBar(100, enabled=True) as bar:
        bar.update(5)
    assert bar.n == 5 and not bar.enabled


# --- atomic writes, file modes -------------------------------------------------------------


@pytest.mark.parametrize('umask,mode', [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_umask_mode_not_mkstemps(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        tracking.atomic_write_text(tmp_path / 'a.txt', 'x\n')
        with tracking.JsonlWriter(tmp_path / 'metrics.jsonl', 'fl') as w:
            w.write_config({'seed': 1})
            w.write_scalars(1, {'acc_mean': 0.5})
            w.write_summary({'final_acc': 0.5})
        tracking.truncate_after(tmp_path / 'metrics.jsonl', 0)  # a rewrite of the log
        tracking.write_csv(tmp_path / 'metrics.jsonl')
    finally:
        os.umask(old)
    names = ['a.txt', 'config.json', 'summary.json', 'metrics.jsonl', 'metrics.csv']
    assert {n: (tmp_path / n).stat().st_mode & 0o777 for n in names} == dict.fromkeys(
        names, mode)
    assert (tmp_path / 'a.txt').read_text() == 'x\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary left


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / 'summary.json'
    tracking.atomic_write_text(path, 'old\n')

    def failing_replace(src, dst):
        raise OSError('disk gone')

    monkeypatch.setattr(os, 'replace', failing_replace)
    with pytest.raises(OSError, match='disk gone'):
        tracking.atomic_write_text(path, 'new\n')
    assert path.read_text() == 'old\n'
    assert [p.name for p in tmp_path.iterdir()] == ['summary.json']


# --- the metrics log tied to checkpoints --------------------------------------------------


def _row(algorithm: str, tick: int, acc: float = 0.5) -> bytes:
    return json.dumps({'algorithm': algorithm, 'tick': tick, 'acc_mean': acc}).encode() + b'\n'


def test_eval_ticks():
    assert tracking.eval_ticks(100, 30) == [0, 30, 60, 90, 100]
    assert tracking.eval_ticks(90, 30) == [0, 30, 60, 90]
    assert tracking.eval_ticks(5, 0) == [0, 1, 2, 3, 4, 5]


def test_reconcile_drops_replayed_rows_and_cut_tail_keeping_other_lines_byte_identical(
        tmp_path):
    path = tmp_path / 'metrics.jsonl'
    # Another algorithm's lines in odd spellings: kept byte for byte, never re-serialised.
    fl = [b'{"algorithm":"fl","tick":0,  "acc_mean": 1e-1}\n',
          b'{"tick": 10, "algorithm": "fl", "acc_mean": 0.30000000000000004}\n']
    gossip = [_row('gossip', t) for t in (0, 10, 20, 30)]
    path.write_bytes(fl[0] + gossip[0] + gossip[1] + fl[1] + gossip[2] + gossip[3]
                     + b'{"algorithm": "gossip", "tick": 40, "acc')
    rec = tracking.reconcile_log(path, 'gossip', 20, tracking.eval_ticks(40, 10))
    assert path.read_bytes() == fl[0] + gossip[0] + gossip[1] + fl[1] + gossip[2]
    assert rec.ok and not rec.recomputable
    assert rec.torn_tail and rec.dropped == (30,) and rec.expected == (0, 10, 20)
    assert [r['tick'] for r in rec.rows] == [0, 10, 20] and rec.missing == ()
    # Nothing left to repair: the file is not rewritten (same inode).
    inode = path.stat().st_ino
    again = tracking.reconcile_log(path, 'gossip', 20, tracking.eval_ticks(40, 10))
    assert again.ok and not again.torn_tail and again.dropped == ()
    assert path.stat().st_ino == inode


def test_reconcile_fresh_start_drops_every_row_and_keeps_a_whole_unterminated_row(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_bytes(_row('gossip', 0) + _row('fl', 0) + _row('gossip', 10) + _row('fl', 10)[:-1])
    rec = tracking.reconcile_log(path, 'gossip', None, [0, 10])
    assert rec.ok and rec.expected == () and rec.dropped == (0, 10) and not rec.torn_tail
    assert path.read_bytes() == _row('fl', 0) + _row('fl', 10)  # its newline restored
    missing = tmp_path / 'none.jsonl'
    rec = tracking.reconcile_log(missing, 'gossip', 10, [0, 10])
    assert rec.missing == (0, 10) and not missing.exists()  # a check creates nothing


def test_reconcile_reports_missing_ticks_and_builds_the_error(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_bytes(_row('gossip', 0) + _row('fl', 10) + _row('gossip', 20) + _row('gossip', 30))
    rec = tracking.reconcile_log(path, 'gossip', 30, tracking.eval_ticks(50, 10))
    assert rec.missing == (10,) and not rec.ok and not rec.recomputable
    error = tracking.metrics_log_error(rec)
    assert isinstance(error, MetricsLogError)
    message = str(error)
    assert str(path) in message and 'no row for tick 10' in message
    assert 'checkpoint at tick 30' in message
    assert f'moving {tmp_path / "gossip"} away' in message and '--workdir' in message


def test_reconcile_only_the_checkpoint_row_missing_is_recomputable(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_bytes(_row('gossip', 0) + _row('gossip', 10))
    rec = tracking.reconcile_log(path, 'gossip', 20, [0, 10, 20, 30])
    assert rec.missing == (20,) and rec.recomputable and not rec.ok
    # A stop between two evaluations: the checkpoint tick is no evaluation tick.
    rec = tracking.reconcile_log(path, 'gossip', 15, [0, 10, 20, 30])
    assert rec.ok and rec.expected == (0, 10)


def test_reconcile_reports_damaged_lines_and_duplicates_without_dropping_them(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    lines = [_row('gossip', 0), _row('gossip', 10), b'{"algorithm": "gossip", "ti\n',
             _row('fl', 0), b'[1, 2]\n', _row('gossip', 20), _row('gossip', 20),
             b'{"algorithm": "gossip", "tick": "30"}\n', _row('gossip', 40)]
    path.write_bytes(b''.join(lines))
    rec = tracking.reconcile_log(path, 'gossip', 30, [0, 10, 20, 30])
    assert rec.dropped == (40,)
    assert path.read_bytes() == b''.join(lines[:-1])  # damaged lines are kept
    assert rec.duplicated == (20,) and rec.missing == (30,) and not rec.recomputable
    assert [n for n, _ in rec.damaged] == [3, 5, 8]
    assert 'not JSON' in rec.damaged[0][1] and 'not a JSON object' in rec.damaged[1][1]
    assert 'integer tick' in rec.damaged[2][1]
    message = str(tracking.metrics_log_error(rec))
    assert 'line 3 is not JSON' in message and 'line 5 is not a JSON object' in message
    assert 'several rows for tick 20' in message and 'by hand' in message


def test_summary_rows_only_from_a_verified_log(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_bytes(_row('gossip', 20, 0.7) + _row('gossip', 0, 0.1) + _row('fl', 0)
                     + _row('gossip', 10, 0.4))
    rows = tracking.summary_rows(path, 'gossip', [0, 10, 20])
    assert [(r['tick'], r['acc_mean']) for r in rows] == [(0, 0.1), (10, 0.4), (20, 0.7)]
    with pytest.raises(MetricsLogError, match='no row for tick 30'):
        tracking.summary_rows(path, 'gossip', [0, 10, 20, 30])
    path.write_bytes(path.read_bytes() + b'garbage\n' + _row('gossip', 30))
    with pytest.raises(MetricsLogError, match='line 5 is not JSON'):
        tracking.summary_rows(path, 'gossip', [0, 10, 20, 30])
    assert tracking.check_log(path, 'fl', [0]).damaged  # a damaged line fails every check


def test_write_csv_one_row_per_algorithm_and_evaluation(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    with tracking.JsonlWriter(path, 'gossip') as w:
        w.write_scalars(10, {'acc_mean': 0.25, 'var_ratio/Dense_0/kernel': 0.5})
        w.write_scalars(0, {'acc_mean': 0.1, 'averaging_events': 0})
    with tracking.JsonlWriter(path, 'fl') as w:
        w.write_scalars(0, {'acc_mean': 0.125, 'global_acc': 0.2})
    with open(path, 'a') as f:
        f.write('{"algorithm": "fl", "tick": 10, "acc')  # a cut last line is skipped
    out = tracking.write_csv(path)
    assert out == tmp_path / tracking.CSV_FILE
    with open(out, newline='') as f:
        table = list(csv.reader(f))
    assert table == [
        ['algorithm', 'tick', 'acc_mean', 'var_ratio/Dense_0/kernel', 'averaging_events',
         'global_acc'],
        ['gossip', '0', '0.1', '', '0', ''],
        ['gossip', '10', '0.25', '0.5', '', ''],
        ['fl', '0', '0.125', '', '', '0.2'],
    ]
    path.write_text('{"algorithm": "fl", "tick": 0}\nnot json\n{"algorithm": "fl", "tick": 1}\n')
    with pytest.raises(MetricsLogError, match='line 2'):
        tracking.write_csv(path)
    assert out.read_text().startswith('algorithm,tick,acc_mean')  # the old CSV is kept


# --- console, progress bar, TensorBoard ----------------------------------------------------


def test_console_summary_says_never_for_a_target_not_reached(caplog):
    w = tracking.ConsoleWriter('gossip')
    with caplog.at_level(logging.INFO, logger='vanish.tracking'):
        w.write_summary({'final_acc': 0.5, 'ticks_to_target': None, 'other': None})
    assert caplog.records[0].getMessage() == (
        '[gossip] summary final_acc 0.5 ticks_to_target never other n/a')


def test_log_lines_do_not_break_the_progress_bar(capsys):
    log = logging.getLogger('vanish.test_bar')
    log.propagate = False
    handler = logging.StreamHandler()  # the current (captured) stderr
    log.addHandler(handler)
    try:
        def logged_after_bar(bar_enabled: bool) -> str:
            with tracking.ProgressBar(100, desc='gossip', enabled=bar_enabled) as bar:
                bar.update(30)
                if not bar_enabled:  # a bare tqdm bar, as without ProgressBar's hook
                    from tqdm.auto import tqdm
                    raw = tqdm(total=100, desc='raw')
                    raw.update(30)
                log.warning('MESSAGE')
                if not bar_enabled:
                    raw.close()
                bar.update(10)
            return capsys.readouterr().err

        err = logged_after_bar(True)
        before = err[:err.index('MESSAGE')]
        assert before.endswith('\r'), repr(before[-40:])  # the bar was cleared first
        assert err.count('gossip') >= 3  # drawn, redrawn after the line, updated
        assert handler in log.handlers  # the hook is gone with the bar
        # The same log line next to a bar without the hook lands on the bar's line.
        err = logged_after_bar(False)
        assert not err[:err.index('MESSAGE')].endswith(('\r', '\n'))
    finally:
        log.removeHandler(handler)


def _tb_events(logdir) -> list[Any]:
    """Every event in a TensorBoard run folder (TFRecord: length, crc, payload, crc)."""
    from tensorboardX.proto import event_pb2
    events = []
    for f in sorted(logdir.glob('events.out.tfevents.*')):
        data, i = f.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack('<Q', data[i:i + 8])
            events.append(event_pb2.Event.FromString(data[i + 12:i + 12 + n]))
            i += 12 + n + 4
    return events


def test_tensorboard_writer_records_scalars_text_and_images(tmp_path):
    pytest.importorskip('tensorboardX', reason="TensorBoard is optional: pip install 'vanish[tb]'")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(1, 1))
    fig.savefig(tmp_path / 'acc.png', dpi=20)
    plt.close(fig)
    with tracking.make_writers(tmp_path, 'gossip', wandb=False, console=False, config={'a': 1},
                               tensorboard=True, resume_tick=None) as w:
        w.write_scalars(10, {'acc_mean': np.float32(0.5), 'var_ratio/Dense_0/kernel': 0.25})
        w.write_scalars(20, {'acc_mean': 0.75, 'averaging_events': 3})
        w.write_image(20, 'accuracy', tmp_path / 'acc.png')
        w.write_summary({'final_acc': 0.75, 'ticks_to_target': None})
    events = _tb_events(tmp_path / tracking.TENSORBOARD_DIR / 'gossip')
    scalars = [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value
               if v.WhichOneof('value') == 'simple_value']
    assert scalars == [(10, 'acc_mean', 0.5), (10, 'var_ratio/Dense_0/kernel', 0.25),
                       (20, 'acc_mean', 0.75), (20, 'averaging_events', 3.0)]
    tags = {v.tag for e in events for v in e.summary.value}
    assert {'accuracy', 'config/text_summary', 'summary/text_summary'} <= tags
    images = [v.image for e in events for v in e.summary.value if v.tag == 'accuracy']
    assert images[0].height == 20 and images[0].width == 20
    texts = [v.tensor.string_val[0].decode() for e in events for v in e.summary.value
             if v.tag == 'summary/text_summary']
    assert 'ticks_to_target: never' in texts[0]
    # A resume from tick 10 purges the replayed events from tick 11 on.
    tracking.make_writers(tmp_path, 'gossip', wandb=False, console=False, tensorboard=True,
                          resume_tick=10).close()
    starts = [e for e in _tb_events(tmp_path / tracking.TENSORBOARD_DIR / 'gossip')
              if e.HasField('session_log')]
    assert [(e.step, e.session_log.status) for e in starts] == [(11, 1)]  # 1: START


def test_tensorboard_missing_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorboardX', None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'vanish\[tb\]'"):
        tracking.TensorBoardWriter(tmp_path)
    with pytest.raises(ImportError, match='tensorboardX'):
        tracking.make_writers(tmp_path, 'fl', wandb=False, console=False, tensorboard=True)
    assert not (tmp_path / tracking.TENSORBOARD_DIR).exists()


def test_writer_keeps_a_whole_row_that_only_lacks_its_newline(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_bytes(_row('fl', 1)[:-1])  # killed between the row and its newline
    assert [r['tick'] for r in tracking.read_jsonl(path)] == [1]
    with tracking.JsonlWriter(path, 'fl') as w:
        w.write_scalars(2, {'acc_mean': 0.2})
    assert [r['tick'] for r in tracking.read_jsonl(path)] == [1, 2]

"""Host-side metric writers (console, JSONL, W&B, TensorBoard) behind one `MetricWriter`
interface, and the metrics log's integrity on resume (`reconcile_log`, `summary_rows`).

    with make_writers(workdir, 'gossip', wandb=False, group='exp1', config=cfg) as writer:
        writer.write_scalars(100, {'acc_mean': 0.91, 'var_ratio/Dense_0/kernel': 0.12})

Every rewrite of a file is atomic (`atomic_write_text`) and gets the user's umask.
"""

from __future__ import annotations

import abc
import contextlib
import csv
import dataclasses
import importlib
import io
import json
import logging
import math
import netrc
import os
import re
import secrets
import string
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vanish.errors import MetricsLogError

logger = logging.getLogger(__name__)

METRICS_FILE = 'metrics.jsonl'
CSV_FILE = 'metrics.csv'  # write_csv's default: the same rows, for spreadsheets / pandas
WANDB_RUNS_FILE = 'wandb_runs.json'  # {algorithm: W&B run id}, so a rerun resumes its runs
WANDB_INSTALL_HINT = "pip install 'vanish[track]'"

Scalar = bool | int | float
PathLike = str | os.PathLike[str]


def to_scalar(value: Any) -> Scalar:
    """Converts a Python / NumPy / JAX scalar to a plain Python bool, int or float.

    Integers stay integers: counts such as `averaging_events` should not become 3.0 in JSON.
    """
    array = np.asarray(value)  # a jax array is fetched to the host here
    if array.size != 1:
        raise ValueError(f'expected a scalar, got shape {array.shape}')
    item = array.reshape(()).item()
    if array.dtype.kind == 'b':
        return bool(item)
    if array.dtype.kind in 'iu':
        return int(item)
    return float(item)


def to_scalars(scalars: Mapping[str, Any]) -> dict[str, Scalar]:
    """`to_scalar` of every value, keys as str."""
    return {str(k): to_scalar(v) for k, v in scalars.items()}


def _plain(obj: Any) -> Any:
    """JSON-friendly copy of a config / summary (ConfigDicts, numpy / jax values, paths)."""
    if callable(getattr(obj, 'to_dict', None)):  # ml_collections.ConfigDict
        obj = obj.to_dict()
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    try:
        return to_scalar(obj)
    except (TypeError, ValueError):
        return repr(obj)


def _fmt(value: Any) -> str:
    return f'{value:.4g}' if isinstance(value, float) else str(value)


def _fmt_summary(key: str, value: Any) -> str:
    if value is None:  # e.g. ticks_to_target of a run that never reached the target
        return 'never' if key.startswith(('ticks_to', 'time_to')) else 'n/a'
    return _fmt(value)


def _umask() -> int:
    """This process's umask, read without changing it where Linux shows it (os.umask sets it
    for every thread at once)."""
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Replaces `path` by `data` at once: a reader (or a crash) never sees a half-written file.

    The file gets the mode a plain `open(path, 'w')` would give (0o666 less the umask), not
    mkstemp's 0o600. Usage: `atomic_write_bytes(workdir / 'metrics.jsonl', data)`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text; use it for summary.json, summary.md, configs.

    Usage: `tracking.atomic_write_text(workdir / 'summary.md', table + '\\n')`.
    """
    atomic_write_bytes(path, text.encode('utf-8'))


_atomic_write_text = atomic_write_text  # the old private name


def _merge_json(path: Path, key: str, value: Any) -> None:
    data = json.loads(path.read_text(encoding='utf-8')) if path.exists() else {}
    data[key] = value
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + '\n')


class MetricWriter(abc.ABC):
    """One interface for every sink (CLU-style): config once, scalars per eval, summary at end.

    Values may be NumPy / JAX scalars; writers convert them on the host with `to_scalar`.
    """

    @abc.abstractmethod
    def write_config(self, config: Mapping[str, Any]) -> None: ...

    @abc.abstractmethod
    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None: ...

    @abc.abstractmethod
    def write_summary(self, summary: Mapping[str, Any]) -> None: ...

    @abc.abstractmethod
    def write_text(self, key: str, text: str) -> None: ...

    @abc.abstractmethod
    def write_image(self, step: int, key: str, path: PathLike) -> None:
        """`path`: a PNG file already on disk."""

    # A hook with a no-op default, deliberately not abstract: writers that buffer nothing
    # (console, jsonl, wandb) do not override it.
    def flush(self) -> None:  # noqa: B027
        """Pushes out anything buffered."""

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ConsoleWriter(MetricWriter):
    """One concise log line per call; per-layer keys (containing '/') are only counted."""

    def __init__(self, algorithm: str = '', *, log: logging.Logger | None = None,
                 level: int = logging.INFO) -> None:
        self._prefix = f'[{algorithm}] ' if algorithm else ''
        self._log = log or logger
        self._level = level

    def _emit(self, msg: str) -> None:
        self._log.log(self._level, '%s%s', self._prefix, msg)

    def write_config(self, config: Mapping[str, Any]) -> None:
        # The config is in the workdir (run_config.json, config.json): not on the console.
        self._log.debug('%sconfig %s', self._prefix, json.dumps(_plain(config), sort_keys=True))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = to_scalars(scalars)
        shown = [f'{k} {_fmt(v)}' for k, v in values.items() if '/' not in k]
        hidden = len(values) - len(shown)
        tail = f' (+{hidden} per-layer)' if hidden else ''
        self._emit(f'tick {int(step)} | ' + ' '.join(shown) + tail)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        plain = _plain(summary)
        self._emit('summary ' + ' '.join(f'{k} {_fmt_summary(k, v)}' for k, v in plain.items()))

    def write_text(self, key: str, text: str) -> None:
        self._emit(f'{key}: {text}')

    def write_image(self, step: int, key: str, path: PathLike) -> None:
        self._log.debug('%stick %d | image %s -> %s', self._prefix, int(step), key,
                        os.fspath(path))


class JsonlWriter(MetricWriter):
    """Appends {"algorithm", "tick", **scalars} rows to a JSONL file shared by all algorithms.

    Config and summary go to `config.json` / `summary.json` beside it, keyed by algorithm.
    Text and images are not recorded here (the images already are files in the workdir).
    """

    def __init__(self, path: PathLike, algorithm: str) -> None:
        self.path = Path(path)
        self.algorithm = algorithm
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_tail(self.path)  # a row cut by a crash must not glue onto the next one
        self._file = open(self.path, 'a', encoding='utf-8')  # pylint: disable=consider-using-with

    def write_config(self, config: Mapping[str, Any]) -> None:
        _merge_json(self.path.with_name('config.json'), self.algorithm, _plain(config))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        row = {'algorithm': self.algorithm, 'tick': int(step), **to_scalars(scalars)}
        # One write() per row, flushed: an interrupted run keeps every finished row.
        self._file.write(json.dumps(row) + '\n')
        self._file.flush()

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        _merge_json(self.path.with_name('summary.json'), self.algorithm, _plain(summary))

    def write_text(self, key: str, text: str) -> None:
        pass

    def write_image(self, step: int, key: str, path: PathLike) -> None:
        pass

    def close(self) -> None:
        self._file.close()


def _drop_partial_tail(path: Path) -> None:
    """Ends the file with a newline: a last line cut mid-write is removed, a whole row that
    only lacks its newline (as `read_jsonl` reads it) is kept and terminated."""
    if not path.exists():
        return
    with open(path, 'rb+') as f:
        data = f.read()
        if not data or data.endswith(b'\n'):
            return
        start = data.rfind(b'\n') + 1
        if _parse_line(data[start:]).problem is None:
            f.write(b'\n')
        else:
            logger.warning('%s: dropping a partial last line (interrupted write)', path)
            f.truncate(start)


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """All rows of a JSONL file; a partial last line (interrupted write) is skipped."""
    path = Path(path)
    lines = path.read_text(encoding='utf-8').split('\n')
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:  # no trailing newline: the write was cut short
                logger.warning('%s: skipping a partial last line', path)
                continue
            raise ValueError(f'{path}:{i + 1}: not a JSON line: {e}') from e
    return rows


def truncate_after(path: PathLike, tick: int, algorithm: str | None = None) -> int:
    """Drops rows with tick > `tick` (only `algorithm`'s, if given); returns how many.

    Call it before resuming from a checkpoint at `tick`, so replayed ticks are not duplicated.
    """
    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for row in read_jsonl(path):
        if row.get('tick', -math.inf) > tick and algorithm in (None, row.get('algorithm')):
            dropped += 1
        else:
            kept.append(row)
    atomic_write_text(path, ''.join(json.dumps(r) + '\n' for r in kept))
    return dropped


def eval_ticks(total_ticks: int, eval_every: int) -> list[int]:
    """The ticks a run evaluates at, each of which must have a metrics row: 0, E, 2E, ..., T.

    Args:
        total_ticks: the run's last tick T (config.ticks).
        eval_every: the evaluation period E (config.eval_every), >= 1.
    Returns:
        Sorted ticks: 0, every multiple of E below T, and T itself.
    """
    every = max(1, int(eval_every))
    return sorted(set(range(0, int(total_ticks), every)) | {int(total_ticks)})


@dataclasses.dataclass(frozen=True)
class Reconciled:
    """What `reconcile_log` / `check_log` found in a metrics log for one algorithm.

    `ok`: every expected tick has exactly one row of the algorithm and no line is damaged.
    `recomputable`: the only fault is the missing row of the checkpoint tick, which the
    caller can recompute by evaluating the restored state (and then write it).
    """

    path: Path
    algorithm: str
    checkpoint_tick: int | None  # rows past it were dropped (None: every row of it)
    expected: tuple[int, ...]  # the ticks that must have a row
    rows: tuple[dict[str, Any], ...]  # the algorithm's rows that were kept, in file order
    missing: tuple[int, ...] = ()  # expected ticks without a row
    duplicated: tuple[int, ...] = ()  # expected ticks with more than one row
    unexpected: tuple[int, ...] = ()  # ticks of rows not in `expected` (kept; not a fault)
    damaged: tuple[tuple[int, str], ...] = ()  # (line number in the file now, what is wrong)
    dropped: tuple[int, ...] = ()  # ticks of the algorithm's rows removed (past the checkpoint)
    torn_tail: bool = False  # a last line cut mid-write was found (and removed, on reconcile)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.damaged)

    @property
    def recomputable(self) -> bool:
        return (not self.ok and not self.duplicated and not self.damaged
                and self.checkpoint_tick is not None
                and self.missing == (self.checkpoint_tick,))


@dataclasses.dataclass
class _Line:
    raw: bytes  # without its newline
    row: dict[str, Any] | None = None  # a parsed JSON object
    problem: str | None = None  # why it is damaged


def _scan(data: bytes) -> tuple[list[_Line], bool]:
    """(lines, torn): every complete line parsed; a cut last line (no newline, not a JSON
    object) is left out and reported as torn. A complete last line without its newline stays."""
    parts = data.split(b'\n')
    tail = parts.pop()  # b'' when the data ends with a newline
    lines = [_parse_line(raw) for raw in parts]
    torn = False
    if tail.strip():
        last = _parse_line(tail)
        if last.problem is None:  # only the newline is missing: the row itself is whole
            lines.append(last)
        else:
            torn = True
    return lines, torn


def _parse_line(raw: bytes) -> _Line:
    if not raw.strip():
        return _Line(raw)
    try:
        value = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return _Line(raw, problem=f'not JSON ({e})')
    if not isinstance(value, dict):
        return _Line(raw, problem=f'not a JSON object (a {type(value).__name__})')
    return _Line(raw, row=value)


def _is_tick(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _verify(path: PathLike, algorithm: str, expected_ticks: Sequence[int],
            upto: int | None, *, repair: bool) -> Reconciled:
    path = Path(path)
    data = path.read_bytes() if path.exists() else b''
    lines, torn = _scan(data)
    kept: list[_Line] = []
    rows: list[dict[str, Any]] = []
    dropped: list[int] = []
    damaged: list[tuple[int, str]] = []
    for line in lines:
        row = line.row
        if row is not None and row.get('algorithm') == algorithm:
            if not _is_tick(row.get('tick')):
                line.problem = f'a row of {algorithm} without an integer tick'
            elif repair and (upto is None or row['tick'] > upto):
                dropped.append(row['tick'])
                continue
            else:
                rows.append(row)
        if line.problem is not None:
            damaged.append((len(kept) + 1, line.problem))
        kept.append(line)
    if repair:  # the rows the checkpoint vouches for
        expected = sorted({int(t) for t in expected_ticks if upto is not None and int(t) <= upto})
    else:
        expected = sorted({int(t) for t in expected_ticks})
    counts: dict[int, int] = {}
    for row in rows:
        counts[row['tick']] = counts.get(row['tick'], 0) + 1
    if repair:
        repaired = b''.join(line.raw + b'\n' for line in kept)
        if repaired != data:
            atomic_write_bytes(path, repaired)  # other algorithms' lines: byte-identical
            logger.info('%s: dropped %d rows of %s %s%s', path, len(dropped), algorithm,
                        '(it starts afresh)' if upto is None else f'past tick {upto}',
                        ' and a last line cut mid-write' if torn else '')
    return Reconciled(
        path=path, algorithm=algorithm, checkpoint_tick=upto, expected=tuple(expected),
        rows=tuple(rows), missing=tuple(t for t in expected if t not in counts),
        duplicated=tuple(t for t in expected if counts.get(t, 0) > 1),
        unexpected=tuple(sorted(set(counts) - set(expected))), damaged=tuple(damaged),
        dropped=tuple(dropped), torn_tail=torn)


def reconcile_log(path: PathLike, algorithm: str, checkpoint_tick: int | None,
                  eval_ticks: Sequence[int]) -> Reconciled:
    """Makes the metrics log agree with `algorithm`'s checkpoint before it resumes; reports.

    Repairs, in one atomic rewrite: a last line cut mid-write is removed; `algorithm`'s rows
    past `checkpoint_tick` are dropped (they are replayed). Every other line (other
    algorithms', damaged ones) is kept byte-identical. Then verifies that each of
    `eval_ticks` <= `checkpoint_tick` has exactly one parseable row of `algorithm`, and reports
    lines that are not JSON objects with their line numbers (never dropped silently).

    Call it before opening the algorithm's JsonlWriter (make_writers with resume_tick=None):
    the rewrite replaces the file, and a writer opened earlier appends to the old one.

    Args:
        path: the metrics log (`<workdir>/metrics.jsonl`); a missing file is an empty log.
        algorithm: whose rows to reconcile.
        checkpoint_tick: the restored checkpoint's tick; None when the algorithm starts
            afresh (every row of it is dropped).
        eval_ticks: the ticks that must have a row, e.g. `eval_ticks(cfg.ticks, cfg.eval_every)`
            (those past the checkpoint are ignored).
    Returns:
        A `Reconciled`. Usage:

            rec = tracking.reconcile_log(workdir / 'metrics.jsonl', algo, step, expected)
            if rec.recomputable:   # only the checkpoint tick's row is missing
                ...  # evaluate the restored state, write that row
            elif not rec.ok:
                raise tracking.metrics_log_error(rec)
    """
    return _verify(path, algorithm, eval_ticks, checkpoint_tick, repair=True)


def check_log(path: PathLike, algorithm: str, eval_ticks: Sequence[int]) -> Reconciled:
    """Verifies, without changing the file, that each of `eval_ticks` has exactly one row of
    `algorithm` and that no line is damaged (a cut last line is reported, not a fault).

    Usage: `if not (rec := tracking.check_log(path, algo, ticks)).ok: raise
    tracking.metrics_log_error(rec)`.
    """
    return _verify(path, algorithm, eval_ticks, None, repair=False)


def _ticks(ticks: Sequence[int], most: int = 12) -> str:
    shown = ', '.join(str(t) for t in ticks[:most])
    return shown + (f', ... ({len(ticks)} in all)' if len(ticks) > most else '')


def metrics_log_error(rec: Reconciled) -> MetricsLogError:
    """The error to raise for a log that `reconcile_log` / `check_log` found not `ok`.

    It names the file, the faults (missing ticks, duplicated ticks, damaged line numbers)
    and what to do. Usage: `raise tracking.metrics_log_error(rec)`.
    """
    faults = []
    if rec.missing:
        faults.append(f'no row for tick {_ticks(rec.missing)}')
    if rec.duplicated:
        faults.append(f'several rows for tick {_ticks(rec.duplicated)}')
    for number, problem in rec.damaged[:5]:
        faults.append(f'line {number} is {problem}' if problem.startswith(('not', 'a '))
                      else f'line {number}: {problem}')
    if len(rec.damaged) > 5:
        faults.append(f'... ({len(rec.damaged)} damaged lines in all)')
    where = (f'up to its checkpoint at tick {rec.checkpoint_tick}'
             if rec.checkpoint_tick is not None else 'for a complete run')
    todo = (f'start {rec.algorithm} over by moving {rec.path.parent / rec.algorithm} away and '
            'rerunning the same command, or use a new --workdir')
    if rec.damaged:
        todo = 'fix or delete the damaged lines by hand, or ' + todo
    return MetricsLogError(
        f'{rec.path}: the metrics of {rec.algorithm} are incomplete {where}: '
        f'{"; ".join(faults)}. Those rows cannot be recomputed from the checkpoint: {todo}; '
        "the other algorithms' rows are untouched")


def summary_rows(path: PathLike, algorithm: str, eval_ticks: Sequence[int]
                 ) -> list[dict[str, Any]]:
    """`algorithm`'s rows sorted by tick, only from a verified log: the input of a summary.

    Raises `errors.MetricsLogError` (see `metrics_log_error`) if an expected tick has no row
    or several, or a line is damaged: a summary of an incomplete log would be wrong silently.
    Usage: `summary = metrics.summarize(tracking.summary_rows(path, algo, ticks), target)`.
    """
    rec = check_log(path, algorithm, eval_ticks)
    if not rec.ok:
        raise metrics_log_error(rec)
    return sorted(rec.rows, key=lambda row: int(row['tick']))


def _csv_cell(value: Any) -> str:
    if value is None:
        return ''
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)


def write_csv(jsonl_path: PathLike, csv_path: PathLike | None = None) -> Path:
    """Regenerates the CSV twin of a metrics log, atomically: one row per algorithm per
    evaluation, the union of the columns (algorithm, tick first; a missing value is empty).

    Rows are grouped by algorithm (in order of first appearance), then sorted by tick.
    A damaged line raises `errors.MetricsLogError` naming it; a cut last line is skipped.
    Run it at the end, after `summary_rows` verified each algorithm's rows.

    Args:
        jsonl_path: `<workdir>/metrics.jsonl`.
        csv_path: where to write; default `metrics.csv` beside the JSONL file.
    Returns:
        The CSV's path. Usage: `tracking.write_csv(workdir / tracking.METRICS_FILE)`.
    """
    jsonl_path = Path(jsonl_path)
    csv_path = Path(csv_path) if csv_path is not None else jsonl_path.with_name(CSV_FILE)
    lines, _ = _scan(jsonl_path.read_bytes())
    bad = [(i + 1, line.problem) for i, line in enumerate(lines) if line.problem]
    if bad:
        listed = '; '.join(f'line {n}: {why}' for n, why in bad[:5])
        raise MetricsLogError(f'{jsonl_path} has damaged lines ({listed}); fix or delete '
                              f'them by hand, then rerun; {csv_path} was not written')
    rows = [line.row for line in lines if line.row is not None]
    columns = {'algorithm': None, 'tick': None}
    order: dict[Any, int] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
        order.setdefault(row.get('algorithm'), len(order))
    rows.sort(key=lambda r: (order[r.get('algorithm')],
                             r['tick'] if _is_tick(r.get('tick')) else math.inf))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow(list(columns))
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    atomic_write_text(csv_path, out.getvalue())
    return csv_path


def resolve_wandb_mode(mode: str | None = None) -> str:
    """`mode`, else $WANDB_MODE, else 'online' if logged in (key or netrc), else 'offline'."""
    if mode:
        return mode
    if os.environ.get('WANDB_MODE'):
        return os.environ['WANDB_MODE']
    if os.environ.get('WANDB_API_KEY'):
        return 'online'
    base_url = os.environ.get('WANDB_BASE_URL', 'https://api.wandb.ai')
    host = urllib.parse.urlparse(base_url).hostname
    try:
        if host and netrc.netrc().authenticators(host):
            return 'online'
    except (OSError, netrc.NetrcParseError):
        pass
    # Never block a batch job on a login prompt: log locally, `wandb sync` later.
    return 'offline'


def _import_wandb() -> Any:
    try:
        import wandb  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ImportError('W&B tracking was requested but wandb is not installed: '
                          f'{WANDB_INSTALL_HINT}') from e
    return wandb


class WandbWriter(MetricWriter):
    """One W&B run (e.g. one algorithm), grouped with its siblings; wandb is imported lazily."""

    def __init__(self, project: str, name: str, group: str | None = None,
                 config: Mapping[str, Any] | None = None, mode: str | None = None,
                 dir: PathLike | None = None,  # pylint: disable=redefined-builtin
                 **init_kwargs: Any) -> None:
        self._wandb = _import_wandb()
        # One process holds one run per algorithm: wandb >= 0.19.10 keeps them apart
        # ('create_new'); older versions can only finish the previous run (fine sequentially).
        version = tuple(int(p) for p in re.findall(r'\d+', self._wandb.__version__)[:3])
        reinit: str | bool = 'create_new' if version >= (0, 19, 10) else True
        if dir is not None:
            Path(dir).mkdir(parents=True, exist_ok=True)
            dir = os.fspath(dir)
        self.mode = resolve_wandb_mode(mode)
        self.run = self._wandb.init(project=project, name=name, group=group,
                                    config=_plain(config or {}), mode=self.mode, dir=dir,
                                    reinit=reinit, **init_kwargs)
        self._finished = False

    def write_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(_plain(config), allow_val_change=True)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        self.run.log(to_scalars(scalars), step=int(step))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        self.run.summary.update(_plain(summary))

    def write_text(self, key: str, text: str) -> None:
        self.run.summary[key] = text

    def write_image(self, step: int, key: str, path: PathLike) -> None:
        self.run.log({key: self._wandb.Image(os.fspath(path))}, step=int(step))

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            self.run.finish()


TENSORBOARD_DIR = 'tensorboard'  # <workdir>/tensorboard/<algorithm>: one TensorBoard run each
TENSORBOARD_INSTALL_HINT = "pip install 'vanish[tb]'"


def _import_tensorboardx() -> Any:
    try:
        return importlib.import_module('tensorboardX')
    except ImportError as e:
        raise ImportError('TensorBoard logging was requested but tensorboardX is not '
                          f'installed: {TENSORBOARD_INSTALL_HINT}') from e


class TensorBoardWriter(MetricWriter):
    """TensorBoard event files in `logdir` (tensorboardX, imported lazily).

    Args:
        logdir: this algorithm's folder, e.g. `<workdir>/tensorboard/gossip`
            (`tensorboard --logdir <workdir>/tensorboard` then shows the algorithms side by side).
        purge_step: on a resume from a checkpoint at tick t, t + 1: TensorBoard hides the
            events >= t + 1 that the interrupted run wrote (they are replayed). None: no purge.
    Scalars go under their own names, config / summary / text as text, PNG files as images.
    """

    def __init__(self, logdir: PathLike, *, purge_step: int | None = None) -> None:
        tensorboardx = _import_tensorboardx()
        self.logdir = Path(logdir)
        self._writer = tensorboardx.SummaryWriter(logdir=os.fspath(self.logdir),
                                                  purge_step=purge_step)

    def write_config(self, config: Mapping[str, Any]) -> None:
        text = json.dumps(_plain(config), indent=1, sort_keys=True)
        self._writer.add_text('config', '    ' + text.replace('\n', '\n    '))  # code block

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        for key, value in to_scalars(scalars).items():
            self._writer.add_scalar(key, float(value), global_step=int(step))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        lines = [f'{k}: {_fmt_summary(k, v)}' for k, v in _plain(summary).items()]
        self._writer.add_text('summary', '  \n'.join(lines))  # markdown line breaks

    def write_text(self, key: str, text: str) -> None:
        self._writer.add_text(key, '    ' + text.replace('\n', '\n    '))

    def write_image(self, step: int, key: str, path: PathLike) -> None:
        import matplotlib.image  # pylint: disable=import-outside-toplevel

        image = np.asarray(matplotlib.image.imread(os.fspath(path)))  # HWC floats in [0, 1]
        self._writer.add_image(key, image, global_step=int(step), dataformats='HWC')

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MultiWriter(MetricWriter):
    """Fans every call out to several writers; values are converted to Python once."""

    def __init__(self, writers: Sequence[MetricWriter]) -> None:
        self.writers = list(writers)

    def _each(self, method: str, *args: Any) -> None:
        for w in self.writers:
            getattr(w, method)(*args)

    def write_config(self, config: Mapping[str, Any]) -> None:
        self._each('write_config', config)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        self._each('write_scalars', step, to_scalars(scalars))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        self._each('write_summary', _plain(summary))

    def write_text(self, key: str, text: str) -> None:
        self._each('write_text', key, text)

    def write_image(self, step: int, key: str, path: PathLike) -> None:
        self._each('write_image', step, key, path)

    def flush(self) -> None:
        self._each('flush')

    def close(self) -> None:
        # Close every writer even if one fails, so the JSONL file is never left open.
        errors: list[Exception] = []
        for w in self.writers:
            try:
                w.close()
            except Exception as e:  # pylint: disable=broad-except
                errors.append(e)
        if errors:
            raise errors[0]


def wandb_run_id(workdir: PathLike, algorithm: str) -> str:
    """This workdir's W&B run id for `algorithm`: read from `wandb_runs.json`, else new and saved.

    W&B run ids are per project, 8 characters of [a-z0-9] as wandb makes them.
    """
    path = Path(workdir) / WANDB_RUNS_FILE
    ids = json.loads(path.read_text(encoding='utf-8')) if path.exists() else {}
    run_id = ids.get(algorithm)
    if not run_id:
        alphabet = string.ascii_lowercase + string.digits
        run_id = ''.join(secrets.choice(alphabet) for _ in range(8))
        _merge_json(path, algorithm, run_id)
    return run_id


def make_writers(workdir: PathLike, algorithm: str, *, wandb: bool, project: str = 'vanish',
                 group: str | None = None, config: Mapping[str, Any] | None = None,
                 console: bool = True, wandb_mode: str | None = None,
                 resume_tick: int | None = None, tensorboard: bool = False) -> MetricWriter:
    """Console + `workdir/metrics.jsonl` (+ one W&B run) writers for one algorithm of a run.

    `resume_tick`: when resuming from a checkpoint, drops this algorithm's rows past it first
    (or call `reconcile_log` first and pass None; TensorBoard then purges nothing).
    `tensorboard`: also event files in `workdir/tensorboard/<algorithm>` (needs tensorboardX:
    `pip install 'vanish[tb]'`).
    W&B: the run's files go to $WANDB_DIR if set, else into the workdir; its run id is kept
    in `workdir/wandb_runs.json`, so rerunning the command (a resume, or a finished algorithm
    writing its summary again) continues the same W&B run instead of adding a new one.
    """
    workdir = Path(workdir)
    metrics = workdir / METRICS_FILE
    if resume_tick is not None:
        truncate_after(metrics, resume_tick, algorithm=algorithm)
    writers: list[MetricWriter] = [ConsoleWriter(algorithm)] if console else []
    writers.append(JsonlWriter(metrics, algorithm))
    if tensorboard:
        try:
            writers.append(TensorBoardWriter(
                workdir / TENSORBOARD_DIR / algorithm,
                purge_step=None if resume_tick is None else resume_tick + 1))
        except BaseException:
            MultiWriter(writers).close()
            raise
    if config is not None:
        for w in writers:
            w.write_config(config)
    if wandb:  # W&B gets the config at init, where it is searchable
        name = f'{group}-{algorithm}' if group else algorithm
        try:
            writers.append(WandbWriter(project, name, group=group, config=config,
                                       mode=wandb_mode,
                                       dir=os.environ.get('WANDB_DIR') or workdir,
                                       id=wandb_run_id(workdir, algorithm), resume='allow'))
        except BaseException:
            MultiWriter(writers).close()
            raise
    return MultiWriter(writers)


class _AroundBars(logging.Handler):
    """Passes records to `inner` with the tqdm bars cleared, then redraws them."""

    def __init__(self, inner: logging.Handler, tqdm: Any) -> None:
        super().__init__()
        self.inner, self._tqdm = inner, tqdm

    def handle(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.inner.level:
            return False
        with self._tqdm.external_write_mode():
            return bool(self.inner.handle(record))

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


@contextlib.contextmanager
def progress_logging() -> Iterator[None]:
    """While active, log lines to the console clear the tqdm bars and redraw them after,
    instead of breaking a bar's line (like tqdm's `logging_redirect_tqdm`, but for any console
    handler, absl's included). File handlers are left alone; a no-op without tqdm.

    `ProgressBar` enters it while its bar is shown; a run loop may also wrap itself:

        with tracking.progress_logging():
            ...  # bars and log lines
    """
    try:
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    except ImportError:
        yield
        return
    loggers = [logging.getLogger()] + [
        lg for lg in list(logging.Logger.manager.loggerDict.values())
        if isinstance(lg, logging.Logger) and lg.handlers]
    swapped: list[tuple[logging.Logger, logging.Handler, _AroundBars]] = []
    for lg in loggers:
        for i, handler in enumerate(list(lg.handlers)):
            if isinstance(handler, (_AroundBars, logging.FileHandler)):
                continue
            proxy = _AroundBars(handler, tqdm)
            lg.handlers[i] = proxy
            swapped.append((lg, handler, proxy))
    try:
        yield
    finally:
        for lg, handler, proxy in swapped:
            if proxy in lg.handlers:
                lg.handlers[lg.handlers.index(proxy)] = handler


class ProgressBar:
    """tqdm bar counting ticks (so it shows ticks/s); a no-op when disabled or tqdm is missing.

    `enabled=None` shows the bar only on a TTY. Call `update` after the eval metrics reached
    the host, so the rate counts finished ticks, not asynchronously dispatched ones.
    While the bar is shown, console log lines clear and redraw it (`progress_logging`).
    """

    def __init__(self, total: int | None, *, desc: str | None = None,
                 enabled: bool | None = None, initial: int = 0) -> None:
        self.n = initial
        self._bar: Any = None
        self._logging = contextlib.ExitStack()
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled:
            try:
                from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
            except ImportError:
                return
            self._bar = tqdm(total=total, desc=desc, unit='tick', initial=initial,
                             dynamic_ncols=True)
            self._logging.enter_context(progress_logging())  # log lines keep the bar whole

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def update(self, n_ticks: int, **postfix: Any) -> None:
        """Advances by `n_ticks`; `postfix` (e.g. acc=0.91) is shown after the rate."""
        self.n += int(n_ticks)
        if self._bar is None:
            return
        if postfix:
            shown = {k: _fmt(to_scalar(v)) for k, v in postfix.items()}
            self._bar.set_postfix(shown, refresh=False)
        self._bar.update(int(n_ticks))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._logging.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

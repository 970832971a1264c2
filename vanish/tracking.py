"""Host-side metric writers (console, JSONL, W&B) behind one `MetricWriter` interface.

    with make_writers(workdir, 'gossip', wandb=False, group='exp1', config=cfg) as writer:
        writer.write_scalars(100, {'acc_mean': 0.91, 'var_ratio/Dense_0/kernel': 0.12})
"""

from __future__ import annotations

import abc
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

METRICS_FILE = 'metrics.jsonl'
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


def _atomic_write_text(path: Path, text: str) -> None:
    # Write-then-rename: a reader (or a crash) never sees a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _merge_json(path: Path, key: str, value: Any) -> None:
    data = json.loads(path.read_text(encoding='utf-8')) if path.exists() else {}
    data[key] = value
    _atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + '\n')


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
        self._emit('config ' + json.dumps(_plain(config), sort_keys=True))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = to_scalars(scalars)
        shown = [f'{k} {_fmt(v)}' for k, v in values.items() if '/' not in k]
        hidden = len(values) - len(shown)
        tail = f' (+{hidden} per-layer)' if hidden else ''
        self._emit(f'tick {int(step)} | ' + ' '.join(shown) + tail)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        plain = _plain(summary)
        self._emit('summary ' + ' '.join(f'{k} {_fmt(v)}' for k, v in plain.items()))

    def write_text(self, key: str, text: str) -> None:
        self._emit(f'{key}: {text}')

    def write_image(self, step: int, key: str, path: PathLike) -> None:
        self._emit(f'tick {int(step)} | image {key} -> {os.fspath(path)}')


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
    if not path.exists():
        return
    with open(path, 'rb+') as f:
        data = f.read()
        if data and not data.endswith(b'\n'):
            logger.warning('%s: dropping a partial last line (interrupted write)', path)
            f.truncate(data.rfind(b'\n') + 1)


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
    _atomic_write_text(path, ''.join(json.dumps(r) + '\n' for r in kept))
    return dropped


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
                 resume_tick: int | None = None) -> MetricWriter:
    """Console + `workdir/metrics.jsonl` (+ one W&B run) writers for one algorithm of a run.

    `resume_tick`: when resuming from a checkpoint, drops this algorithm's rows past it first.
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


class ProgressBar:
    """tqdm bar counting ticks (so it shows ticks/s); a no-op when disabled or tqdm is missing.

    `enabled=None` shows the bar only on a TTY. Call `update` after the eval metrics reached
    the host, so the rate counts finished ticks, not asynchronously dispatched ones.
    """

    def __init__(self, total: int | None, *, desc: str | None = None,
                 enabled: bool | None = None, initial: int = 0) -> None:
        self.n = initial
        self._bar: Any = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled:
            try:
                from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
            except ImportError:
                return
            self._bar = tqdm(total=total, desc=desc, unit='tick', initial=initial,
                             dynamic_ncols=True)

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

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

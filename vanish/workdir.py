"""The workdir contract: what a run's folder holds, and whether a new run may continue in it.

    path = workdir.check(path_text, algorithms)       # only reads; WorkdirError if unusable
    stored = workdir.stored_config(path)               # what run_config.json records
    workdir.store_config(path, record, neutral)        # run_config.json

A workdir holds one experiment: run_config.json records its config (and a hash of the fields
that change results), metrics.jsonl / metrics.csv its rows, summary.json / summary.md, the
figures, and <algorithm>/checkpoints/<tick>/. A rerun with the same result-relevant config
resumes; fields that never change a run's trajectory (`neutral`, from the schema) may change,
and a larger `run.ticks` extends a finished run. Comparing a stored config with a new one is
the builder's (vanish/build.py reads configs, old and new); this module holds the files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from vanish.errors import WorkdirConflictError, WorkdirError

CONFIG_FILE = "run_config.json"
SCHEMA_VERSION = 2  # 1 (no "schema" key): flat field names
# Virtual file systems: nothing a run writes belongs there.
VIRTUAL_FILE_SYSTEMS = ("/proc", "/sys", "/dev")
# The files of a workdir that a run reads back, with what each one holds.
WORKDIR_JSON = {CONFIG_FILE: "the config this workdir was first run with",
                "config.json": "each algorithm's config",
                "summary.json": "each algorithm's summary"}
WORKDIR_JSONL = {"metrics.jsonl": "the metric rows"}
_KEEP = "restore it or move it away, or use a new --workdir; nothing was changed"


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted path: value} of a nested config record."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}} (the inverse of `flatten`)."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *sections, leaf = path.split(".")
        node = out
        for s in sections:
            node = node.setdefault(s, {})
        node[leaf] = value
    return out


def config_hash(flat: Mapping[str, Any], neutral: frozenset[str]) -> str:
    """A digest of the result-relevant fields of {dotted path: value} (`neutral` left out)."""
    items = {k: v for k, v in flat.items() if k not in neutral}
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stored(NamedTuple):
    """A workdir's record of its config."""

    version: int  # 1: flat field names (an earlier vanish), 2: sections
    config: dict[str, Any]  # as stored (flat for version 1, nested for 2)
    hashes: frozenset[str]  # config hashes its checkpoints may carry


def stored_config(path: Path) -> Stored | None:
    """The workdir's run_config.json (None: no run here yet); WorkdirError if unreadable."""
    file = Path(path) / CONFIG_FILE
    if not file.exists():
        return None
    try:
        stored = json.loads(file.read_text(encoding="utf-8"))
        cfg = stored["config"]
        if not isinstance(cfg, dict):
            raise TypeError("config is not an object")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise WorkdirError(
            f"{file} is corrupt or unreadable ({type(e).__name__}: {e}); it records the config "
            f"this workdir was first run with: {_KEEP}") from None
    hashes = {str(stored.get("config_hash")), *map(str, stored.get("accepts", []))}
    return Stored(int(stored.get("schema", 1)), cfg, frozenset(hashes))


def differences(old: Mapping[str, Any], new: Mapping[str, Any],
                neutral: frozenset[str]) -> list[tuple[str, Any, Any]]:
    """The result-relevant fields whose value differs: (path, old, new), in `new`'s order."""
    return [(k, old.get(k), new.get(k)) for k in new
            if k not in neutral and old.get(k) != new.get(k)]


def conflict(path: Path, diff: list[tuple[str, Any, Any]]) -> WorkdirConflictError:
    """The refusal to mix two experiments in one workdir, naming each field old -> new."""
    shown = "; ".join(f"config.{k}: {v0!r} -> {v1!r}" for k, v0, v1 in diff[:8])
    more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
    return WorkdirConflictError(
        f"{path} holds a run of a different config: {shown}{more}. Use a new --workdir, or "
        f"rerun with the stored values ({CONFIG_FILE}); nothing was overwritten.")


def store_config(path: Path, record: Mapping[str, Any], neutral: frozenset[str],
                 write_text: Callable[[Path, str], None] | None = None) -> None:
    """Writes run_config.json for `record` (keeping the hashes an upgraded older record's
    checkpoints carry), with `write_text` (default: Path.write_text)."""
    file = Path(path) / CONFIG_FILE
    digest = config_hash(flatten(record), neutral)
    old = stored_config(path)
    accepts = sorted(old.hashes - {digest}) if old is not None else []
    text = json.dumps(dict(schema=SCHEMA_VERSION, config_hash=digest, accepts=accepts,
                           config=record), indent=1, default=str)
    if write_text is None:
        file.write_text(text)
    else:
        write_text(file, text)


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _check_json(path: Path, what: str, *, lines: bool = False) -> None:
    if not path.is_file():
        raise WorkdirError(f"{path} is not a file; it should hold {what}: {_KEEP}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise WorkdirError(f"{path} cannot be read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise WorkdirError(f"{path} is corrupt (not UTF-8 text); it holds {what}: "
                           f"{_KEEP}") from None
    rows = text.split("\n") if lines else [text]
    for i, row in enumerate(rows):
        if lines and not row.strip():
            continue
        try:
            value = json.loads(row)
        except json.JSONDecodeError as e:
            if lines and i == len(rows) - 1:
                continue  # an unterminated last line: an interrupted write, repaired on resume
            at = f"line {i + 1}" if lines else f"line {e.lineno}, column {e.colno}"
            raise WorkdirError(f"{path} is corrupt ({e.msg} at {at}); it holds {what}: "
                               f"{_KEEP}") from None
        if not isinstance(value, dict):
            at = f" at line {i + 1}" if lines else ""
            raise WorkdirError(f"{path} is corrupt (a JSON {type(value).__name__}{at} where an "
                               f"object is expected); it holds {what}: {_KEEP}")
    if not os.access(path, os.W_OK):
        raise WorkdirError(f"{path} is not writable")


def check(workdir: str | os.PathLike[str] | None, algorithms: Iterable[str] = ()) -> Path:
    """Refuses a workdir that cannot hold this run, before anything is written; returns it.

    Refused: unset; under /proc, /sys or /dev; a file (or below one); a path too long for
    the file system; not writable (read-only file system, no permission); holding a run file
    (run_config.json, config.json, summary.json) that is corrupt or unreadable;
    `<algorithm>` or `<algorithm>/checkpoints` that is not a directory. Only reads.
    """
    text = "" if workdir is None else os.fspath(workdir)
    if not text.strip():
        raise WorkdirError("--workdir is empty; name a directory for the run's metrics, plots "
                           "and checkpoints")
    path = Path(text).expanduser()
    longest = max(len(part.encode()) for part in path.parts)
    if longest > 255 or len(os.fsencode(path.absolute())) > 4000:
        raise WorkdirError(f"workdir {text[:60]}... is too long a path for the file system (a "
                           "name of at most 255 bytes); choose a shorter --workdir")
    real = os.path.realpath(path)
    for root in VIRTUAL_FILE_SYSTEMS:
        if real == root or real.startswith(root + os.sep):
            raise WorkdirError(f"workdir {text} is under {root}, a virtual file system; choose a "
                               "directory on disk")
    if path.is_symlink() and not path.exists():
        raise WorkdirError(f"workdir {text} is a broken symbolic link (to {os.readlink(path)})")
    if path.exists() and not path.is_dir():
        raise WorkdirError(f"workdir {text} is a file, not a directory; choose another --workdir")
    existing = path.absolute()
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    if not existing.is_dir():
        raise WorkdirError(f"workdir {text} cannot be created: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = ("on a read-only file system" if _read_only_fs(existing)
               else "not writable by this user")
        raise WorkdirError(f"workdir {text} cannot be written: {existing} is {why}")
    if path.is_dir():
        for name, what in {**WORKDIR_JSON, **WORKDIR_JSONL}.items():
            if (path / name).exists() or (path / name).is_symlink():
                _check_json(path / name, what, lines=name in WORKDIR_JSONL)
        for algorithm in algorithms:
            for sub in (path / algorithm, path / algorithm / "checkpoints"):
                if sub.exists() and not sub.is_dir():
                    raise WorkdirError(f"{sub} is not a directory (it should hold {algorithm}'s "
                                       f"checkpoints): {_KEEP}")
    return path

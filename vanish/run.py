"""The command line: flags -> config -> build -> train (a thin absl entry point).

    python -m vanish.run --config experiments/default/config.py --workdir runs/default \
        [--config.<section>.<field>=<value> ...]
    python -m vanish.run --list        # algorithms, topologies, models, ..., every config field

Bad input ends the process with one line on stderr, `vanish: error: <the problem, naming the
field, file or value>`, and exit status 1, without a traceback (VANISH_DEBUG=1 re-raises),
before anything is written: the flags and the config file here, everything else in
`build.experiment` and the workdir checks of `train.train_and_evaluate`. Any other exception
is a bug and keeps its traceback.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import sys
import traceback
import types
from pathlib import Path
from typing import Any, NoReturn

import ml_collections

from vanish import checks, compat, errors

_CONFIG_FLAG = re.compile(r"^--?config(=|$)")
_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]*)")
_BAD_VALUE = re.compile(r"flag --config\.([\w.]+)=(.*?): ", re.S)
_MISSING = re.compile(r"Flag --(\w+) must have a value other than None")
_HINTS = {"config": "an experiment config file, e.g. --config=experiments/default/config.py",
          "workdir": "the directory for the run's metrics, plots and checkpoints"}
USAGE = """usage: python -m vanish.run --config FILE --workdir DIR [--config.S.F=VALUE ...]
       python -m vanish.run --list

Runs the config's algorithms side by side on the same data and seeds; writes metrics.jsonl,
metrics.csv, summary.md / summary.json, accuracy.png, variance.png and checkpoints into DIR.
Rerunning the same command resumes; a larger --config.run.ticks extends a finished run.

  --config FILE    an experiment config (a Python file with get_config()), e.g.
                   experiments/default/config.py; FILE:ARG passes ARG to get_config
  --workdir DIR    where the run's files go
  --config.S.F=V   override one field, e.g. --config.topology.num_nodes=32
  --flagfile=F     read more flags from F, one per line
  --list           list every algorithm, topology, model, partition, dataset and config field
"""


def one_line(text: Any) -> str:
    """`text` as one line: lines joined, nothing from an embedded traceback."""
    text = str(text).split("Traceback (most recent call last)")[0]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def fail(message: Any) -> NoReturn:
    """Exits with `vanish: error: <message>` on one line on stderr (exit status 1)."""
    sys.exit(f"vanish: error: {one_line(message)}")


def quiet_libraries() -> None:
    """Keep the console to vanish's own lines: orbax logs every file it renames (and notes
    on every resume) through absl's logger; JAX notes a missing TPU backend."""
    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's read-only notes on resume
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    # Its notes on joining a multi-process run (vanish says which process joins where).
    logging.getLogger("jax._src.distributed").setLevel(logging.WARNING)


def console_logging() -> None:
    """vanish's lines on stderr as 'HH:MM:SS message' (absl's app installs its own format)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


# ---------------------------------------------------------------------------- config files


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _line_in(e: BaseException, path: Path) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
    return f", line {frames[-1].lineno}" if frames else ""


_OVERRIDE_FIELD = re.compile(r"Could not override field '(\w+)'")


def _moved(e: BaseException) -> str:
    """A hint when a config file sets a field by its name of an earlier version."""

    match = _OVERRIDE_FIELD.search(str(e))
    if match and compat.moved_hint(match.group(1)):
        return (f" (config.{match.group(1)} is a section now{compat.moved_hint(match.group(1))};"
                " python -m vanish.run --list shows every field)")
    return ""


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Runs a config file's get_config(), as --config does, naming the file in every error.

    `spec` is `path` or `path:argument` (the argument goes to get_config, as with
    ml_collections' config_flags). Raises ConfigError: missing, a directory, not UTF-8 text,
    a syntax error, an exception inside the file (with its line), no get_config(), or a
    result that is not a ConfigDict.
    """
    path_text, sep, arg = str(spec).partition(":")
    if not path_text.strip():
        raise errors.ConfigError("--config is empty; name an experiment config file, e.g. "
                                 "--config=experiments/default/config.py")
    path = Path(path_text).expanduser()
    where = f"config file {path_text}"
    if not path.exists():
        raise errors.ConfigError(f"{where} does not exist")
    if path.is_dir():
        raise errors.ConfigError(f"{where} is a directory; name the config.py inside it")
    try:
        source = path.read_bytes().decode("utf-8")
        code = compile(source, str(path), "exec")
    except OSError as e:
        raise errors.ConfigError(f"{where} cannot be read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise errors.ConfigError(f"{where} is not UTF-8 text (expected a Python file defining "
                                 "get_config())") from None
    except SyntaxError as e:
        raise errors.ConfigError(f"{where}, line {e.lineno}: {e.msg} (expected a Python file "
                                 "defining get_config())") from None
    except ValueError as e:  # e.g. NUL bytes
        raise errors.ConfigError(f"{where}: {e}") from None
    module = types.ModuleType("vanish_config_file")
    module.__file__ = str(path)
    try:
        exec(code, module.__dict__)  # noqa: S102  (a config file is a program, as with --config)
        get_config = module.__dict__.get("get_config")
        if not callable(get_config):
            raise errors.ConfigError(f"{where} defines no get_config() function")
        cfg = get_config(*([arg] if sep else []))
    except errors.ConfigError as e:
        raise errors.ConfigError(str(e) if str(e).startswith(where) else f"{where}: {e}"
                                 ) from None
    except Exception as e:  # noqa: BLE001  whatever the file raises, name the file and line
        raise errors.ConfigError(f"{where}{_line_in(e, path)}: {type(e).__name__}: "
                                 f"{_first_line(e)}{_moved(e)}") from None
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise errors.ConfigError(f"{where}: get_config() returned {type(cfg).__name__}, not an "
                                 "ml_collections.ConfigDict (start from "
                                 "vanish.config.default_config())")
    return cfg


# ----------------------------------------------------------------------------------- flags


def _config_spec(argv: list[str]) -> str | None:
    """The value given to --config, or None."""
    for i, arg in enumerate(argv):
        match = _CONFIG_FLAG.match(arg)
        if match:
            if match.group(1) == "=":
                return arg.split("=", 1)[1]
            return argv[i + 1] if i + 1 < len(argv) else None
    return None


def check_overrides(argv: list[str], cfg: ml_collections.ConfigDict) -> None:
    """Every --config.<path> names a field of `cfg` (ml_collections raises a bare KeyError);
    a field name of an earlier version is refused with its new spelling."""
    from vanish import build

    for arg in argv:
        match = _OVERRIDE.match(arg)
        if not match:
            continue
        node, parts = cfg, match.group(1).split(".")
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth])
            if not isinstance(node, ml_collections.ConfigDict):
                raise errors.ConfigError(f"{arg}: config.{where} is a value, not a section of "
                                         "fields")
            if part not in node:
                path = ".".join(parts[:depth + 1])
                hint = (compat.moved_hint(path) or checks.did_you_mean(part, list(node.keys()))
                        or build.suggest(path))
                raise errors.ConfigError(
                    f"unknown config field {path!r} in {arg}{hint} (python -m vanish.run --list "
                    "shows every field)")
            node = node[part]
        if isinstance(node, ml_collections.ConfigDict):
            raise errors.ConfigError(f"{arg}: config.{match.group(1)} is a section; set one of "
                                     f"its fields: {', '.join(node.keys())}")


def _flag_error(error: Exception, cfg: ml_collections.ConfigDict | None) -> str:
    from absl import flags

    text = str(error)
    bad = _BAD_VALUE.match(text)
    if bad:
        field, value = bad.groups()
        node: Any = cfg
        for part in field.split("."):
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        kind = {bool: "True or False", int: "an integer", float: "a number"}.get(
            type(node), "another value")
        return f"--config.{field}={value}: config.{field} takes {kind}, not {value!r}"
    if isinstance(error, flags.CantOpenFlagFileError):
        return f"--flagfile: {one_line(text).replace('ERROR:: ', '')}"
    missing = _MISSING.search(text)
    if missing:
        name = missing.group(1)
        return f"missing --{name} ({_HINTS.get(name, 'a required flag')})"
    return one_line(text)


def flag_values(argv: list[str], fv: Any = None) -> Any:
    """The command line's flags (--config, --workdir) defined on `fv` (default: a fresh
    set, so that `command` can run the CLI in-process more than once) for `argv` (the
    config file's override flags are defined from it)."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues() if fv is None else fv
    config_flags.DEFINE_config_file("config", None, "experiment config file", flag_values=fv,
                                    lock_config=True, sys_argv=_without_flagfiles(argv))
    flags.DEFINE_string("workdir", None, "directory for metrics, plots and checkpoints",
                        flag_values=fv)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=fv)
    return fv


def _without_flagfiles(argv: list[str]) -> list[str]:
    """argv with its --flagfile files read (an unreadable one is left for parse_flags to
    refuse in one line)."""
    from absl import flags

    try:
        return list(flags.FlagValues().read_flags_from_files(argv, force_gnu=False))
    except flags.Error:
        return [a for a in argv if not a.lstrip("-").startswith("flagfile")]


def parse_flags(argv: list[str], fv: Any) -> list[str]:
    """absl's flag parsing into `fv`, with every failure as one line naming the flag, field
    or file; --help prints the usage and --list the catalogue (both exit 0)."""
    from absl import flags

    cfg = None
    try:
        argv = fv.read_flags_from_files(argv, force_gnu=False)  # --flagfile=...
        if any(a in ("--help", "-h", "--helpfull", "-help") for a in argv[1:]):
            print(USAGE)
            sys.exit(0)
        if any(a in ("--list", "-list") for a in argv[1:]):
            from vanish import build

            print(build.listing())
            sys.exit(0)
        spec = _config_spec(argv[1:])
        if spec is not None:
            cfg = load_config_file(spec)  # names the file (and line) on any error
            check_overrides(argv[1:], cfg)
        return list(fv(argv))
    except (AttributeError, KeyError) as e:  # ml_collections' answer to an unknown field
        if os.environ.get("VANISH_DEBUG"):
            raise
        fail(f"unknown config field {e} in the --config.<field> flags (python -m vanish.run "
             "--list shows every field)")
    except flags.Error as e:
        if os.environ.get("VANISH_DEBUG"):
            raise
        fail(_flag_error(e, cfg))
    except errors.ConfigError as e:
        if os.environ.get("VANISH_DEBUG"):
            raise
        fail(e)


def _typed(value: Any, default: Any, path: str) -> Any:
    """`value` (a string from a command line, or a typed value) as the type of `default`."""
    if not isinstance(value, str) or isinstance(default, str):
        return float(value) if isinstance(default, float) and isinstance(value, int) else value
    text = value.strip()
    try:
        if isinstance(default, bool):
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        return type(default)(text)
    except ValueError:
        kind = {bool: "True or False", int: "an integer", float: "a number"}[type(default)]
        raise errors.ConfigError(f"--config.{path}={value}: config.{path} takes {kind}, not "
                                 f"{value!r}") from None


def apply_overrides(cfg: ml_collections.ConfigDict,
                    values: dict[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `cfg` with {dotted path: value} set (strings read as the field's type, as
    --config.<path>=<value> does); an unknown path is refused with its new spelling or the
    closest field. Fields computed from others (references) follow the new values."""
    from vanish import build

    out = copy.deepcopy(cfg)  # keeps references: fields computed from a swept one follow it
    for path, value in values.items():
        node, parts = out, path.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                hint = compat.moved_hint(path) or build.suggest(path)
                raise errors.ConfigError(f"unknown config field {path!r}{hint}")
            if depth < len(parts) - 1:
                node = node[part]
        if isinstance(node[parts[-1]], ml_collections.ConfigDict):
            raise errors.ConfigError(f"config.{path} is a section, not a field")
        node[parts[-1]] = _typed(value, node[parts[-1]], path)
    return out


def run_config(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike[str], *,
               progress: bool | None = None) -> dict[str, dict[str, Any]]:
    """Checks `cfg` and runs it in `workdir` (resuming what is there): the one public run
    function behind the command line, the sweep runner and the scripts.

    Args:
      cfg: a config of vanish/config.py's schema.
      workdir: the run's folder (created; an existing one resumes or is refused).
      progress: show a progress bar (None: when stderr is a terminal).
    Returns:
      {algorithm: summary}.
    Raises:
      A user error of vanish.errors (one line each) before anything is written.
    """
    from vanish import build, train

    return train.train_and_evaluate(build.experiment(cfg), workdir, progress=progress)


def describe(error: BaseException, workdir: Any) -> str:
    """A user error's one-line message: for an environment OSError (disk full, no
    permission: errors.ENVIRONMENT_ERRNOS) its cause, file and how to resume; else str(error)."""
    if isinstance(error, OSError) and error.errno in errors.ENVIRONMENT_ERRNOS and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return (f"{error.strerror}{where} (workdir {workdir}); nothing before the last "
                "checkpoint is lost: fix this and rerun the same command to resume")
    return str(error)


def main(argv: list[str], fv: Any) -> None:
    """Runs the parsed command line: build, train, print the summary table."""
    if len(argv) > 1:
        fail(f"unexpected argument(s) {' '.join(argv[1:])!r}; config fields are set as "
             "--config.<section>.<field>=<value>")
    console_logging()
    quiet_libraries()
    try:
        from vanish import results

        summaries = run_config(fv.config, fv.workdir)  # checked first; then it runs
    except Exception as e:  # noqa: BLE001  bad input -> one line; anything else re-raised
        if os.environ.get("VANISH_DEBUG") or not errors.is_user_error(e):
            raise
        fail(describe(e, fv.workdir))
    print(results.summary_table(summaries))


def command(argv: list[str]) -> int:
    """The command line in this process (no re-exec, no absl app): `argv` as sys.argv
    (argv[0] the program); returns the exit status. For tests and notebooks."""
    fv = flag_values(argv)
    try:
        main(parse_flags(argv, fv), fv)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 1
        return int(e.code or 0)
    return 0


def cli() -> None:
    """The `vanish` console script (pyproject.toml): the same as `python -m vanish.run`."""
    from vanish import runtime

    runtime.reexec_with_tcmalloc(["-m", "vanish.run"])  # XLA:CPU speed; see vanish/runtime.py
    from absl import app, flags

    fv = flag_values(sys.argv, flags.FLAGS)  # app.run wants absl's global flags parsed
    app.run(lambda argv: main(argv, fv), flags_parser=lambda argv: parse_flags(argv, fv))


if __name__ == "__main__":
    cli()

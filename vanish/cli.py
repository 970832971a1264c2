"""The command line front end of `python -m vanish.run` (see vanish/run.py).

    python -m vanish.run --config experiments/default/config.py --workdir runs/default \
        [--config.<field>=<value> ...]

Bad input ends the process with one line on stderr, `vanish: error: <the problem, naming the
field, file or value>`, and exit status 1, without a traceback (VANISH_DEBUG=1 re-raises).
Everything that needs nothing heavy is checked here, before jax and the engine are imported:
the flags, the config file, every config field (`config.validate`) and the workdir
(`config.check_workdir`). vanish/run.py then checks what needs the graph, the data or the
checkpoints, still before it writes anything. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
from typing import Any, NoReturn

import ml_collections

from vanish import config as config_lib

# OS errors that mean a file cannot be written or read here: the user's to fix (space, a
# read-only mount, permissions), reported as one line like any other bad input.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                errno.EPERM})

_CONFIG_FLAG = re.compile(r"^--?config(=|$)")
_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]*)")
_BAD_VALUE = re.compile(r"flag --config\.([\w.]+)=(.*?): ", re.S)
_MISSING = re.compile(r"Flag --(\w+) must have a value other than None")
_HINTS = {"config": "an experiment config file, e.g. --config=experiments/default/config.py",
          "workdir": "the directory for the run's metrics, plots and checkpoints"}


def one_line(text: Any) -> str:
    """`text` as one line: lines joined, nothing from an embedded traceback."""
    text = str(text).split("Traceback (most recent call last)")[0]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def fail(message: Any) -> NoReturn:
    sys.exit(f"vanish: error: {one_line(message)}")


def quiet_libraries() -> None:
    """Orbax logs every file it renames at INFO through absl's logger; keep the console
    readable without lowering the verbosity of vanish's own INFO lines."""
    logging.getLogger("absl").setLevel(logging.WARNING)


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
    """Every --config.<field> names a field of `cfg` (ml_collections raises a bare KeyError)."""
    for arg in argv:
        match = _OVERRIDE.match(arg)
        if not match:
            continue
        node, parts = cfg, match.group(1).split(".")
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth])
            if not isinstance(node, ml_collections.ConfigDict):
                raise config_lib.ConfigError(f"{arg}: config.{where} is a value, not a group of "
                                             "fields")
            if part not in node:
                hint = config_lib.did_you_mean(part, list(node.keys()))
                raise config_lib.ConfigError(
                    f"unknown config field {'.'.join(parts[:depth + 1])!r} in {arg}{hint}; the "
                    "fields and their defaults are in vanish/config.py")
            node = node[part]


def _flag_error(error: Exception, cfg: ml_collections.ConfigDict | None) -> str:
    text = str(error)
    bad = _BAD_VALUE.match(text)
    if bad:
        field, value = bad.groups()
        default = cfg.get(field.split(".")[0]) if cfg is not None else None
        kind = {bool: "True or False", int: "an integer", float: "a number"}.get(
            type(default), "another value")
        return f"--config.{field}={value}: config.{field} takes {kind}, not {value!r}"
    missing = _MISSING.search(text)
    if missing:
        name = missing.group(1)
        return f"missing --{name} ({_HINTS.get(name, 'a required flag')})"
    return one_line(text)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every failure as one line naming the flag, field or file."""
    from absl import flags

    FLAGS = flags.FLAGS
    cfg = None
    try:
        argv = FLAGS.read_flags_from_files(argv, force_gnu=False)  # --flagfile=...
        spec = _config_spec(argv[1:])
        if spec is not None:
            cfg = config_lib.load_config_file(spec)  # names the file (and line) on any error
            check_overrides(argv[1:], cfg)
        return FLAGS(argv)
    except (AttributeError, KeyError) as e:  # ml_collections' answer to an unknown field
        if os.environ.get("VANISH_DEBUG"):
            raise
        fail(f"unknown config field {e} in the --config.<field> flags; the fields and their "
             "defaults are in vanish/config.py")
    except flags.Error as e:
        if os.environ.get("VANISH_DEBUG"):
            raise
        fail(_flag_error(e, cfg))
    except config_lib.ConfigError as e:
        if os.environ.get("VANISH_DEBUG"):
            raise
        fail(e)


def is_user_error(error: BaseException) -> bool:
    """Bad input (config, files, data, environment), as opposed to a bug in vanish."""
    run = sys.modules.get("vanish.run")  # its error types, once the engine was imported
    if isinstance(error, config_lib.ConfigError):
        return True
    if run is not None and isinstance(error, run.USER_ERRORS):
        return True
    return isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS


def describe(error: BaseException, workdir: Any) -> str:
    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where} (workdir {workdir}); nothing before the last checkpoint " \
               "is lost: fix this and rerun the same command to resume"
    return str(error)


def main(argv: list[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        fail(f"unexpected argument(s) {' '.join(argv[1:])!r}; config fields are set as "
             "--config.<field>=<value>")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    quiet_libraries()
    cfg = FLAGS.config
    try:
        config_lib.validate(cfg)  # every field, before jax is imported
        algorithms = config_lib.parse_algorithms(cfg.algorithms)
        workdir = config_lib.check_workdir(FLAGS.workdir, algorithms)
        from vanish import plots, run  # jax and the engine: only for input that passed

        summaries = run.train_and_evaluate(cfg, workdir)
    except Exception as e:  # noqa: BLE001  bad input -> one line; anything else re-raised
        if os.environ.get("VANISH_DEBUG") or not is_user_error(e):
            raise
        fail(describe(e, FLAGS.workdir))
    print(plots.summary_table(summaries))


def cli() -> None:
    from vanish import runtime

    runtime.reexec_with_tcmalloc(["-m", "vanish.run"])  # XLA:CPU speed; see vanish/runtime.py
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
    flags.DEFINE_string("workdir", None, "directory for metrics, plots and checkpoints")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=parse_flags)

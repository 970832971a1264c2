"""Every error vanish raises on purpose, on the ground floor (imports nothing of vanish).

    from vanish.errors import ConfigError
    raise ConfigError("config.topology_args.random_regular.degree = 0 must be >= 1")

A user error is bad input or a bad environment (a config value, a file the config names, the
workdir, the data, the machine's memory): the command line prints it as one line
(`vanish: error: ...`, exit status 1) and nothing was lost. `USER_ERRORS` is that tuple; any
other exception is a bug in vanish and keeps its traceback.
"""

from __future__ import annotations

import errno


class ConfigError(ValueError):
    """A config value, file or combination that vanish refuses (reported as one line)."""


class TopologyError(ConfigError):
    """A graph vanish refuses: empty, disconnected, self-loops, out-of-range node ids."""


class PartitionError(ConfigError):
    """A partition of the training data that cannot be made (too few examples, labels)."""


class DatasetError(ConfigError):
    """A dataset name, folder or file that cannot be read as the data it should hold."""


class DatasetUnavailableError(RuntimeError):
    """A named dataset that is neither prepared nor downloadable here."""


class ResourceError(ConfigError):
    """A run that cannot fit the machine (memory, the work list), refused with the numbers."""


class WorkdirError(ConfigError):
    """A workdir that cannot hold a run, or that holds run files vanish cannot read back."""


class WorkdirConflictError(RuntimeError):
    """The workdir holds a run of a different config; nothing was touched."""


class WorkdirLockedError(RuntimeError):
    """Another live process runs in this workdir (its holder is named); nothing was touched."""


class MetricsLogError(RuntimeError):
    """The workdir's metrics log disagrees with its checkpoints in a way that cannot be
    repaired; the message names the file and what to do."""


class CheckpointMismatchError(ValueError):
    """A checkpoint whose arrays do not match the run's state (another model or config)."""


class CheckpointDamagedError(RuntimeError):
    """No checkpoint of an algorithm reads back, and starting over would lose metrics."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions); earlier ones are kept."""


class DistributedError(RuntimeError):
    """A multi-process run that cannot join (bad coordinator, process count or id)."""


class ResultsError(ValueError):
    """Workdirs that cannot be tabulated (none found, unreadable, mixed configs in a group)
    or a results file without its section markers (vanish.results)."""


# OS errors that mean a file cannot be written or read here: the user's to fix (space, a
# read-only mount, permissions, a name too long), reported as one line like bad input.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                errno.EPERM, errno.ENAMETOOLONG})

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, DatasetUnavailableError, WorkdirConflictError, WorkdirLockedError,
    MetricsLogError, CheckpointMismatchError, CheckpointDamagedError, CheckpointWriteError,
    DistributedError, ResultsError)


def is_user_error(error: BaseException) -> bool:
    """Bad input or a bad environment, as opposed to a bug in vanish."""
    if isinstance(error, USER_ERRORS):
        return True
    return isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS

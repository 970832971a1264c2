"""Bad input through the real command line: one line naming the problem, nothing lost.

Every case of `CASES` runs the command line (a tiny synthetic config: 4 nodes on a ring, MLP,
4 ticks) and must end with exit status 1, exactly one `vanish: error: ...` line matching the
case's pattern (the field, file or value), no traceback, and its workdir as it was: not
created when it did not exist, byte for byte the same (a hash of the tree) when it did. The
cases run in this process through `run.command` (the same parsing, building and checks as
`python -m vanish.run`, without a process start and JAX import each); the cases of
`SUBPROCESS` also run the real `python -m vanish.run`. One finished run (the workdir the
'run' cases copy) is made first.

Beside the table: the config registries match the engine's, every config field has a rule,
damaged checkpoints fall back to the newest intact one, and a full disk or a read-only
workdir is one line with the previous checkpoint intact (in-process fault injection, plus a
real tmpfs / read-only bind mount when this process may mount).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from vanish import checkpoint, config, lock

ALPHA = "partition_args.dirichlet_weights.alpha"
SUBSETS = "partition_args.label_subsets.subsets"

ROOT = Path(__file__).resolve().parents[1]
TINY = '''
from vanish import config


def get_config():
    c = config.default_config()
    c.algorithms = "gossip"
    c.data.name = "synthetic"
    c.dataset_args.synthetic.num_train = 200
    c.dataset_args.synthetic.num_test = 100
    c.data.test_per_class = 5
    c.model.name, c.optim.batch_size, c.optim.lr = "mlp", 8, 0.05
    c.topology.num_nodes, c.topology.name, c.topology_args.random_regular.degree = 4, "ring", 2
    c.run.ticks, c.run.eval_every, c.run.keep_checkpoints = 4, 2, 2
    c.schedule.interval_lo, c.schedule.interval_hi = 1, 2
    return c
'''
CONFIG_FILES = {
    "syntax.py": "def get_config(:\n",
    "typeerror.py": ("from vanish import config\n\ndef get_config():\n"
                     "    c = config.default_config()\n    c.optim.lr = 'fast'\n    return c\n"),
    "no_get_config.py": "x = 1\n",
    "not_a_configdict.py": "def get_config():\n    return 3\n",
    "import_error.py": "import vanish_no_such_module\n",
    "raises.py": ("from vanish import config\n\ndef get_config():\n"
                  "    c = config.default_config()\n    raise RuntimeError('boom')\n"),
    "extra_field.py": ("from vanish import config\n\ndef get_config():\n"
                       "    c = config.default_config()\n    c.colour = 'red'\n    return c\n"),
    "few_fields.py": ("import ml_collections\n\ndef get_config():\n"
                      "    return ml_collections.ConfigDict(dict(seed=0))\n"),
    "bad_value.py": TINY.replace("return c", "c.schedule.beta = 3.0\n    return c"),
}
EDGE_LISTS = {"malformed.txt": "0 1\nx y\n", "self_loop.txt": "0 1\n1 2\n2 2\n",
              "out_of_range.txt": "0 1\n1 7\n", "disconnected.txt": "0 1\n2 3\n",
              "empty.txt": "# no edges\n", "duplicate.txt": "0 1\n1 2\n2 3\n3 0\n1 2\n"}


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    flags: tuple[str, ...]  # after --config / --workdir; {inputs} is the folder of input files
    expect: str  # regex the one 'vanish: error:' line must match
    workdir: str = "new"  # new (must stay absent) | empty | run (a finished run) | a SETUPS key
    config: str | None = "tiny.py"  # in {inputs}; None: no --config flag
    workdir_flag: str | None = "{workdir}"  # None: no --workdir flag


def bad(id: str, *flags: str, expect: str, **kw) -> Case:
    return Case(id, flags, expect, **kw)


def field(name: str, value: str, expect: str, **kw) -> Case:
    return Case(f"{name}={value.replace('{inputs}/', '')}", (f"--config.{name}={value}",), expect,
                **kw)


CASES = [
    # ---------------------------------------------------------------- flags
    bad("unknown_field", "--config.lrr=0.1",
        expect=r"unknown config field 'lrr' in --config\.lrr=0\.1 \(did you mean 'optim\.lr'\?\)"),
    bad("unknown_field_noprefix", "--noconfig.wandbb", expect=r"unknown config field 'wandbb'"),
    bad("nested_field", "--config.optim.lr.x=1", expect=r"config\.optim\.lr is a value, not a "
        r"section"),
    bad("old_flat_name", "--config.num_nodes=8",
        expect=r"unknown config field 'num_nodes' in --config\.num_nodes=8: it is now "
               r"config\.topology\.num_nodes"),
    bad("old_shared_name", "--config.fl_round_ticks=5",
        expect=r"it is now config\.algorithm_args\.fl\.round_ticks and "
               r"config\.algorithm_args\.fl_sched\.round_ticks"),
    bad("a_whole_section", "--config.model=mlp", expect=r"config\.model is a section; set one "
        r"of its fields: .*name"),
    bad("missing_flagfile", "--flagfile={inputs}/no_flags.txt",
        expect=r"--flagfile: Unable to open flagfile: .*no_flags\.txt"),
    bad("unknown_flag", "--wrkdir=/tmp/x", expect=r"Unknown command line flag 'wrkdir'"),
    bad("lr_not_a_number", "--config.optim.lr=abc",
        expect=r"--config\.optim\.lr=abc: config\.optim\.lr takes a number, not 'abc'"),
    bad("num_nodes_not_an_integer", "--config.topology.num_nodes=1.5",
        expect=r"config\.topology\.num_nodes takes an integer, not '1\.5'"),
    bad("ticks_empty", "--config.run.ticks=",
            expect=r"config\.run\.ticks takes an integer, not ''"),
    bad("seed_word", "--config.seed=zero", expect=r"config\.seed takes an integer, not 'zero'"),
    bad("wandb_not_a_bool", "--config.run.wandb=maybe",
        expect=r"config\.run\.wandb takes True or False, not 'maybe'"),
    bad("missing_value", "--config.optim.lr", expect=r"Missing value for flag --config\.optim\.lr"),
    bad("override_before_config", "--config.optim.lr=0.1", "--config={inputs}/tiny.py",
        expect=r"Found --config\.optim\.lr=0\.1 in argv before a value for --config", config=None),
    bad("missing_config", expect=r"missing --config", config=None),
    bad("missing_workdir", expect=r"missing --workdir", workdir_flag=None),
    bad("positional_argument", "stray", expect=r"unexpected argument\(s\) 'stray'"),
    # ---------------------------------------------------------------- config files
    bad("config_missing", expect=r"config file \S*nope\.py does not exist", config="nope.py"),
    bad("config_is_a_directory", expect=r"config file \S+ is a directory", config="data_empty"),
    bad("config_empty_flag", expect=r"--config is empty", config=""),
    bad("config_syntax_error", expect=r"config file \S*syntax\.py, line 1: invalid syntax",
        config="syntax.py"),
    bad("config_type_error", expect=r"typeerror\.py, line 5: TypeError: .*'lr'",
        config="typeerror.py"),
    bad("config_without_get_config", expect=r"no_get_config\.py defines no get_config",
        config="no_get_config.py"),
    bad("config_returns_int", expect=r"get_config\(\) returned int",
        config="not_a_configdict.py"),
    bad("config_import_error", expect=r"import_error\.py, line 1: .*vanish_no_such_module",
        config="import_error.py"),
    bad("config_raises", expect=r"raises\.py, line 5: RuntimeError: boom", config="raises.py"),
    bad("config_binary", expect=r"binary\.py is not UTF-8 text", config="binary.py"),
    bad("config_extra_field", expect=r"unknown config field 'colour'", config="extra_field.py"),
    bad("config_few_fields", expect=r"lacks field\(s\) algorithms", config="few_fields.py"),
    bad("config_argument_unused", expect=r"TypeError: get_config\(\) takes 0",
        config="tiny.py:extra"),
    bad("config_file_bad_value", expect=r"config\.schedule\.beta = 3\.0 must be in \[0, 1\]",
        config="bad_value.py"),
    # ---------------------------------------------------------------- values
    field("schedule.beta", "1.5", r"config\.schedule\.beta = 1\.5 must be in \[0, 1\]",
            workdir="run"),
    field("schedule.beta", "-0.1", r"config\.schedule\.beta = -0\.1 must be in \[0, 1\]"),
    field("schedule.beta", "nan", r"config\.schedule\.beta = nan must be in \[0, 1\]"),
    field("optim.lr", "-0.01", r"config\.optim\.lr = -0\.01 must be a finite number >= 0",
            workdir="run"),
    field("optim.lr", "inf", r"config\.optim\.lr = inf must be a finite number"),
    field("optim.momentum", "1.0", r"config\.optim\.momentum = 1\.0 must be in \[0, 1\)"),
    field("optim.weight_decay", "-1",
            r"config\.optim\.weight_decay = -1\.0 must be a finite number >= 0"),
    field("algorithm_args.fl.client_fraction", "0",
            r"config\.algorithm_args\.fl\.client_fraction = 0\.0 must be in \(0, 1\]"),
    field("algorithm_args.fl.client_fraction", "1.5",
            r"config\.algorithm_args\.fl\.client_fraction = 1\.5 must be in \(0, 1\]"),
    field("algorithm_args.gossip_part.num_partitions", "0",
            r"config\.algorithm_args\.gossip_part\.num_partitions = 0 must be >= 1"),
    field("algorithm_args.gossip_part.subsample", "1.5",
            r"config\.algorithm_args\.gossip_part\.subsample = 1\.5 must be in \[0, 1\]"),
    field("algorithm_args.gossip_part.subsample", "-0.5",
            r"config\.algorithm_args\.gossip_part\.subsample = -0\.5 must be in \[0, 1\]"),
    field("run.eval_every", "0", r"config\.run\.eval_every = 0 must be >= 1", workdir="empty"),
    field("run.checkpoint_every", "-2", r"config\.run\.checkpoint_every = -2 must be >= 0"),
    field("run.checkpoint_every", "3",
            r"checkpoint_every = 3 is not a multiple of config\.run\.eval_every"),
    field("run.keep_checkpoints", "0", r"config\.run\.keep_checkpoints = 0 must be >= 1"),
    field("optim.batch_size", "0", r"config\.optim\.batch_size = 0 must be >= 1"),
    field("topology.num_nodes", "0", r"config\.topology\.num_nodes = 0 must be >= 1"),
    field("topology.num_nodes", "1", r"config\.topology\.num_nodes = 1: .*at least 2 nodes",
            workdir="run"),
    field("topology.num_nodes", "-3", r"config\.topology\.num_nodes = -3"),
    field("run.ticks", "-1", r"config\.run\.ticks = -1 must be >= 0"),
    field("schedule.interval_lo", "0", r"config\.schedule\.interval_lo = 0 must be >= 1"),
    bad("interval_lo_above_hi", "--config.schedule.interval_lo=12",
            "--config.schedule.interval_hi=8",
        expect=r"config\.schedule\.interval_hi = 8 is below config\.schedule\.interval_lo = 12"),
    field("schedule.first_tick", "soon",
            r"config\.schedule\.first_tick = 'soon' must be a non-negative integer"),
    field("schedule.send_every", "0", r"config\.schedule\.send_every = 0 must be >= 1"),
    field("schedule.threshold", "-1", r"config\.schedule\.threshold = -1 must be >= 0"),
    field("topology_args.random_regular.degree", "0",
          r"config\.topology_args\.random_regular\.degree = 0 must be >= 1"),
    field("topology_args.erdos_renyi.p", "0",
          r"config\.topology_args\.erdos_renyi\.p = 0\.0 must be in \(0, 1\]"),
    field("topology_args.watts_strogatz.p", "2",
          r"config\.topology_args\.watts_strogatz\.p = 2\.0 must be in \[0, 1\]"),
    field("topology_args.barabasi_albert.m", "0",
          r"config\.topology_args\.barabasi_albert\.m = 0 must be >= 1"),
    field(ALPHA, "0", r"config\.partition_args\.dirichlet_weights\.alpha = 0\.0 must be a finite "
          r"number > 0"),
    field("partition_args.shards.shards_per_node", "0",
          r"config\.partition_args\.shards\.shards_per_node = 0 must be >= 1"),
    field(SUBSETS, "a-b", r"config\.partition_args\.label_subsets\.subsets = 'a-b' cannot read "
          r"'a-b'"),
    field(SUBSETS, "5-3", r"config\.partition_args\.label_subsets\.subsets = '5-3' cannot read "
          r"'5-3'"),
    field("data.test_per_class", "0", r"config\.data\.test_per_class = 0 must be >= 1"),
    field("dataset_args.synthetic.num_train", "0",
          r"config\.dataset_args\.synthetic\.num_train = 0 must be >= 1"),
    field("seed", "-1", r"config\.seed = -1 must be in \[0, 2\*\*32\)"),
    field("correction.blend", "2", r"config\.correction\.blend = 2\.0 must be in \[0, 1\]"),
    field("correction.eps", "-1e-4",
            r"config\.correction\.eps = -0\.0001 must be a finite number >= 0"),
    field("correction.ddof", "-1", r"config\.correction\.ddof = -1 must be >= 0"),
    field("correction.strength", "1.5", r"config\.correction\.strength = 1\.5 must be in \[0, 1\]"),
    field("algorithm_args.fl.round_ticks", "-1",
            r"config\.algorithm_args\.fl\.round_ticks = -1 must be >= 0"),
    field("algorithm_args.fl.local_steps", "8",
            r"config\.algorithm_args\.fl\.local_steps = 8 does not fit a round"),
    field("algorithm_args.gossip_trim.fraction", "0.5",
            r"config\.algorithm_args\.gossip_trim\.fraction = 0\.5 must be in \[0, 0\.5\)"),
    field("algorithm_args.dpsgd.local_steps", "0",
            r"config\.algorithm_args\.dpsgd\.local_steps = 0 must be >= 1"),
    field("run.target_accuracy", "2", r"config\.run\.target_accuracy = 2\.0 must be in \[0, 1\]"),
    field("run.eval_nodes", "0", r"config\.run\.eval_nodes = 0 must be >= 1"),
    field("run.max_nodes_per_chunk", "-1", r"config\.run\.max_nodes_per_chunk = -1 must be >= 0"),
    field("run.coordinator_address", "localhost:99999",
          r"config\.run\.coordinator_address = 'localhost:99999' must be 'host:port' with a port"),
    field("run.slots", "-1", r"config\.run\.slots = -1 must be >= 0"),
    field("run.wandb_mode", "sometimes",
            r"config\.run\.wandb_mode = 'sometimes' is unknown; choose from '', online"),
    bad("wandb_without_project", "--config.run.wandb=True", "--config.run.wandb_project=",
        expect=r"config\.run\.wandb_project is empty"),
    bad("two_problems", "--config.schedule.beta=2", "--config.optim.lr=-1",
        expect=r"config\.optim\.lr = -1\.0 .*; config\.schedule\.beta = 2\.0"),
    # ---------------------------------------------------------------- names
    field("algorithms", "gossip,bogus", r"unknown algorithm\(s\) \['bogus'\]", workdir="run"),
    field("algorithms", "", r"config\.algorithms is empty"),
    field("algorithms", "gossip,gossip", r"lists an algorithm twice"),
    field("model.name", "mpl",
            r"config\.model\.name = 'mpl' is unknown \(did you mean 'mlp'\?\); choose from mlp"),
    field("optim.name", "sgdd",
            r"config\.optim\.name = 'sgdd' is unknown \(did you mean 'sgd'\?\)"),
    field("data.partition", "random",
            r"config\.data\.partition = 'random' is unknown; choose from iid"),
    field("topology.name", "mesh", r"config\.topology\.name = 'mesh' is unknown; choose from ring"),
    field("model.init", "zeros",
            r"config\.model\.init = 'zeros' is unknown; choose from glorot_uniform"),
    field("optim.schedule", "cosine",
            r"config\.optim\.schedule = 'cosine' is unknown; choose from constant, inv"),
    field("model.conv_impl", "fft",
            r"config\.model\.conv_impl = 'fft' is unknown; choose from auto, xla"),
    field("topology.weighting", "equal",
            r"config\.topology\.weighting = 'equal' is unknown; choose from uniform"),
    field("correction.target", "mean",
            r"config\.correction\.target = 'mean' is unknown; choose from others, self"),
    field("data.name", "../etc", r"config\.data\.name = '\.\./etc' is not a dataset name"),
    # ---------------------------------------------------------------- input files
    field("data.data_dir", "{inputs}/no_such_dir",
          r"config\.data\.data_dir = '\S+no_such_dir' does not exist"),
    field("data.data_dir", "{inputs}/tiny.py",
            r"config\.data\.data_dir = '\S+tiny\.py' is not a directory"),
    field("data.data_dir", "{inputs}/data_empty",
            r"config\.data\.data_dir = '\S+' is an empty directory"),
    bad("edge_list_unset", "--config.topology.name=edge_list",
        expect=r"config\.topology\.name = 'edge_list' needs "
               r"config\.topology_args\.edge_list\.path"),
    bad("edge_list_missing", "--config.topology.name=edge_list",
            "--config.topology_args.edge_list.path={inputs}/nope.txt",
        expect=r"config\.topology_args\.edge_list\.path = '\S+nope\.txt' names no file"),
    bad("edge_list_directory", "--config.topology.name=edge_list",
            "--config.topology_args.edge_list.path={inputs}",
        expect=r"config\.topology_args\.edge_list\.path = '\S+' is a directory"),
    bad("edge_list_malformed", "--config.topology.name=edge_list",
        "--config.topology_args.edge_list.path={inputs}/malformed.txt",
        expect=r"malformed\.txt: malformed line 2: 'x y'", workdir="empty"),
    bad("edge_list_self_loop", "--config.topology.name=edge_list",
        "--config.topology_args.edge_list.path={inputs}/self_loop.txt",
        expect=r"self-loop at node 2"),
    bad("edge_list_out_of_range", "--config.topology.name=edge_list",
        "--config.topology_args.edge_list.path={inputs}/out_of_range.txt",
        expect=r"node id 7 out of range for n=4 .*out_of_range\.txt, line 2\)"),
    bad("edge_list_disconnected", "--config.topology.name=edge_list",
        "--config.topology_args.edge_list.path={inputs}/disconnected.txt",
        expect=r"graph is disconnected"),
    bad("edge_list_duplicate_edge", "--config.topology.name=edge_list",
        "--config.topology_args.edge_list.path={inputs}/duplicate.txt",
        expect=r"duplicate\.txt: line 5 repeats the edge 1 2 of line 2; name each edge once"),
    bad("edge_list_empty", "--config.topology.name=edge_list",
            "--config.topology_args.edge_list.path={inputs}/empty.txt",
        expect=r"no edges among n=4 nodes"),
    bad("edge_list_binary", "--config.topology.name=edge_list",
            "--config.topology_args.edge_list.path={inputs}/binary.py",
        expect=r"edge list \S+binary\.py cannot be read: not UTF-8 text"),
    bad("corrupt_idx_files", "--config.data.name=fashion_mnist",
            "--config.data.data_dir={inputs}/idx",
        expect=r"train-images-idx3-ubyte: bad IDX magic number", workdir="empty"),
    # ---------------------------------------------------------------- graph and data
    bad("random_regular_degree_too_big", "--config.topology.name=random_regular",
            "--config.topology_args.random_regular.degree=9",
        expect=r"config\.topology\.name = 'random_regular' \(num_nodes=4\): .*degree d=9"),
    bad("random_regular_odd", "--config.topology.name=random_regular",
        "--config.topology_args.random_regular.degree=3",
        "--config.topology.num_nodes=5", expect=r"n \* d must be even"),
    field("topology.name", "torus",
            r"config\.topology\.name = 'torus' \(num_nodes=4\): degenerate torus"),
    bad("erdos_renyi_disconnected", "--config.topology.name=erdos_renyi",
            "--config.topology_args.erdos_renyi.p=0.01",
        "--config.topology.num_nodes=40", expect=r"G\(n=40, p=0\.01\) was disconnected"),
    field("schedule.threshold", "3",
            r"config\.schedule\.threshold = 3 exceeds the in-degree 2 of node 0",
          workdir="empty"),
    field("optim.batch_size", "500",
            r"config\.optim\.batch_size = 500 is larger than node 0's data \(200 "),
    bad("batch_larger_than_shards", "--config.data.partition=shards",
            "--config.optim.batch_size=60",
        expect=r"batch_size = 60 is larger than node \d+'s data \(50 training examples"),
    field("data.test_per_class", "50",
            r"config\.data\.test_per_class = 50 but class \d+ .* only 10 images"),
    bad("too_many_shards", "--config.data.partition=shards",
        "--config.partition_args.shards.shards_per_node=100",
        expect=r"config\.data\.partition = 'shards' .*shards_per_node=100"),
    bad("dirichlet_split_too_small", "--config.data.partition=dirichlet_split",
        "--config.topology.num_nodes=30", "--config.topology.name=complete",
        expect=r"config\.data\.partition = 'dirichlet_split' .*min_size"),
    bad("label_subset_without_data", "--config.data.partition=label_subsets",
        "--config.partition_args.label_subsets.subsets=0-4,12",
        expect=r"subset \[12\] has labels \[12\]"),
    # ------------------------------------------- faults, sizes: found before the workdir
    bad("churn_trace_node_out_of_range", "--config.network.churn_trace={inputs}/churn_99.txt",
        expect=r"churn_trace \S+churn_99\.txt' line 1: node 99 is not in \[0, 4\)"),
    bad("drop_file_non_edge", "--config.network.drop_file={inputs}/drop_non_edge.txt",
        expect=r"drop_non_edge\.txt' line 1: 0 -> 2 is not an edge of the ring"),
    bad("redraw_on_a_ring_fl_first", "--config.algorithms=fl,gossip",
        "--config.network.redraw_every=5",
        expect=r"config\.network\.redraw_every = 5: the 'ring' topology has no random draw"),
    bad("byzantine_everyone", "--config.network.byzantine=0.99",
        expect=r"config\.network\.byzantine = 0\.99 leaves no honest node of 4"),
    bad("ticks_1e9", "--config.run.ticks=1000000000",
        expect=r"config\.run\.ticks = 1000000000 with config\.topology\.num_nodes = 4: the run's "
               r"plan needs about \d+\.\d GiB of host memory \(schedule"),
    # Refused by the state's size, or first by the plan's (its graph) where the machine has
    # less free memory than the plan's ~13 GiB: either way one line naming the field.
    bad("ten_million_nodes", "--config.topology.num_nodes=10000000",
        expect=r"config\.topology\.num_nodes = 10000000 x [\d,]+ parameters of mlp: the run's "
               r"state needs about [\d.]+ [GT]iB|config\.topology\.num_nodes = 10000000: the "
               r"run's plan needs about [\d.]+ GiB of host memory \(graph"),
    bad("workdir_name_too_long", expect=r"too long a path for the file system",
        workdir_flag="{inputs}/" + "x" * 300),
    # ---------------------------------------------------------------- the workdir
    bad("workdir_is_a_file", expect=r"workdir \S+tiny\.py is a file",
        workdir_flag="{inputs}/tiny.py"),
    bad("workdir_below_a_file", expect=r"cannot be created: \S+tiny\.py is not a directory",
        workdir_flag="{inputs}/tiny.py/run"),
    bad("workdir_in_proc", expect=r"workdir /proc/vanish is under /proc",
        workdir_flag="/proc/vanish"),
    bad("workdir_proc_self", expect=r"is under /proc", workdir_flag="/proc/self"),
    bad("workdir_dev_null", expect=r"workdir /dev/null is under /dev", workdir_flag="/dev/null"),
    bad("workdir_empty_flag", expect=r"--workdir is empty", workdir_flag=""),
    bad("workdir_broken_symlink", expect=r"is a broken symbolic link",
        workdir_flag="{inputs}/dangling"),
    bad("corrupt_run_config", expect=r"run_config\.json is corrupt \(Expecting",
        workdir="corrupt_run_config"),
    bad("run_config_without_hash", expect=r"run_config\.json is corrupt or unreadable \(KeyError",
        workdir="run_config_without_hash"),
    bad("run_config_is_a_directory", expect=r"run_config\.json is not a file",
        workdir="run_config_is_a_directory"),
    bad("corrupt_summary", expect=r"summary\.json is corrupt", workdir="corrupt_summary"),
    bad("summary_not_an_object", expect=r"summary\.json is corrupt \(a JSON list",
        workdir="summary_not_an_object"),
    bad("corrupt_config_json", expect=r"config\.json is corrupt", workdir="corrupt_config_json"),
    bad("corrupt_metrics_line", expect=r"metrics\.jsonl is corrupt \(.* at line 2\)",
        workdir="corrupt_metrics_line"),
    bad("metrics_not_utf8", expect=r"metrics\.jsonl is corrupt \(not UTF-8",
        workdir="metrics_not_utf8"),
    bad("algorithm_dir_is_a_file", expect=r"gossip is not a directory", workdir="algorithm_file"),
    bad("checkpoints_is_a_file", expect=r"checkpoints is not a directory",
        workdir="checkpoints_file"),
    bad("changed_config", "--config.optim.lr=0.02",
        expect=r"holds a run of a different config: config\.optim\.lr: 0\.05 -> 0\.02\. Use a new "
               r"--workdir", workdir="run"),
    bad("every_checkpoint_damaged",
        expect=r"every checkpoint in \S+gossip/checkpoints is damaged \(4: its state folder is "
               r"missing; 2: a file of it is truncated\); .*nothing was changed",
        workdir="all_checkpoints_damaged"),
    # ---------------------------------------------------------------- the simulated clock
    field("clock.compute", "fast", r"config\.clock\.compute = 'fast' is neither a number, "
          r"lognormal:MEDIAN:SIGMA, uniform:LO:HI nor a readable file"),
    field("clock.latency", "lognormal:0.1", r"config\.clock\.latency = 'lognormal:0\.1': write "
          r"lognormal:A:B with two numbers"),
    field("clock.bandwidth", "0", r"config\.clock\.bandwidth = '0': every value must be "
          r"positive"),
    field("clock.compute", "0.1", r"config\.clock\.compute is set but "
          r"config\.clock\.tick_seconds is 0"),
    field("clock.tick_seconds", "-1", r"config\.clock\.tick_seconds = -1\.0"),
]


def _set(path: Path, text: str | bytes) -> None:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def _truncate_arrays(step_dir: Path) -> None:
    for f in step_dir.rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[:10])


# Workdirs made from a copy of the finished run (or from nothing), by name.
SETUPS: dict[str, Callable[[Path], None]] = {
    "corrupt_run_config": lambda w: _set(w / "run_config.json", '{"config_hash": '),
    "run_config_without_hash": lambda w: _set(w / "run_config.json", '{"hash": "x"}'),
    "run_config_is_a_directory": lambda w: (w / "run_config.json").unlink()
    or (w / "run_config.json").mkdir(),
    "corrupt_summary": lambda w: _set(w / "summary.json", '{"gossip": {"final_acc": 0.1,'),
    "summary_not_an_object": lambda w: _set(w / "summary.json", "[1, 2]"),
    "corrupt_config_json": lambda w: _set(w / "config.json", "{]"),
    "corrupt_metrics_line": lambda w: _set(w / "metrics.jsonl", "\n".join(
        ["{garbage" if i == 1 else line
         for i, line in enumerate((w / "metrics.jsonl").read_text().split("\n"))])),
    "metrics_not_utf8": lambda w: _set(w / "metrics.jsonl", b'{"tick": 0}\n\xff\xfe\n'),
    "algorithm_file": lambda w: shutil.rmtree(w / "gossip") or _set(w / "gossip", "x"),
    "checkpoints_file": lambda w: shutil.rmtree(w / "gossip" / "checkpoints")
    or _set(w / "gossip" / "checkpoints", "x"),
    "all_checkpoints_damaged": lambda w: shutil.rmtree(w / "gossip/checkpoints/4/state")
    or _truncate_arrays(w / "gossip/checkpoints/2/state"),
}


# ------------------------------------------------------------------------------ running


def tree_hash(path: Path) -> str | None:
    """sha256 over every name and file content below `path` (None: `path` does not exist)."""
    if not path.exists() and not path.is_symlink():
        return None
    h = hashlib.sha256()
    for p in sorted([path, *path.rglob("*")]) if path.is_dir() else [path]:
        if p.name == lock.LOCK_FILE:  # the workdir lock (emptied when released), not data
            continue
        h.update(str(p.relative_to(path) if p != path else ".").encode())
        if p.is_file():
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def cli_env(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VANISH_DEBUG"}
    env.update(VANISH_TCMALLOC="0", JAX_PLATFORMS="cpu", WANDB_MODE="disabled",
               # Real runs after the first load its compiled steps (the same programs).
               JAX_COMPILATION_CACHE_DIR=str(base / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 240
            ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vanish.run", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


def run_in_process(args: list[str]) -> subprocess.CompletedProcess:
    """`vanish.run.command` here, as a CompletedProcess (an escaped exception: its traceback
    on stderr and status 2)."""
    from vanish import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run.command(["vanish", *args])
        except Exception:  # noqa: BLE001  a bug: the test shows its traceback
            err.write(traceback.format_exc())
            code = 2
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


# Cases that also run as a real `python -m vanish.run` process (exit status, stderr).
SUBPROCESS = ("unknown_field", "config_syntax_error", "schedule.beta=1.5", "changed_config",
              "workdir_in_proc")


@dataclasses.dataclass
class Outcome:
    proc: subprocess.CompletedProcess
    workdir: Path
    before: str | None  # tree hash before the run (None: did not exist)
    after: str | None
    seconds: float


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad_input")
    (d / "tiny.py").write_text(TINY)
    for name, text in {**CONFIG_FILES, **EDGE_LISTS}.items():
        (d / name).write_text(text)
    (d / "binary.py").write_bytes(b"\xff\xfe\x00\x81binary")
    (d / "data_empty").mkdir()
    (d / "idx").mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (d / "idx" / stem).write_bytes(b"\x01\x02\x03\x04garbage")
    (d / "dangling").symlink_to(d / "no_such_target")
    (d / "churn_99.txt").write_text("99 5 10\n")
    (d / "drop_non_edge.txt").write_text("0 2 0.5\n")
    return d


@pytest.fixture(scope="module")
def finished_run(inputs) -> Path:
    """A finished run of the tiny config (checkpoints at ticks 2 and 4)."""
    workdir = inputs / "finished"
    proc = run_in_process([f"--config={inputs / 'tiny.py'}", f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert checkpoint.all_steps(workdir / "gossip") == [2, 4]
    return workdir


def run_case(case: Case, inputs: Path, finished: Path, real: bool = False) -> Outcome:
    workdir = inputs / ("real" if real else "cases") / re.sub(r"[^\w.=-]", "_", case.id)
    if case.workdir == "empty":
        workdir.mkdir(parents=True)
    elif case.workdir == "run" or case.workdir in SETUPS:
        shutil.copytree(finished, workdir, symlinks=True)
        SETUPS.get(case.workdir, lambda w: None)(workdir)
    else:
        assert case.workdir == "new", case.workdir
    fill = dict(inputs=str(inputs), workdir=str(workdir))
    args = [flag.format(**fill) for flag in case.flags]
    if case.config is not None:
        args.insert(0, f"--config={inputs / case.config}" if case.config else "--config=")
    if case.workdir_flag is not None:
        args.insert(1 if case.config is not None else 0,
                    f"--workdir={case.workdir_flag.format(**fill)}")
    before = tree_hash(workdir)
    t0 = time.perf_counter()
    proc = run_cli(args, cli_env(inputs)) if real else run_in_process(args)
    return Outcome(proc, workdir, before, tree_hash(workdir), time.perf_counter() - t0)


@pytest.fixture(scope="module")
def outcomes(request, inputs, finished_run) -> dict[str, Outcome]:
    """Runs every selected case once for the module (in this process)."""
    wanted = {item.callspec.params["case"].id for item in request.session.items
              if item.module is sys.modules[__name__] and hasattr(item, "callspec")
              and "case" in item.callspec.params}
    t0 = time.perf_counter()
    done = {c.id: run_case(c, inputs, finished_run) for c in CASES if c.id in wanted}
    print(f"\n{len(done)} bad-input cases in {time.perf_counter() - t0:.1f} s")
    return done


def _check(case: Case, out: Outcome) -> None:
    stderr = out.proc.stderr
    assert out.proc.returncode == 1, (out.proc.returncode, stderr[-3000:])
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("vanish: error: ")]
    assert len(errors) == 1, stderr[-3000:]
    assert re.search(case.expect, errors[0]), errors[0]
    if out.before is None:
        assert not out.workdir.exists(), f"{out.workdir} was created"
    else:
        assert out.after == out.before, f"{out.workdir} changed"


def test_case_ids_are_unique_and_the_readme_counts_them():
    assert len({c.id for c in CASES}) == len(CASES) >= 80
    readme = (ROOT / "README.md").read_text()
    assert f"tests/test_bad_input.py feeds {len(CASES)} bad inputs" in readme


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_loses_nothing(case: Case, outcomes: dict[str, Outcome]):
    _check(case, outcomes[case.id])


@pytest.mark.parametrize("case", [c for c in CASES if c.id in SUBPROCESS], ids=SUBPROCESS)
def test_the_real_command_line_says_the_same(case: Case, inputs, finished_run):
    _check(case, run_case(case, inputs, finished_run, real=True))


# ------------------------------------------------------------------------- beside the table


def test_choice_fields_accept_exactly_their_registry():
    from vanish import algorithms, build, models, network, partition, topology

    for path, names in {"data.partition": partition.SCHEMES, "model.name": models.REGISTRY,
                        "model.init": models.INITIALIZERS, "topology.name": topology.TOPOLOGIES,
                        "topology.weighting": topology.WEIGHTINGS,
                        "network.peer_mode": network.PEER_MODES,
                        "network.byzantine_attack": network.ATTACKS}.items():
        rule = build.FIELD_RULES[path]
        assert all(rule(name) is None for name in names), path
        assert "is unknown" in rule("no_such_name"), path
    assert build.parse_algorithms(",".join(algorithms.REGISTRY)) == tuple(algorithms.REGISTRY)
    from vanish import nodes

    for name in ("sgd", "adam", "adamw"):
        assert build.FIELD_RULES["optim.name"](name) is None
        for schedule in ("constant", "inv"):
            nodes.make_optimizer(name, schedule=schedule)
    with pytest.raises(ValueError):
        nodes.make_optimizer("nope")


# Fields whose values are checked where they are used (files, names of layers) or that any
# value of their type suits.
FREE = {"data.data_dir", "topology_args.edge_list.path", "correction.skip", "run.wandb_project"}


def test_every_field_has_a_rule_and_every_experiment_passes():
    from vanish import build, rules, run

    schema = config.fields()
    assert set(build.FIELD_RULES) <= set(schema)
    for path, f in schema.items():
        knob = rules.knob_rule(path) is not None  # a registered component's own knob
        assert (path in build.FIELD_RULES or knob or isinstance(f.default, bool)
                or path in FREE), f"config.{path} has no rule"
    build.validate(config.default_config())
    build.validate(config.paper_config())
    for path in sorted((ROOT / "experiments").glob("*/config.py")):
        assert build.problems(run.load_config_file(str(path))) == [], path


def test_the_builder_starts_no_jax_backend(inputs):
    """build.experiment reads data and draws graphs but touches no device: a multi-process
    run joins (jax.distributed.initialize) after it, before any backend starts."""
    code = ("from vanish import build, run\nfrom jax._src import xla_bridge\n"
            "build.experiment(run.load_config_file('%s'))\nprint(bool(xla_bridge._backends))"
            % (inputs / "tiny.py"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=cli_env(inputs))
    assert proc.stdout.split()[-1] == "False", proc.stdout + proc.stderr


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(inputs, finished_run):
    workdir = inputs / "fallback"
    shutil.copytree(finished_run, workdir)
    shutil.rmtree(workdir / "gossip" / "checkpoints" / "4" / "state")
    want = (finished_run / "summary.json").read_text()
    proc = run_cli([f"--config={inputs / 'tiny.py'}", f"--workdir={workdir}"], cli_env(inputs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert re.search(r"checkpoint \S+gossip/checkpoints/4 is damaged \(its state folder is "
                     r"missing\); using checkpoint 2 instead", proc.stderr), proc.stderr
    assert (workdir / "summary.json").read_text() == want  # the same result as straight through
    assert checkpoint.all_steps(workdir / "gossip") == [2, 4]


_LIBRARY_NOISE = ("Traceback", "Exception ignored", "Event loop is closed", "TensorStore",
                  "never retrieved", "destroyed but it is pending")
# The command line with every array read that succeeds made 1 s slower (orbax's reader,
# wrapped): the failed read of a damaged file then ends a restore while the reads of the
# other files are still pending, as happens by chance on a busy machine. The garbage is
# collected before the exit, so whatever its finalizers would print shows in this run.
_SLOW_READS = """
import asyncio, atexit, gc, runpy, sys
from orbax.checkpoint._src.serialization import serialization
real = serialization._read_shard

async def slow(**kwargs):
    out = await real(**kwargs)
    await asyncio.sleep(1.0)
    return out

serialization._read_shard = slow
atexit.register(gc.collect)
runpy.run_module("vanish.run", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("name,damage,why", [
    pytest.param("truncated", lambda f: f.write_bytes(b"\0garbage"), "a file of it is truncated",
                 marks=pytest.mark.slow),
    pytest.param("zeroed", lambda f: f.write_bytes(bytes(f.stat().st_size)),
                 "a file of it is corrupt", marks=pytest.mark.slow),
    ("removed", lambda f: f.unlink(), "a file of it is missing or truncated"),
], ids=["truncated", "zeroed", "removed"])
def test_a_damaged_array_file_falls_back_with_one_warning_and_nothing_else(
        inputs, finished_run, name, damage, why):
    """Orbax fails reading one array file of the newest checkpoint while its reads of the
    others are pending: the fallback prints vanish's one warning line and nothing of orbax,
    tensorstore or asyncio (it printed ~1,500 lines of "Exception ignored in: <coroutine
    ...>" tracebacks, each with a TensorStore spec)."""
    from orbax.checkpoint._src.serialization import serialization

    assert callable(getattr(serialization, "_read_shard", None)), "the hook needs a new target"
    workdir = inputs / f"fallback_{name}"
    shutil.copytree(finished_run, workdir)
    data = [f for f in (workdir / "gossip/checkpoints/4/state").rglob("*")
            if f.is_file() and f.parent.name == "d"]
    damage(max(data, key=lambda f: f.stat().st_size))
    proc = subprocess.run([sys.executable, "-c", _SLOW_READS, f"--config={inputs / 'tiny.py'}",
                           f"--workdir={workdir}"], capture_output=True, text=True, timeout=240,
                          cwd=ROOT, env=cli_env(inputs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for noise in _LIBRARY_NOISE:
        assert noise not in proc.stderr, proc.stderr[-3000:]
    warned = [line for line in proc.stderr.splitlines() if "is damaged" in line]
    assert len(warned) == 1, proc.stderr[-3000:]
    assert re.search(rf"checkpoint \S+gossip/checkpoints/4 is damaged \({why}\); using "
                     r"checkpoint 2 instead", warned[0]), warned
    assert (workdir / "summary.json").read_text() == (finished_run / "summary.json").read_text()


def _state(seed: int):
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((64, 32)).astype(np.float32), "tick": seed}


@pytest.mark.parametrize("fault", [
    ValueError("RESOURCE_EXHAUSTED: Error writing \"w/0\" in OCDBT database: Failed to write "
               "737079 bytes to file 20: No space left on device [os_error_code='28']"),
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EROFS, "Read-only file system"),
], ids=["tensorstore_enospc", "enospc", "erofs"])
def test_a_failed_checkpoint_write_is_one_error_and_keeps_the_previous(tmp_path, monkeypatch,
                                                                       fault):
    """The writer fails half way (a partial temporary directory is left, as orbax leaves it):
    CheckpointWriteError names the directory and the intact previous step, which restores."""
    import orbax.checkpoint as ocp

    checkpoint.save(tmp_path, 10, _state(10))
    before = tree_hash(checkpoint.checkpoint_dir(tmp_path) / "10")

    def failing_save(self, step, *args, **kwargs):
        partial = checkpoint.checkpoint_dir(tmp_path) / f"{step}.orbax-checkpoint-tmp"
        partial.mkdir()
        (partial / "half").write_bytes(b"\0" * 100)
        raise fault

    monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)
    with pytest.raises(checkpoint.CheckpointWriteError,
                       match=r"could not write checkpoint 20 to \S+checkpoints: .*; the previous "
                             r"checkpoint \(step 10\) is intact"):
        checkpoint.save(tmp_path, 20, _state(20))
    monkeypatch.undo()
    assert checkpoint.all_steps(tmp_path) == [10]
    assert tree_hash(checkpoint.checkpoint_dir(tmp_path) / "10") == before
    restored, _ = checkpoint.restore(tmp_path, _state(0))
    np.testing.assert_array_equal(restored["w"], _state(10)["w"])
    checkpoint.save(tmp_path, 20, _state(20))  # with space again: saves, leftovers cleared
    assert checkpoint.all_steps(tmp_path) == [10, 20]


def test_a_failure_that_is_not_the_disk_keeps_its_type(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    def failing_save(self, *args, **kwargs):
        raise TypeError("a bug, not bad input")

    monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)
    with pytest.raises(TypeError, match="a bug"):
        checkpoint.save(tmp_path, 1, _state(1))


def _arrays(state_dir: Path) -> list[np.ndarray]:
    import jax
    import orbax.checkpoint as ocp

    with warnings.catch_warnings():  # "sharding info not provided": plain host arrays wanted
        warnings.simplefilter("ignore")
        return jax.tree.leaves(ocp.PyTreeCheckpointer().restore(state_dir))


def _mount(*args: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.mark.slow  # the default suite's time (CI runs it with -m slow)
def test_a_full_disk_during_checkpointing_is_one_line(inputs, finished_run):
    """A real 5 MiB tmpfs: the tick-2 checkpoint (3.2 MB) fits, the tick-4 one does not."""
    disk = inputs / "tiny_disk"
    disk.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=5m", "tmpfs", str(disk)):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        workdir = disk / "run"
        proc = run_cli([f"--config={inputs / 'tiny.py'}", f"--workdir={workdir}"],
                       cli_env(inputs))
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert re.search(r"vanish: error: could not write checkpoint 4 to \S+/run/gossip/"
                         r"checkpoints: no space left on device; the previous checkpoint \(step "
                         r"2\) is intact", proc.stderr), proc.stderr[-3000:]
        assert checkpoint.all_steps(workdir / "gossip") == [2]
        intact = _arrays(workdir / "gossip/checkpoints/2/state")
        for a, b in zip(intact, _arrays(finished_run / "gossip/checkpoints/2/state")):
            np.testing.assert_array_equal(a, b)  # the same state as the finished run's tick 2
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_read_only_workdir_is_refused_before_any_work(inputs, finished_run):
    """A finished run on a read-only bind mount (root), else a folder without write permission
    (other users): refused at once, every file as it was."""
    source, workdir = inputs / "ro_source", inputs / "ro"
    shutil.copytree(finished_run, source)
    workdir.mkdir()
    mounted = _mount("--bind", "-o", "ro", str(source), str(workdir))
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("cannot bind-mount read-only here")
        workdir.rmdir()
        workdir = source
        workdir.chmod(0o555)
    try:
        before = tree_hash(workdir)
        procs = [run_in_process([f"--config={inputs / 'tiny.py'}", f"--workdir={w}"])
                 for w in (workdir, workdir / "sub" / "dir")]
        for proc in procs:
            assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
            assert re.search(r"vanish: error: workdir \S+ cannot be written: \S+ro\S* is (on a "
                             r"read-only file system|not writable)", proc.stderr), proc.stderr
        assert tree_hash(workdir) == before
    finally:
        if mounted:
            subprocess.run(["umount", str(workdir)], check=True)
        else:
            workdir.chmod(0o755)

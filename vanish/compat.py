"""Every compatibility rule in one place, dated: field names of earlier versions and how an
older record is read today.

    compat.OLD_NAMES["degree"]        # ('topology_args.random_regular.degree',
                                      #  'topology_args.watts_strogatz.k')
    compat.upgrade(stored_flat)       # an old record as today's {dotted path: value}

A config or flag that uses an old name is refused with the new spelling (vanish/build.py); a
workdir or an archived run written with old names is read through `upgrade` (the workdir's
check, the results module) and resumes: its checkpoints' config hash stays accepted
(vanish/workdir.py keeps it in `accepts`). `python scripts/migrate_records.py DIR` rewrites
archived run records in today's layout once. A rename is one dated entry below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vanish import config, workdir

# 2026-10: the flat config of the first versions was split into sections. Each entry is
# "section: old[:new] ..." (new defaults to old).
_SECTIONS_2026_10 = {
    "data": "dataset:name data_dir download partition test_per_class",
    "model": "model:name conv_impl init",
    "optim": ("optimizer:name lr momentum lr_schedule:schedule weight_decay batch_size "
              "reset_opt_on_merge:reset_on_merge"),
    "topology": "topology:name num_nodes weighting",
    "schedule": "interval_lo interval_hi first_tick send_every threshold beta",
    "correction": ("vc_target:target vc_blend:blend vc_eps:eps vc_ddof:ddof vc_strength:strength "
                   "vc_skip:skip vc_reference:reference correct_biases:biases"),
    "network": ("drop_prob drop_file delay churn_up churn_down churn_trace stragglers "
                "straggler_interval peer_k peer_mode redraw_every byzantine byzantine_attack "
                "byzantine_scale"),
    "run": ("ticks eval_every target_accuracy checkpoint_every keep_checkpoints wandb "
            "wandb_project wandb_mode slots fuse max_slots merge_slots eval_nodes "
            "max_nodes_per_chunk masked_baseline shard_nodes distributed coordinator_address "
            "num_processes process_id"),
}
_RULE_KNOBS_2026_10 = {  # the flat FL / rule knobs -> the rules' own sections
    "fl_round_ticks": ("algorithm_args.fl.round_ticks", "algorithm_args.fl_sched.round_ticks"),
    "fl_client_fraction": ("algorithm_args.fl.client_fraction",
                           "algorithm_args.fl_sched.client_fraction"),
    "fl_local_steps": ("algorithm_args.fl.local_steps",),
    "num_partitions": ("algorithm_args.gossip_part.num_partitions",),
    "subsample": ("algorithm_args.gossip_part.subsample",),
    "trim_fraction": ("algorithm_args.gossip_trim.fraction",
                      "algorithm_args.gossip_trim_vc.fraction"),
    "sync_local_steps": ("algorithm_args.dpsgd.local_steps", "algorithm_args.dpsgd_vc.local_steps"),
}
# 2026-12: a topology's, a partition's and a dataset's own knobs moved from shared fields to
# the sections
# generated from their registries (`topology_args.<name>`, `partition_args.<name>`,
# `dataset_args.<name>`). Also the
# flat names of the first versions of these fields.
_COMPONENT_KNOBS_2026_12 = {
    "topology.degree": ("topology_args.random_regular.degree", "topology_args.watts_strogatz.k"),
    "topology.edge_prob": ("topology_args.erdos_renyi.p",),
    "topology.rewire_prob": ("topology_args.watts_strogatz.p",),
    "topology.attach": ("topology_args.barabasi_albert.m",),
    "topology.edge_list": ("topology_args.edge_list.path",),
    "data.alpha": ("partition_args.dirichlet_weights.alpha",
                   "partition_args.dirichlet_split.alpha"),
    "data.shards_per_node": ("partition_args.shards.shards_per_node",),
    "data.label_subsets": ("partition_args.label_subsets.subsets",),
    "data.synthetic_train": ("dataset_args.synthetic.num_train",),
    "data.synthetic_test": ("dataset_args.synthetic.num_test",),
}
_FLAT_COMPONENT_KNOBS = {"degree": "topology.degree", "edge_prob": "topology.edge_prob",
                         "rewire_prob": "topology.rewire_prob", "attach": "topology.attach",
                         "edge_list": "topology.edge_list", "alpha": "data.alpha",
                         "shards_per_node": "data.shards_per_node",
                         "label_subsets": "data.label_subsets",
                         "synthetic_train": "data.synthetic_train",
                         "synthetic_test": "data.synthetic_test"}

# Old name (flat, or a dotted path of an earlier layout) -> today's path(s).
OLD_NAMES: dict[str, tuple[str, ...]] = {
    old: (f"{section}.{new or old}",)
    for section, names in _SECTIONS_2026_10.items()
    for old, _, new in (item.partition(":") for item in names.split())
}
OLD_NAMES.update(_RULE_KNOBS_2026_10)
OLD_NAMES.update(_COMPONENT_KNOBS_2026_12)
OLD_NAMES.update({flat: _COMPONENT_KNOBS_2026_12[path]
                  for flat, path in _FLAT_COMPONENT_KNOBS.items()})


def upgrade(flat_old: Mapping[str, Any], *, keep_unknown: bool = False) -> dict[str, Any]:
    """A config record of an earlier version (flat names, or sections with fields since moved)
    as today's {dotted path: value}: each old field moved to its place, fields it lacks at
    their defaults. `keep_unknown`: fields vanish does not know stay (to group runs by)."""
    out = workdir.flatten(config.default_config().to_dict())
    known = set(out)
    for old, value in flat_old.items():
        for path in OLD_NAMES.get(old, (old,)):
            if path in known or (keep_unknown and old not in OLD_NAMES):
                out[path] = value
    return out


def field_path(name: str) -> str:
    """A field name as today's dotted path: 'topology.num_nodes' for 'num_nodes' (earlier)."""
    return OLD_NAMES.get(name, (name,))[0]


def moved_hint(path: str) -> str:
    """': it is now config.<new>' for a field name of an earlier version, else ''."""
    new = OLD_NAMES.get(path)
    return f": it is now config.{' and config.'.join(new)}" if new else ""

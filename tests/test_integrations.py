"""The real third-party integrations, end to end through the CLI (no stand-in modules).

* Weights & Biases: `python -m vanish.run ... --config.run.wandb=True` in offline mode, then the
  offline runs are read back from their `.wandb` transaction logs with wandb's own protobuf
  records (`wandb.proto.wandb_internal_pb2.Record`): one run per algorithm in one group, the
  config, the scalars at exactly the evaluation ticks, the summary, the two figures; a rerun
  continues the same runs.
* TensorFlow Datasets: TFDS prepares a tiny stand-in of `mnist` into a temporary data_dir
  (tests/tfds_stub.py), `vanish.data.load` converts it, and the CLI trains on it.

Both need the packages of the `test` extra (wandb, tensorflow-cpu, tensorflow-datasets):
they fail, not skip, without them. Each CLI run is a subprocess: TensorFlow and W&B's
service never load into the test process.

    python -m pytest tests/test_integrations.py      # ~40 s on 2 cores
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vanish import tracking

ROOT = Path(__file__).resolve().parent.parent
TICKS, EVAL_EVERY = 20, 10
EVAL_TICKS = list(range(0, TICKS + 1, EVAL_EVERY))
ALGORITHMS = ["fl", "gossip_vc"]

# A tiny job: synthetic data, the MLP, 4 nodes on a ring, 20 ticks (seconds on a CPU).
TINY_CONFIG = f'''
from vanish import config


def get_config():
    c = config.default_config()
    c.algorithms = "{",".join(ALGORITHMS)}"
    c.data.name = "synthetic"
    c.dataset_args.synthetic.num_train = 600
    c.dataset_args.synthetic.num_test = 200
    c.data.test_per_class = 5
    c.model.name, c.optim.batch_size, c.optim.lr = "mlp", 8, 0.05
    c.topology.num_nodes, c.topology.name, c.topology_args.random_regular.degree = 4, "ring", 2
    c.schedule.interval_lo, c.schedule.interval_hi = 2, 4
    c.run.ticks, c.run.eval_every, c.run.checkpoint_every = {TICKS}, {EVAL_EVERY}, 0
    c.run.wandb = False
    return c
'''


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment: CPU JAX, W&B offline with all its files under tmp_path."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WANDB_") and k != "VANISH_TCMALLOC"}
    wandb_home = tmp_path / "wandb_home"
    env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", WANDB_MODE="offline",
               WANDB_DIR=str(tmp_path / "wandb_dir"), WANDB_CONFIG_DIR=str(wandb_home / "config"),
               WANDB_CACHE_DIR=str(wandb_home / "cache"), WANDB_DATA_DIR=str(wandb_home / "data"),
               WANDB_ARTIFACT_DIR=str(wandb_home / "artifacts"))
    env.update(extra)
    return env


def run_cli(tmp_path: Path, workdir: Path, *flags: str, env: dict[str, str]) -> str:
    """`python -m vanish.run --config <tiny config> --workdir <workdir> <flags>`; its output."""
    config = tmp_path / "tiny_config.py"
    config.write_text(TINY_CONFIG)
    cmd = [sys.executable, "-m", "vanish.run", "--config", str(config), "--workdir",
           str(workdir), *flags]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


# --------------------------------------------------------------------- W&B transaction log

# A .wandb file is a LevelDB-style log (what wandb's DataStore reads): a 7-byte header
# (':W&B', magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each with a 7-byte header
# (CRC-32 of type byte + data, length, type: 1 full, 2 first, 3 middle, 4 last) holding
# serialized `wandb_internal_pb2.Record` messages. wandb >= 0.18 ships no Python reader.
_BLOCK, _CHUNK_HEADER = 32768, 7


def wandb_records(path: Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0), f"{path}: not a .wandb log"
    pos, pending = 7, b""
    while pos + _CHUNK_HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEADER:  # block trailer padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + _CHUNK_HEADER])
        if (crc, length, kind) == (0, 0, 0):  # zero padding up to the next block
            pos += left
            continue
        chunk = data[pos + _CHUNK_HEADER:pos + _CHUNK_HEADER + length]
        assert len(chunk) == length, f"{path}: truncated record at byte {pos}"
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"{path}: bad CRC at {pos}"
        pos += _CHUNK_HEADER + length
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(pending + chunk)
            pending = b""
        else:
            pending = chunk if kind == 2 else pending + chunk


def _put(tree: dict[str, Any], item: Any) -> None:
    """A config / summary / history item (key or nested_key, value_json) into a dict."""
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        tree = tree.setdefault(k, {})
    tree[keys[-1]] = json.loads(item.value_json)


def read_wandb_run(path: Path) -> dict[str, Any]:
    """The run record, config, history rows, final summary and exit of one offline run."""
    out: dict[str, Any] = dict(run=None, config={}, history=[], summary={}, exit=None)
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            for item in record.run.config.update:
                _put(out["config"], item)
        elif kind == "config":
            for item in record.config.update:
                _put(out["config"], item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _put(row, item)
            out["history"].append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _put(out["summary"], item)
        elif kind == "exit":
            out["exit"] = record.exit
    assert out["run"] is not None, f"{path}: no run record"
    return out


def offline_runs(wandb_dir: Path) -> dict[Path, dict[str, Any]]:
    return {p: read_wandb_run(p) for p in sorted(wandb_dir.glob("wandb/offline-run-*/*.wandb"))}


@pytest.mark.slow
@pytest.mark.wandb
def test_wandb_offline_runs_hold_config_scalars_summary_and_figures(tmp_path):
    env = cli_env(tmp_path, VANISH_TCMALLOC="0")
    wandb_dir = Path(env["WANDB_DIR"])
    workdir = tmp_path / "exp"
    run_cli(tmp_path, workdir, "--config.run.wandb=True", "--config.run.wandb_project=vanish-test",
            env=env)
    runs = offline_runs(wandb_dir)
    assert not list(workdir.glob("wandb")), "WANDB_DIR was not honoured"
    by_alg = {r["config"]["algorithm"]: (p, r) for p, r in runs.items()}
    assert len(runs) == len(ALGORITHMS) and sorted(by_alg) == sorted(ALGORITHMS)
    rows = tracking.read_jsonl(workdir / tracking.METRICS_FILE)
    configs = json.loads((workdir / "config.json").read_text())
    summaries = json.loads((workdir / "summary.json").read_text())
    run_ids = json.loads((workdir / tracking.WANDB_RUNS_FILE).read_text())
    for alg, (path, r) in by_alg.items():
        run = r["run"]
        assert (run.project, run.run_group, run.display_name) == ("vanish-test", "exp",
                                                                   f"exp-{alg}")
        assert run.run_id == run_ids[alg] and r["exit"] is not None and r["exit"].exit_code == 0
        # Config: what config.json holds for this algorithm, searchable in W&B.
        assert r["config"]["topology"]["num_nodes"] == 4 and r["config"]["run"]["ticks"] == TICKS
        assert {k: r["config"][k] for k in configs[alg]} == configs[alg]
        # Scalars: one history row per evaluation tick, equal to the JSONL rows.
        scalar_rows = [h for h in r["history"] if "acc_mean" in h]
        assert [h["_step"] for h in scalar_rows] == EVAL_TICKS, alg
        mine = [row for row in rows if row["algorithm"] == alg]
        assert [row["tick"] for row in mine] == EVAL_TICKS, alg
        for h, row in zip(scalar_rows, mine):
            assert {k: h[k] for k in row if k not in ("algorithm", "tick")} == pytest.approx(
                {k: v for k, v in row.items() if k not in ("algorithm", "tick")}), alg
        # Summary: run.py's summary (final_acc, ticks_to_target None, ...), and the text.
        assert {k: r["summary"][k] for k in summaries[alg]} == pytest.approx(summaries[alg])
        assert r["summary"]["final_acc"] == pytest.approx(mine[-1]["acc_mean"])
        assert r["summary"]["final_tick"] == TICKS
        assert isinstance(r["summary"]["label_histogram"], str)  # write_text
        assert r["summary"]["label_histogram"].strip()
        # Figures: both images at the last tick, the very PNG files of the workdir.
        images = {k: v for h in r["history"] for k, v in h.items() if k in ("accuracy",
                                                                            "variance")}
        assert [h["_step"] for h in r["history"] if "accuracy" in h] == [TICKS]
        for key, image in images.items():
            assert image["_type"] == "image-file" and image["format"] == "png"
            logged = path.parent / "files" / image["path"]
            assert logged.read_bytes() == (workdir / f"{key}.png").read_bytes(), key
        assert sorted(images) == ["accuracy", "variance"]
    # Rerunning the finished job (here only fl, to be quick) adds no W&B run: fl continues
    # its own (offline, the continuation is a second log of the same run id).
    run_cli(tmp_path, workdir, "--config.run.wandb=True", "--config.run.wandb_project=vanish-test",
            "--config.algorithms=fl", env=env)
    again = {p: r for p, r in offline_runs(wandb_dir).items() if p not in runs}
    assert [r["run"].run_id for r in again.values()] == [run_ids["fl"]]
    assert [r["config"]["algorithm"] for r in again.values()] == ["fl"]


# --------------------------------------------------------------------------------- TFDS


@pytest.mark.slow
@pytest.mark.tfds
def test_tfds_dataset_prepared_by_tfds_loads_and_trains(tmp_path):
    data_dir = tmp_path / "tensorflow_datasets"
    env = cli_env(tmp_path, CUDA_VISIBLE_DEVICES="")  # TF builds before data.py hides GPUs
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "tfds_stub.py"), str(data_dir)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, f"tfds_stub.py failed:\n{(proc.stdout + proc.stderr)[-6000:]}"
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (data_dir / "mnist").is_dir()
    assert seen["name"] == "mnist" and seen["num_classes"] == 10
    assert seen["input_shape"] == [28, 28, 1] and seen["dtype"] == "float32"
    assert (seen["train"], seen["test"]) == (60, 30)
    assert seen["train_label_counts"] == [6] * 10
    assert seen["mean"] == [0.1307] and seen["std"] == [0.3081]  # mnist's published constants
    assert seen["x_sum"] == pytest.approx(seen["x_sum_expected"], rel=1e-5)
    assert seen["band_ok"], "images and labels were not kept together"
    # The CLI on it (tcmalloc as a user gets it), through --config.data.name / data_dir flags.
    workdir = tmp_path / "mnist_run"
    out = run_cli(tmp_path, workdir, "--config.data.name=mnist",
            f"--config.data.data_dir={data_dir}",
                  "--config.algorithms=gossip_vc", "--config.data.test_per_class=3",
                  env=cli_env(tmp_path))
    assert "dataset mnist: 60 train / 30 test" in out
    rows = tracking.read_jsonl(workdir / tracking.METRICS_FILE)
    assert [r["tick"] for r in rows] == EVAL_TICKS
    assert rows[-1]["acc_mean"] > 0.5  # chance is 0.1: the bands were learnt from TFDS data

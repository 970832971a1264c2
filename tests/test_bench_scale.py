"""scripts/bench_scale.py's accounting: collectives read from HLO text, bytes received, and
the bytes a topology needs under a placement (checked by hand on tiny cases)."""

import importlib.util
from pathlib import Path

import numpy as np

from vanish import schedule, topology

_SPEC = importlib.util.spec_from_file_location(
    "bench_scale", Path(__file__).parents[1] / "scripts" / "bench_scale.py")
bs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bs)

HLO = """
  %all-gather.1 = f32[16,784,128]{2,1,0} all-gather(f32[2,784,128]{2,1,0} %p), dimensions={0}
  %ag = (f32[16,10]{1,0}, s32[16]{0}) all-gather(f32[2,10]{1,0} %a, s32[2]{0} %b)
  %all-reduce.3 = f32[100]{0} all-reduce(f32[100]{0} %x), to_apply=%add
  %dot.7 = f32[2,64,128]{2,1,0} dot(f32[2,64,784]{2,1,0} %x, f32[2,784,128]{2,1,0} %w)
  %add = f32[4]{0} add(f32[4]{0} %a, f32[4]{0} %b)
"""


def test_collectives_and_bytes_from_hlo_text():
    colls = bs.hlo_collectives(HLO)
    assert colls == [dict(kind="all-gather", bytes=16 * 784 * 128 * 4),
                     dict(kind="all-gather", bytes=16 * 10 * 4 + 16 * 4),
                     dict(kind="all-reduce", bytes=400)]
    assert bs._DOT.findall(HLO) == ["2"]
    # 8 devices: each receives 7/8 of every all-gather's output, and a ring all-reduce
    # moves 2 x 7/8 of its buffer; summed over the 8 devices.
    ag = 16 * 784 * 128 * 4 + 16 * 10 * 4 + 16 * 4
    assert np.isclose(bs.received_bytes(colls, 8), 8 * (ag * 7 / 8 + 400 * 2 * 7 / 8))
    assert bs.received_bytes(colls, 1) == 0.0


def test_needed_bytes_on_a_ring():
    topo = topology.make("ring", 8)
    place = bs.placements(topo.senders, topo.receivers, 8, 2)
    np.testing.assert_array_equal(place["contiguous"], [0, 0, 0, 0, 1, 1, 1, 1])
    assert np.bincount(place["partition"]).tolist() == [4, 4]  # balanced
    sched = schedule.draw(8, 1, (1, 1), seed=0)  # every node trains and sends at tick 0
    work = schedule.pack(sched, 8)
    # Contiguous halves of a ring: nodes 0, 3, 4, 7 each have one neighbour on the other
    # device; the others none.
    assert bs.needed_bytes(work, topo.senders, topo.receivers, place["contiguous"], 10) == 40
    one = np.zeros(8, np.int64)
    assert bs.needed_bytes(work, topo.senders, topo.receivers, one, 10) == 0

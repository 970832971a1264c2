"""Schedules: the reference tick rule, and packing into fixed-width chunks loses nothing."""

import numpy as np
import pytest

from vanish import schedule


def _reference_events(n, ticks, lo, hi, sched):
    """Rebuild each node's training ticks from the drawn gaps' defining rule."""
    by_node = {i: sched.event_tick[sched.event_node == i] for i in range(n)}
    for i, t in by_node.items():
        assert t[0] == 0
        gaps = np.diff(t)
        assert np.all((gaps >= lo) & (gaps <= hi)), (i, gaps)
        assert ticks - t[-1] <= hi  # nothing missing at the end of the horizon
    return by_node


def test_draw_follows_the_tick_rule():
    s = schedule.draw(20, 500, (8, 12), seed=3)
    _reference_events(20, 500, 8, 12, s)
    assert np.all(np.diff(s.event_tick) >= 0)
    # Mean gap ~ 10 ticks -> about n / 10 trainers per tick.
    assert 1.7 < s.counts_per_tick()[50:].mean() < 2.3


def test_draw_is_deterministic_and_seed_dependent():
    a = schedule.draw(10, 200, seed=1)
    b = schedule.draw(10, 200, seed=1)
    c = schedule.draw(10, 200, seed=2)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_send_every_and_trainers():
    s = schedule.draw(5, 300, (2, 2), seed=0, send_every=3,
                      trainers=np.array([0, 1, 1, 1, 1], bool))
    assert 0 not in s.event_node
    for i in range(1, 5):
        send = s.event_send[s.event_node == i]
        np.testing.assert_array_equal(send, (np.arange(send.size) + 1) % 3 == 0)


@pytest.mark.parametrize("slots", [1, 3, 7, 50])
def test_pack_keeps_every_event_once_in_tick_order(slots):
    s = schedule.draw(30, 300, (8, 12), seed=0, first_tick="random")
    w = schedule.pack(s, slots)
    assert w.valid.sum() == s.event_tick.size
    got = sorted(zip(np.repeat(w.tick, slots)[w.valid.ravel()], w.node[w.valid]))
    assert got == sorted(zip(s.event_tick, s.event_node))
    assert np.all(np.diff(w.tick) >= 0)
    # Exactly one last chunk per busy tick, and it is the final chunk of that tick.
    busy = np.unique(s.event_tick)
    np.testing.assert_array_equal(w.tick[w.last], busy)


def test_pack_end_of_tick_adds_empty_chunks():
    s = schedule.draw(4, 40, (8, 12), seed=0)
    eot = (np.arange(40) + 1) % 10 == 0
    w = schedule.pack(s, 2, end_of_tick=eot)
    assert set(np.flatnonzero(eot)) <= set(w.tick[w.last])


def test_masked_pack_has_same_events():
    s = schedule.draw(6, 100, (3, 5), seed=0)
    w = schedule.pack_masked(s)
    assert w.slots == 6 and w.valid.sum() == s.event_tick.size
    np.testing.assert_array_equal(w.tick, np.unique(s.event_tick))


def test_choose_slots_balances_padding_and_overhead():
    counts = np.array([5] * 100)
    assert schedule.choose_slots(counts, overhead=0.0) in (1, 5)
    assert schedule.choose_slots(counts, overhead=2.0) == 5
    assert schedule.choose_slots(np.zeros(10, int)) == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="interval"):
        schedule.draw(3, 10, (5, 2), seed=0)
    with pytest.raises(ValueError, match="first_tick"):
        schedule.draw(3, 10, seed=0, first_tick="soon")
    with pytest.raises(ValueError, match="slots"):
        schedule.pack(schedule.draw(3, 10, seed=0), 0)

"""plot/simulate.py, which `make plot` draws: the real hold.Relay, driven as the shell drives it,
behaves in the simulation as holding does. Hand-made schedules: blocks every 10 minutes."""

import itertools
from dataclasses import replace

import pytest

from asyncln.policy import Policy
from plot.simulate import Assumptions, Outcome, Strategy, deliver, payment, sweep

A = Assumptions()  # asyncln's defaults: poll every 6 blocks, hold up to 1008 blocks


def every_ten_minutes():
    return itertools.count(10.0, 10.0)


def test_waking_beats_polling_when_b_is_back_within_a_poll():
    online = [(20.0, 30.0), (300.0, 400.0)]  # back after 2 blocks, for one block only
    wake = deliver(Strategy.WAKE, online, every_ten_minutes(), A)
    poll = deliver(Strategy.POLL, online, every_ten_minutes(), A)
    assert wake == Outcome(delivered=True, minutes=20.0, attempts=2)
    # Tries at arrival and every 6th block; the first poll that finds B online is at block 30.
    assert poll == Outcome(delivered=True, minutes=300.0, attempts=6)


def test_b_away_past_the_hold_limit_is_failed_back():
    online = [(10_090.0, 10_100.0)]  # back after 1009 blocks
    for strategy in (Strategy.POLL, Strategy.WAKE):
        # Tries at heights +0, +6, .. +1002; failed back at the give-up height, +1008.
        assert deliver(strategy, online, every_ten_minutes(), A) == Outcome(False, 10_080.0, 168)
    # The webhook brings B online after the push delay: delivered at the second try.
    assert deliver(Strategy.PUSH, online, every_ten_minutes(), A) == Outcome(True, 2.0, 2)


def test_the_relay_polls_every_asyncln_poll_blocks():
    a = replace(A, policy=Policy(poll_blocks=3, max_hold_blocks=60))
    assert deliver(Strategy.POLL, [(10_000.0, 10_010.0)], every_ten_minutes(), a) == \
        Outcome(False, 600.0, 20)


@pytest.mark.parametrize("mean_offline_hours", [0.5, 8, 64, 256])
def test_a_push_is_never_later_than_waking_nor_waking_than_polling(mean_offline_hours):
    for i in range(8):
        poll, wake, push = (payment(s, mean_offline_hours, i, A) for s in
                            (Strategy.POLL, Strategy.WAKE, Strategy.PUSH))
        assert push.delivered and push.minutes <= A.push_delay_minutes
        assert wake.delivered >= poll.delivered
        if wake.delivered:
            assert push.minutes <= wake.minutes
        if poll.delivered:
            assert wake.minutes <= poll.minutes


def test_the_same_seed_draws_the_same_picture():
    a = replace(A, payments=6, mean_offline_hours=(1, 32))
    points = sweep(a)
    assert points == sweep(a)
    assert points != sweep(replace(a, seed=2))
    assert [(p.strategy, p.mean_offline_hours) for p in points] == [
        (s, m) for s in Strategy for m in (1, 32)]


def test_make_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from plot import draw
    a = replace(A, payments=2, mean_offline_hours=(1, 32))
    path = tmp_path / "holding.png"
    draw.draw(sweep(a), a, str(path))
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

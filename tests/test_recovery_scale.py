"""Recovery at scale: the fast record restore reads exactly what the dataclasses read,
and a restart writes back only the records that changed."""

import json
from dataclasses import asdict, replace

import pytest
from factories import PAYMENT_HASH, channel, incoming, record
from hypothesis import given, settings
from hypothesis import strategies as st
from test_node import RecordingRpc

from asyncln import hold
from asyncln.node import Node
from asyncln.policy import Policy
from asyncln.record import HintHop, TrampolineRecord, restore
from asyncln.states import HoldState


def stored(**changes):
    held = hold.HeldPayment(PAYMENT_HASH, incoming(), record(), 1000, 1100, 1010,
                            attached=False)
    return json.loads(json.dumps(replace(held, **changes).to_json(), sort_keys=True))


hints = st.lists(st.lists(st.builds(HintHop, node_id=st.just("02" + "11" * 32),
                                    short_channel_id=st.just("1x2x3"),
                                    fee_base_msat=st.integers(0, 10), fee_ppm=st.integers(0, 10),
                                    cltv_delta=st.integers(0, 10)),
                          min_size=1, max_size=2).map(tuple), max_size=2).map(tuple)


@settings(max_examples=60, deadline=None)
@given(state=st.sampled_from(list(HoldState)), attempts=st.integers(0, 5),
       lost=st.lists(st.integers(1, 9), max_size=3).map(tuple), route_hints=hints,
       error=st.one_of(st.none(), st.text(max_size=5)), paid=st.one_of(st.none(), st.floats(0, 1)))
def test_restore_reads_what_init_reads(state, attempts, lost, route_hints, error, paid):
    held = hold.HeldPayment(PAYMENT_HASH, incoming(), replace(record(), route_hints=route_hints),
                            1000, 1100, 1010, attempts=attempts, state=state, last_error=error,
                            lost_partids=lost, paid_at=paid, attached=False)
    back = hold.HeldPayment.from_json(json.loads(json.dumps(held.to_json())))
    assert back == held and back.attached is False
    assert asdict(back) == asdict(held)


def test_restore_fills_defaults_and_refuses_what_init_refuses():
    data = stored()
    for optional in ("sent_msat", "woken_at", "paid_at", "lost_partids", "hops"):
        del data[optional]
    back = hold.HeldPayment.from_json(data)
    assert (back.sent_msat, back.woken_at, back.lost_partids, back.hops) == (None, None, (), 0)
    for broken in ({**stored(), "surprise": 1}, {k: v for k, v in stored().items() if k != "give_up_height"},
                   {**stored(), "attached": True},
                   {**stored(), "incoming": {**stored()["incoming"], "odd": 1}}):
        with pytest.raises(TypeError):
            hold.HeldPayment.from_json(broken)
    with pytest.raises(TypeError):
        restore(TrampolineRecord, {"amount_msat": 1})


def test_restore_runs_post_init_checks():
    data = record().to_json()
    data["final_tlvs"] = [[2, "00"]]  # even: refused, as TrampolineRecord(...) refuses it
    with pytest.raises(ValueError):
        TrampolineRecord.from_json(data)


def test_recovery_writes_nothing_unchanged():
    """A record whose channel lightningd does not list (its HTLC may be gone) is loaded
    as it is: the restart does not write 100,000 records back."""
    rpc = RecordingRpc(listpeerchannels={"channels": [channel(scid="9x9x9", alias="8x8x8")]},
                       listdatastore={"datastore": [
                           {"key": ["asyncln", "held", PAYMENT_HASH],
                            "string": json.dumps(stored(incoming=incoming(channel_id=None)))}]})
    node = Node(rpc, lambda *a, **k: None, Policy())
    assert PAYMENT_HASH in node.relay.held and not node.relay.unsaved

"""Route hints in the record: a private recipient is reachable only through them."""

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncln import hold
from asyncln.policy import Policy
from asyncln.record import (
    MAX_HINT_ROUTES,
    RECORD_TYPE,
    ROUTE_HINTS,
    HintHop,
    TrampolineRecord,
    decode_hints,
)
from asyncln.wire import DecodeError, encode_bigsize, encode_tlv_stream, encode_tu

from factories import RECIPIENT, incoming, node_id, payload, record

hops = st.builds(
    HintHop, node_id=st.integers(1, 50).map(node_id),
    short_channel_id=st.tuples(st.integers(0, 2**24 - 1), st.integers(0, 2**24 - 1),
                               st.integers(0, 2**16 - 1)).map(lambda t: "x".join(map(str, t))),
    fee_base_msat=st.integers(0, 2**32 - 1), fee_ppm=st.integers(0, 2**32 - 1),
    cltv_delta=st.integers(0, 2**16 - 1))
routes = st.lists(st.lists(hops, min_size=1, max_size=3).map(tuple),
                  min_size=1, max_size=MAX_HINT_ROUTES).map(tuple)


@given(routes)
def test_hints_round_trip_through_the_record_and_json(hints):
    rec = replace(record(), route_hints=hints)
    assert TrampolineRecord.decode(rec.encode()) == rec
    assert TrampolineRecord.from_json(rec.to_json()) == rec


@given(st.binary(max_size=300))
def test_malformed_hints_raise_only_decode_error(raw):
    try:
        decode_hints(raw)
    except DecodeError:
        pass


@pytest.mark.parametrize("raw, words", [
    (b"", "1 to 4 routes"),
    (b"\x00", "malformed"),
    (b"\x04" + b"\x02" * 51 * 4, "malformed"),
    (b"\x01" + b"\x02" * 50, "malformed"),
    (b"\x01" + b"\x05" * 51, "not a valid public key"),
])
def test_bad_hints_are_refused(raw, words):
    with pytest.raises(DecodeError, match=words):
        decode_hints(raw)


def test_a_record_with_bad_hints_is_rejected_and_nothing_is_held():
    raw = record().encode() + encode_tlv_stream({ROUTE_HINTS: b"\x01"})
    stream = encode_tlv_stream({2: encode_tu(110_000), 4: encode_tu(1500), RECORD_TYPE: raw})
    relay = hold.Relay(Policy(), 1000)
    verdict, actions = relay.htlc_accepted("aa" * 32, incoming(),
                                           encode_bigsize(len(stream)) + stream, 110_000, 1500)
    assert isinstance(verdict, hold.Reject) and actions == [] and not relay.held


def test_the_holder_routes_with_the_records_hints():
    hint = ((HintHop(node_id(3), "103x1x0", 1000, 10, 6),),)
    rec = replace(record(), route_hints=hint)
    relay = hold.Relay(Policy(), 1000)
    _, actions = relay.htlc_accepted("aa" * 32, incoming(), payload(rec), 110_000, 1500)
    find = next(a for a in actions if isinstance(a, hold.FindRoute))
    assert find.destination == RECIPIENT and find.hints == hint
    saved = next(a for a in actions if isinstance(a, hold.Persist)).held
    assert hold.HeldPayment.from_json(saved.to_json()).record.route_hints == hint

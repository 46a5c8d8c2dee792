"""A holder's onion layer: it round-trips, and every malformed stream is a DecodeError."""

import pytest
from coincurve import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncln import commitment
from asyncln import layer as L
from asyncln.layer import Layer
from asyncln.record import MAX_HINT_HOPS, MAX_HINT_ROUTES, HintHop, TrampolineRecord
from asyncln.wire import DecodeError, encode_tlv_stream, encode_tu

NODES = [PrivateKey(bytes([n]) * 32).public_key.format().hex() for n in range(1, 9)]
RECIPIENT, NEXT_HOLDER, PAYER = NODES[:3]
NOT_A_POINT = "02" + "ff" * 32  # x beyond the field prime: no such point
SECRET = "22" * 32
FUZZ = settings(max_examples=2000, deadline=None)

u32 = st.integers(0, 2**32 - 1)
nodes = st.sampled_from(NODES)
hops = st.builds(
    HintHop, nodes,
    st.tuples(st.integers(0, 2**24 - 1), st.integers(0, 2**24 - 1), st.integers(0, 2**16 - 1))
    .map(lambda s: "x".join(map(str, s))),
    u32, u32, st.integers(0, 2**16 - 1))
sealed = st.binary(min_size=commitment.SEALED_BYTES, max_size=commitment.SEALED_BYTES)
hints = st.lists(st.lists(hops, min_size=1, max_size=MAX_HINT_HOPS).map(tuple),
                 max_size=MAX_HINT_ROUTES).map(tuple)


@st.composite
def layers(draw):
    amount = draw(st.integers(1, 2**64 - 1))
    final = draw(st.booleans())
    inner = draw(st.none() | st.binary(min_size=1, max_size=100))
    node = draw(nodes) if final or inner is None or draw(st.booleans()) else None
    last = final or inner is not None  # the last holder's layer, or the payer's around a tail
    return Layer(
        amt_to_forward=amount, outgoing_cltv_delta=draw(u32), outgoing_node_id=node,
        please_poll=draw(st.booleans()), max_hold_blocks=draw(st.none() | u32),
        payment_secret=draw(st.binary(min_size=32, max_size=32)).hex() if final else None,
        total_msat=draw(st.integers(amount, 2**64 - 1)) if final else None,
        route_hints=draw(hints), report_to=draw(st.none() | nodes), inner_onion=inner,
        amount_commitment=draw(st.none() | sealed) if last else None)


def final_layer(**changes) -> Layer:
    fields = dict(amt_to_forward=100_000, outgoing_cltv_delta=18, outgoing_node_id=RECIPIENT,
                  max_hold_blocks=144, payment_secret=SECRET, total_msat=100_000,
                  report_to=PAYER)
    return Layer(**{**fields, **changes})


def stream(**changes) -> bytes:
    """A valid final layer's fields by type; a value of None drops the field."""
    fields = {L.AMT_TO_FORWARD: encode_tu(100_000), L.OUTGOING_CLTV_DELTA: encode_tu(18),
              L.PAYMENT_DATA: bytes.fromhex(SECRET) + encode_tu(100_000),
              L.OUTGOING_NODE_ID: bytes.fromhex(RECIPIENT), L.PLEASE_POLL: b""}
    fields.update({getattr(L, name): value for name, value in changes.items()})
    return encode_tlv_stream({t: v for t, v in fields.items() if v is not None})


@given(layers())
def test_roundtrip(layer):
    assert Layer.decode(layer.encode()) == layer
    assert layer.is_final == (layer.payment_secret is not None)


def test_stream_helper_is_valid():
    assert Layer.decode(stream()) == final_layer(max_hold_blocks=None, report_to=None)


@pytest.mark.parametrize("changes", [
    dict(AMT_TO_FORWARD=None),                                          # required
    dict(OUTGOING_CLTV_DELTA=None),                                     # required
    dict(AMT_TO_FORWARD=b""),                                           # amount 0
    dict(AMT_TO_FORWARD=b"\x00\x01"),                                   # non-minimal tu64
    dict(AMT_TO_FORWARD=b"\x01" * 9),                                   # longer than tu64
    dict(OUTGOING_CLTV_DELTA=b"\x01" * 5),                              # longer than tu32
    dict(MAX_HOLD_BLOCKS=b"\x01" * 5),
    dict(PAYMENT_DATA=bytes.fromhex(SECRET) + encode_tu(99_999)),        # total < amount
    dict(PAYMENT_DATA=bytes.fromhex(SECRET)),                           # total 0
    dict(PAYMENT_DATA=b"\x22" * 31),                                    # secret not 32 bytes
    dict(PAYMENT_DATA=bytes.fromhex(SECRET) + b"\x01" * 9),             # total longer than tu64
    dict(OUTGOING_NODE_ID=bytes.fromhex(NOT_A_POINT)),                  # not on the curve
    dict(OUTGOING_NODE_ID=bytes.fromhex(RECIPIENT)[:32]),               # not 33 bytes
    dict(REPORT_TO=bytes.fromhex(NOT_A_POINT)),
    dict(ROUTE_HINTS=b""),                                              # no route
    dict(ROUTE_HINTS=b"\x01" + bytes.fromhex(NOT_A_POINT) + bytes(18)), # hint node not a point
    dict(OUTGOING_NODE_ID=None, INNER_ONION=b"\x00" * 8),               # payment_data, no recipient
    dict(OUTGOING_NODE_ID=None, PAYMENT_DATA=None),                     # nowhere to go
    dict(OUTGOING_NODE_ID=None, PAYMENT_DATA=None, INNER_ONION=b""),    # empty inner onion
    dict(PLEASE_POLL=b"\x01"),                                          # a flag has no value
    dict(AMOUNT_COMMITMENT=bytes(commitment.SEALED_BYTES - 1)),         # not a sealed amount
    dict(AMOUNT_COMMITMENT=bytes(commitment.SEALED_BYTES + 1)),
    dict(PAYMENT_DATA=None, AMOUNT_COMMITMENT=bytes(commitment.SEALED_BYTES)),  # not the last
], ids=lambda c: "+".join(c))
def test_refusals(changes):
    with pytest.raises(DecodeError):
        Layer.decode(stream(**changes))


def test_unknown_types_even_refused_odd_ignored():
    good = stream()
    with pytest.raises(DecodeError):
        Layer.decode(good + b"\x12\x00")  # type 18: even, unknown
    assert Layer.decode(good + b"\xfd\x01\x01\x00") == Layer.decode(good)  # type 257: odd


def test_refuses_types_out_of_order():
    good = stream()
    with pytest.raises(DecodeError):
        Layer.decode(good + good[:4])  # amt_to_forward again, after higher types


@pytest.mark.parametrize("changes", [
    dict(amt_to_forward=0),
    dict(payment_secret=None),                     # total without secret
    dict(total_msat=None),                         # secret without total
    dict(total_msat=99_999),
    dict(outgoing_node_id=None, inner_onion=b"\x00"),  # payment_data needs the recipient
    dict(outgoing_node_id=None, payment_secret=None, total_msat=None),
    dict(inner_onion=b""),
])
def test_constructor_refuses_what_decode_would(changes):
    with pytest.raises(ValueError):
        final_layer(**changes)


def test_the_amount_commitment_is_even_type_16_and_rides_to_the_recipient():
    """Even: a holder that does not know it refuses the HTLC instead of short-paying blindly."""
    blob = bytes(range(commitment.SEALED_BYTES))
    layer = final_layer(amount_commitment=blob)
    assert L.AMOUNT_COMMITMENT == 16
    assert encode_tlv_stream({16: blob}) in layer.encode()
    assert Layer.decode(layer.encode()) == layer
    assert layer.to_record().final_tlvs == ((66105, blob),)
    assert final_layer().to_record().final_tlvs == ()


def test_inner_onion_stands_in_for_the_next_node():
    layer = Layer(amt_to_forward=5, outgoing_cltv_delta=40, outgoing_node_id=None,
                  inner_onion=b"\x00" + b"\x01" * 60)
    assert not layer.is_final
    assert Layer.decode(layer.encode()) == layer


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data):
    try:
        layer = Layer.decode(data)
    except DecodeError:
        return
    assert Layer.decode(layer.encode()) == layer


def mutated(draw_seed):
    return draw_seed.flatmap(lambda seed: st.one_of(
        st.integers(0, len(seed)).map(lambda n: seed[:n]),
        st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)).map(
            lambda p: seed[:p[0]] + bytes([p[1]]) + seed[p[0] + 1:]),
        st.tuples(st.integers(0, len(seed)), st.binary(min_size=1, max_size=8)).map(
            lambda p: seed[:p[0]] + p[1] + seed[p[0]:]),
        st.tuples(st.integers(0, len(seed) - 1), st.integers(1, 40)).map(
            lambda p: seed[:p[0]] + seed[p[0] + p[1]:]),
    ))


@FUZZ
@given(mutated(layers().map(lambda layer: layer.encode())))
def test_fuzz_mutated_layers(data):
    try:
        layer = Layer.decode(data)
    except DecodeError:
        return
    assert Layer.decode(layer.encode()) == layer


@given(layers().filter(lambda layer: layer.is_final))
def test_to_record_is_what_the_holder_delivers(layer):
    record = layer.to_record()
    assert record == TrampolineRecord(
        next_node=layer.outgoing_node_id, amount_msat=layer.amt_to_forward,
        final_cltv_delta=layer.outgoing_cltv_delta, payment_secret=layer.payment_secret,
        total_msat=layer.total_msat, please_poll=layer.please_poll,
        max_hold_blocks=layer.max_hold_blocks, report_to=layer.report_to,
        route_hints=layer.route_hints,
        final_tlvs=() if layer.amount_commitment is None else (
            (commitment.FINAL_TLV, layer.amount_commitment),))
    assert TrampolineRecord.decode(record.encode()) == record  # valid as today's record
    assert TrampolineRecord.from_json(record.to_json()) == record  # and as the holder stores it


def test_to_record_refuses_a_layer_that_forwards_to_another_holder():
    onward = Layer(amt_to_forward=100_000, outgoing_cltv_delta=400, outgoing_node_id=NEXT_HOLDER)
    with pytest.raises(ValueError):
        onward.to_record()

"""Every parser, fed arbitrary bytes: a result or DecodeError, nothing else."""

from factories import PAYMENT_HASH, RECIPIENT, incoming, payload, record
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncln import hold, messages
from asyncln.policy import Policy
from asyncln.record import TrampolineRecord, find_record
from asyncln.wire import (
    DecodeError,
    decode_bigsize,
    decode_tlv_stream,
    encode_tlv_stream,
    encode_tu,
)

FUZZ = settings(max_examples=2000, deadline=None)


def mutations(seed: bytes):
    """Truncations, bit flips and insertions of a valid encoding."""
    return st.one_of(
        st.integers(0, len(seed)).map(lambda n: seed[:n]),
        st.tuples(st.integers(0, max(len(seed) - 1, 0)), st.integers(0, 255)).map(
            lambda p: seed[:p[0]] + bytes([p[1]]) + seed[p[0] + 1:]),
        st.tuples(st.integers(0, len(seed)), st.binary(max_size=8)).map(
            lambda p: seed[:p[0]] + p[1] + seed[p[0]:]),
        st.binary(max_size=200),
    )


@FUZZ
@given(st.binary(max_size=64))
def test_bigsize_and_tlv_streams(data):
    for parse in (decode_bigsize, decode_tlv_stream):
        try:
            parse(data)
        except DecodeError:
            pass


@FUZZ
@given(mutations(record(max_hold=10).encode()))
def test_trampoline_record(data):
    try:
        rec = TrampolineRecord.decode(data)
    except DecodeError:
        return
    assert TrampolineRecord.decode(rec.encode()) == rec


MESSAGE_SEEDS = (
    Policy(1, 2, 3, 4, 5, 6, 7, True),
    messages.PaymentStatus(PAYMENT_HASH, "held", 1, 2, 3, "why"),
    messages.QueryInfo(),
    messages.Deposit(("lnbcrt1u1first", "lnbcrt2u1second")),
    messages.PoolStatus(3, 1, 50, 86400, ("expires too soon",)),
    messages.InvoiceRequest("01" * 8, RECIPIENT, 50_000),
    messages.InvoiceResponse("01" * 8, bolt11="lnbcrt1u1first"),
    messages.InvoiceResponse("01" * 8, error_code=2133, error="pool empty"),
    messages.Note(RECIPIENT, PAYMENT_HASH, "ab" * 60),
    messages.NoteAck(PAYMENT_HASH),
    messages.CancelRequest(PAYMENT_HASH),
    messages.CancelAnswer(PAYMENT_HASH, True, "cancelled"),
)
SEED_BYTES = [bytes.fromhex(messages.encode(m)) for m in MESSAGE_SEEDS]


def decodes_or_refuses(data: bytes):
    """Only DecodeError may escape, and whatever decodes re-encodes to the same message."""
    try:
        msg = messages.decode(data.hex())
    except DecodeError:
        return
    if msg is not None:
        assert messages.decode(messages.encode(msg)) == msg


@FUZZ
@given(st.one_of(*map(mutations, SEED_BYTES)))
def test_custom_messages(data):
    decodes_or_refuses(data)


@FUZZ
@given(st.sampled_from(messages.MESSAGE_TYPES), st.binary(max_size=300))
def test_every_message_type_with_random_bodies(msg_type, body):
    decodes_or_refuses(msg_type.to_bytes(2, "big") + body)


VALUES = st.one_of(
    st.integers(0, 2**64 - 1).map(encode_tu), st.binary(max_size=40),
    st.binary(min_size=560, max_size=563), st.just(bytes.fromhex(RECIPIENT)),
    st.lists(st.binary(max_size=4).map(lambda b: bytes([len(b)]) + b)).map(b"".join))


@FUZZ
@given(st.sampled_from(SEED_BYTES), st.integers(0, 16), st.one_of(st.none(), VALUES))
def test_custom_messages_with_one_field_replaced_or_dropped(seed, tlv, value):
    """Every other field valid, so each field's own checks are reached."""
    fields = {t: v for t, v in decode_tlv_stream(seed[2:], range(0, 16, 2)).items() if t != tlv}
    if value is not None:
        fields[tlv] = value
    decodes_or_refuses(seed[:2] + encode_tlv_stream(fields))


@FUZZ
@given(mutations(payload(record(), 200_000, 1500)))
def test_hook_payloads_never_crash_or_hold_bad_input(data):
    relay = hold.Relay(Policy(), 1000)
    try:
        found = find_record(data)
    except DecodeError:
        found = None
    verdict, actions = relay.htlc_accepted(PAYMENT_HASH, incoming(amount=200_000), data,
                                           200_000, 1500)
    if isinstance(verdict, hold.Hold):
        assert found is not None
        assert TrampolineRecord.decode(found[1])
    else:
        assert actions == [] and relay.held == {}


# --- the asyncln onion (record version 2): peel.read never raises ----------------------

from asyncln import failures as _failures, onion as _onion, peel as _peel, sphinx as _sphinx  # noqa: E402,E501
from asyncln.hold import Reject as _Reject  # noqa: E402
from asyncln.layer import Layer as _Layer  # noqa: E402
from asyncln.wire import encode_bigsize as _bigsize  # noqa: E402
from factories import PAYER, node_id  # noqa: E402

ONION_FUZZ = settings(max_examples=500, deadline=None)
_S, _R = node_id(4), node_id(5)
_S_SECRET, _R_SECRET = _onion.secret_key("44" * 32), _onion.secret_key("55" * 32)
_S_KEY, _R_KEY = _onion.public_key("44" * 32), _onion.public_key("55" * 32)
_FINAL = _Layer(amt_to_forward=100_000, outgoing_cltv_delta=18, outgoing_node_id=RECIPIENT,
                max_hold_blocks=36, payment_secret="22" * 32, total_msat=100_000, report_to=PAYER)
_FORWARD = _Layer(amt_to_forward=101_500, outgoing_cltv_delta=400, outgoing_node_id=_R,
                  max_hold_blocks=36, report_to=PAYER)
_REFUSAL_CODES = {_failures.INVALID_ONION_PAYLOAD, _failures.UNKNOWN_NEXT_TRAMPOLINE}


def _valid_v2_payload(*route):
    keys = [_S_KEY, _R_KEY][:len(route)]
    raw, _ = _onion.build(list(zip(keys, route)), PAYMENT_HASH, b"\x07" * 32)
    return _onion.final_payload(200_000, 1500, raw)


V2_SEEDS = [_valid_v2_payload(_FINAL), _valid_v2_payload(_FORWARD, _FINAL)]
heights = st.integers(0, 2000)
secrets = st.sampled_from([_S_SECRET, _S_SECRET, None, _R_SECRET])
us = st.sampled_from([_S, _R, RECIPIENT])


def read_never_raises(data, secret=_S_SECRET, me=_S, inc=None, height=1000):
    """None, a Reject with one of the failures peel may send, or a record to hold."""
    inc = inc or incoming(amount=200_000, cltv_expiry=1500)
    result = _peel.read(data, PAYMENT_HASH, secret, me, Policy(), inc, height)
    if result is None or isinstance(result, _Reject):
        if result is not None:
            code = int(result.failure_message[:4], 16)
            assert code in _REFUSAL_CODES, result
        return result
    record, offset, refusal = result
    assert isinstance(record, TrampolineRecord) and isinstance(offset, int) and offset >= 0
    assert record.next_node != me
    if record.next_onion is not None:
        assert len(bytes.fromhex(record.next_onion)) == _onion.PACKET_SIZE
        assert record.payment_secret == ""
    else:
        assert len(bytes.fromhex(record.payment_secret)) == 32
    if refusal is not None:
        code = int(refusal.failure_message[:4], 16)
        if code == _failures.INVALID_ONION_PAYLOAD:  # multi-part, named by the onion's TLV
            assert record.total_msat != record.amount_msat and record.next_onion is None
            assert refusal.failure_message == _failures.invalid_onion_payload(_onion.ONION_TLV,
                                                                              offset)
        else:
            assert code == _failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT
    return result


@ONION_FUZZ
@given(st.binary(max_size=900), secrets, us, heights)
def test_peel_read_of_random_payloads(data, secret, me, height):
    read_never_raises(data, secret, me, height=height)


@ONION_FUZZ
@given(st.binary(max_size=_onion.PACKET_SIZE + 4), secrets, heights)
def test_peel_read_of_random_packets_in_a_well_formed_payload(packet, secret, height):
    result = read_never_raises(_onion.final_payload(200_000, 1500, packet), secret, height=height)
    assert result is not None  # the onion is there, so we answer for it


@ONION_FUZZ
@given(st.one_of(*map(mutations, V2_SEEDS)), secrets, us, heights)
def test_peel_read_of_mutated_v2_payloads(data, secret, me, height):
    read_never_raises(data, secret, me, height=height)


def _authentic(layers_plaintext, size=_onion.PAYLOAD_SIZE):
    """A packet to S (then R) with the right MAC around whatever plaintext we like."""
    keys = [bytes.fromhex(_S_KEY), bytes.fromhex(_R_KEY)]
    hops = [(key, _bigsize(len(p)) + p) for key, p in zip(keys, layers_plaintext)]
    built, _ = _sphinx.create_onion(b"\x07" * 32, hops, bytes.fromhex(PAYMENT_HASH), size)
    return built.serialize()


layer_streams = st.one_of(st.binary(max_size=250), mutations(_FINAL.encode()),
                          mutations(_FORWARD.encode()))


@ONION_FUZZ
@given(st.lists(layer_streams, min_size=1, max_size=2), us, heights,
       st.integers(0, 10**6), st.integers(0, 3000))
def test_peel_read_of_authentic_packets_with_arbitrary_layers(streams, me, height, amount, expiry):
    """Past the MAC: the layer decoder and every check after it see arbitrary bytes."""
    try:
        packet = _authentic(streams)
    except ValueError:
        return  # does not fit the onion: the payer could not have built it either
    inc = incoming(amount=amount, cltv_expiry=expiry)
    read_never_raises(_onion.final_payload(amount, expiry, packet), inc=inc, me=me,
                      height=height)


@ONION_FUZZ
@given(st.lists(layer_streams, min_size=1, max_size=2), mutations(_FORWARD.encode()),
       st.integers(0, 10**6), st.integers(0, 3000))
def test_peel_read_of_layers_carrying_an_arbitrary_payee_tail(tail_streams, outer_stream, amount,
                                                              expiry):
    """The payee's tail (inner_onion, TLV 20) gets the same treatment as the outer layer."""
    try:
        tail = _authentic(tail_streams, _onion.TAIL_PAYLOAD_SIZE)
    except ValueError:
        return
    outer = _Layer(amt_to_forward=100_000, outgoing_cltv_delta=18, outgoing_node_id=None,
                   max_hold_blocks=36, inner_onion=tail)
    inc = incoming(amount=amount, cltv_expiry=expiry)
    for stream in (outer.encode(), outer_stream):
        try:
            packet = _authentic([stream])
        except ValueError:
            continue
        read_never_raises(_onion.final_payload(amount, expiry, packet), inc=inc)

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

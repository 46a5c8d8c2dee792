"""Every parser, fed arbitrary bytes: a result or DecodeError, nothing else."""

from factories import PAYER, PAYMENT_HASH, incoming, payload, record
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncln import hold, messages
from asyncln.policy import Policy
from asyncln.record import TrampolineRecord, find_record
from asyncln.wire import DecodeError, decode_bigsize, decode_tlv_stream

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


@FUZZ
@given(st.one_of(*(mutations(bytes.fromhex(messages.encode(m))) for m in (
    Policy(1, 2, 3, 4, 5, 6, 7, True),
    messages.PaymentStatus(PAYMENT_HASH, "held", 1, 2, 3, "why"),
    messages.QueryInfo()))))
def test_custom_messages(data):
    try:
        msg = messages.decode(data.hex())
    except DecodeError:
        return
    if msg is not None:
        assert messages.decode(messages.encode(msg)) == msg


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

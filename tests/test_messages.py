"""Custom messages: every one round-trips, every malformed one is refused as a whole."""

import pytest
from coincurve import PrivateKey
from factories import PAYMENT_HASH, RECIPIENT
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncln import messages
from asyncln.errors import Code
from asyncln.messages import (
    CancelAnswer,
    CancelRequest,
    Deposit,
    InvoiceRequest,
    InvoiceResponse,
    Note,
    NoteAck,
    NoteAnswer,
    PaymentStatus,
    PoolStatus,
)
from asyncln.policy import Policy
from asyncln.states import HoldState
from asyncln.wire import DecodeError, decode_tlv_stream, encode_tlv_stream

OFF_CURVE = "03" + "bb" * 32  # 33 bytes, 03 prefix, but no point has this x
BOLT11 = "lnbcrt10u1pjexample0invoice"
REQUEST_ID = "0123456789abcdef"


def raw(msg_type: int, fields: dict, version: bytes = b"\x01") -> str:
    """A message built by hand, so it can be one that encode() would refuse to build."""
    return (msg_type.to_bytes(2, "big") + encode_tlv_stream({0: version, **fields})).hex()


def test_message_types_are_thirteen_odd_numbers_in_sequence():
    assert messages.MESSAGE_TYPES == tuple(range(44701, 44726, 2))
    assert (messages.DEPOSIT, messages.CANCEL_ANSWER, messages.NOTE_ANSWER) == (
        44709, 44723, 44725)


# Computed with the encoder before it became table-driven: peers running that
# version must keep reading what we send.
@pytest.mark.parametrize("msg,encoded", [
    (messages.QueryInfo(), "ae9d000101"),
    (messages.Online(), "aea3000101"),
    (Policy(6, 1008, 144, 1000, 500, 50, 10**9, True),
     "ae9f0001010100020203e8040201f4060106080203f00a01900c043b9aca000e01320f022710"),
    (Policy(1, 1, 1, 0, 0, 0, 0, False),
     "ae9f000101020004000601010801010a01010c000e000f022710"),
    (Policy(min_held_msat=0),
     "ae9f0001010100020203e8040203e8060106080203f00a01900c043b9aca000e01640f00"),
    (PaymentStatus(PAYMENT_HASH, HoldState.HELD, 700, 606, 2, "peer offline"),
     "aea1000101010c70656572206f66666c696e650220" + PAYMENT_HASH
     + "040101060202bc0802025e0a0102"),
    (PaymentStatus(PAYMENT_HASH, HoldState.FAILED, 700, 606, 0, ""),
     "aea10001010100022002d449a31fbb267c8f352e9968a79e3e5fc95c1bbeaa502fd6454ebde5a4bedc"
     "040102060202bc0802025e0a00"),
    (PaymentStatus(PAYMENT_HASH, HoldState.HELD, 1, 1, 1, "é" * 300),
     "aea100010101fd0190" + "c3a9" * 200 + "0220" + PAYMENT_HASH + "0401010601010801010a0101"),
])
def test_first_four_messages_keep_their_bytes(msg, encoded):
    assert messages.encode(msg) == encoded


nodes = st.integers(1, 2**32).map(lambda n: PrivateKey.from_int(n).public_key.format().hex())
hashes = st.binary(min_size=32, max_size=32).map(bytes.hex)
request_ids = st.binary(min_size=8, max_size=8).map(bytes.hex)
u64s = st.integers(0, 2**64 - 1)
reasons = st.text(max_size=50)  # at most 200 bytes: nothing to clip


def bolt11s(max_size=messages.MAX_BOLT11_CHARS):
    return st.text(st.characters(max_codepoint=127), min_size=1, max_size=max_size)


MESSAGES = {
    "deposit": st.builds(Deposit, st.lists(bolt11s(600), max_size=messages.MAX_DEPOSIT_BATCH)
                         .map(tuple)),
    "deposit_with_payee_key": st.builds(
        Deposit, st.lists(bolt11s(300), max_size=4).map(tuple),
        st.lists(st.binary(min_size=1, max_size=messages.MAX_OFFER_BYTES).map(bytes.hex),
                 max_size=4).map(tuple), nodes,
        st.none() | st.binary(min_size=8, max_size=messages.MAX_DER_BYTES).map(bytes.hex)),
    "pool_status": st.builds(PoolStatus, u64s, st.integers(0, messages.MAX_DEPOSIT_BATCH), u64s,
                             u64s, st.lists(reasons, max_size=messages.MAX_DEPOSIT_BATCH)
                             .map(tuple)),
    "invoice_request": st.builds(InvoiceRequest, request_ids, nodes, st.integers(1, 2**64 - 1)),
    "invoice_response": st.one_of(
        st.builds(InvoiceResponse, request_ids, bolt11s(), st.none(), reasons),
        st.builds(InvoiceResponse, request_ids, st.none(), st.integers(0, 2**16 - 1), reasons)),
    "note": st.builds(Note, nodes, hashes,
                      st.binary(min_size=1, max_size=messages.MAX_SEALED_BYTES).map(bytes.hex),
                      st.booleans()),
    "note_answer": st.builds(NoteAnswer, hashes, st.booleans(), reasons,
                             st.none() | st.integers(0, 2**16 - 1)),
    "note_ack": st.builds(NoteAck, hashes),
    "cancel_request": st.builds(CancelRequest, hashes),
    "cancel_answer": st.builds(CancelAnswer, hashes, st.booleans(), reasons),
    "payment_status": st.builds(PaymentStatus, hashes, st.sampled_from([HoldState.HELD,
                                                                         HoldState.FAILED]),
                                u64s, u64s, u64s, reasons),
    "info": st.builds(Policy, u64s, u64s, u64s, u64s, u64s, u64s, u64s, st.booleans(), u64s),
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_roundtrip(name, data):
    msg = data.draw(MESSAGES[name])
    assert messages.decode(messages.encode(msg)) == msg


@pytest.mark.parametrize("msg", [
    messages.QueryInfo(), messages.Online(),
    Policy(6, 1008, 144, 1000, 500, 50, 10**9, True), Policy(1, 1, 1, 0, 0, 0, 0, False),
    PaymentStatus(PAYMENT_HASH, "held", 700, 606, 2, "peer offline"),  # the payer's plain strings
    PaymentStatus(PAYMENT_HASH, "failed", 700, 606, 2, ""),
])
def test_first_four_messages_roundtrip(msg):
    assert messages.decode(messages.encode(msg)) == msg


@pytest.mark.parametrize("payload,message", [
    ("ae", "shorter than its type"),
    ("zz", "not hex"),
    ("ae9d", "unsupported message version none"),
    ("ae9d000102", "unsupported message version 02"),
    ("ae9f000101", "lacks fields"),
    ("aea1000101" + "02" + "1f" + "00" * 31, "lacks fields"),
])
def test_payloads_that_are_no_message_are_refused(payload, message):
    with pytest.raises(DecodeError, match=message):
        messages.decode(payload)


def test_foreign_message_types_are_not_ours():
    assert messages.decode("8001" + "00") is None


SAMPLES = [
    Deposit((BOLT11, BOLT11 + "2")),
    Deposit(()),
    PoolStatus(level=12, accepted=2, max_invoices=50, min_expiry_seconds=86400,
               refused=("expires too soon",)),
    InvoiceRequest(REQUEST_ID, RECIPIENT, 50_000),
    InvoiceResponse(REQUEST_ID, bolt11=BOLT11),
    InvoiceResponse(REQUEST_ID, error_code=Code.POOL_EMPTY, error="no invoice for 50000 msat"),
    Note(RECIPIENT, PAYMENT_HASH, "ab" * messages.MAX_SEALED_BYTES),
    NoteAck(PAYMENT_HASH),
    CancelRequest(PAYMENT_HASH),
    CancelAnswer(PAYMENT_HASH, False, "an attempt is in flight"),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_unknown_odd_fields_are_ignored_and_unknown_even_ones_refused(msg):
    data = bytes.fromhex(messages.encode(msg))
    fields = decode_tlv_stream(data[2:], range(0, 100, 2))
    msg_type = int.from_bytes(data[:2], "big")
    assert messages.decode(raw(msg_type, {**fields, 97: b"new", 99: b""})) == msg
    with pytest.raises(DecodeError, match="unknown even"):
        messages.decode(raw(msg_type, {**fields, 98: b""}))


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("version,shown", [(None, "none"), (b"\x02", "02"), (b"\x01\x00", "0100"),
                                           (b"", "none")])
def test_other_versions_are_refused(msg, version, shown):
    data = bytes.fromhex(messages.encode(msg))
    fields = decode_tlv_stream(data[2:], range(0, 100, 2))
    del fields[0]
    if version is not None:
        fields[0] = version
    with pytest.raises(DecodeError, match=f"unsupported message version {shown}$"):
        messages.decode((data[:2] + encode_tlv_stream(fields)).hex())


def items(*values: bytes) -> bytes:
    """A list field: each item prefixed with its (one-byte, below 253) BigSize length."""
    return b"".join(bytes([len(v)]) + v for v in values)


HASH = bytes.fromhex(PAYMENT_HASH)
NODE = bytes.fromhex(RECIPIENT)
ID = bytes.fromhex(REQUEST_ID)
INVOICE = BOLT11.encode()
POOL = {2: b"\x0c", 4: b"\x02", 6: b"\x32", 8: b"\x01\x51\x80"}
LONG_INVOICE = b"\xfd\x08\x01" + b"l" * 2049


@pytest.mark.parametrize("msg_type,fields,message", [
    (messages.DEPOSIT, {}, "lacks fields \\[2\\]"),
    (messages.DEPOSIT, {2: items(*[INVOICE] * 33)}, "invoices has more than 32 items"),
    (messages.DEPOSIT, {2: items(INVOICE, "lnbc€".encode())}, "invoices item 1 is not ASCII"),
    (messages.DEPOSIT, {2: items(b"")}, "invoices item 0 must be 1 to 2048 characters"),
    (messages.DEPOSIT, {2: LONG_INVOICE}, "invoices item 0 must be 1 to 2048 characters"),
    (messages.DEPOSIT, {2: items(INVOICE)[:-1]}, "invoices item 0 is truncated"),
    (messages.DEPOSIT, {2: b"\xfd\x00\x05" + b"l" * 5}, "non-minimal bigsize"),
    (messages.POOL_STATUS, {**POOL, 4: b"\x21"}, "accepted must be at most 32"),
    (messages.POOL_STATUS, {**POOL, 1: items(*[b"no"] * 33)}, "refused has more than 32 items"),
    (messages.POOL_STATUS, {**POOL, 1: items(b"x" * 201)}, "refused item 0 is longer than 200"),
    (messages.POOL_STATUS, {**POOL, 1: items(b"\xff")}, "refused item 0 is not UTF-8"),
    (messages.POOL_STATUS, {**POOL, 6: b"\x00\x32"}, "non-minimal truncated integer"),
    (messages.POOL_STATUS, {4: b"\x02"}, "lacks fields \\[2, 6, 8\\]"),
    (messages.INVOICE_REQUEST, {2: ID[:7], 4: NODE, 6: b"\x01"}, "request_id must be 8 bytes"),
    (messages.INVOICE_REQUEST, {2: ID + b"\x00", 4: NODE, 6: b"\x01"}, "request_id must be 8"),
    (messages.INVOICE_REQUEST, {2: ID, 4: bytes.fromhex(OFF_CURVE), 6: b"\x01"},
     "recipient is not a valid public key"),
    (messages.INVOICE_REQUEST, {2: ID, 4: HASH, 6: b"\x01"}, "recipient is not a valid"),
    (messages.INVOICE_REQUEST, {2: ID, 4: NODE, 6: b""}, "amount_msat must be at least 1"),
    (messages.INVOICE_REQUEST, {2: ID, 4: NODE, 6: b"\x01" * 9}, "amount_msat tu64 too long"),
    (messages.INVOICE_REQUEST, {2: ID, 4: NODE}, "lacks fields \\[6\\]"),
    (messages.INVOICE_RESPONSE, {2: ID}, "exactly one of bolt11, offer and error_code"),
    (messages.INVOICE_RESPONSE, {2: ID, 4: INVOICE, 6: b"\x08\x55"}, "exactly one of"),
    (messages.INVOICE_RESPONSE, {2: ID, 6: b"\x01\x08\x55"}, "error_code tu16 too long"),
    (messages.INVOICE_RESPONSE, {2: ID, 4: b"lnbc\x80"}, "bolt11 is not ASCII"),
    (messages.INVOICE_RESPONSE, {2: ID, 4: b"l" * 2049}, "bolt11 must be 1 to 2048"),
    (messages.INVOICE_RESPONSE, {1: b"x" * 201, 2: ID, 6: b"\x08\x55"}, "error is longer than"),
    (messages.INVOICE_RESPONSE, {4: INVOICE}, "lacks fields \\[2\\]"),
    (messages.NOTE, {2: NODE, 4: HASH, 6: b""}, "sealed must be 1 to 561 bytes"),
    (messages.NOTE, {2: NODE, 4: HASH, 6: b"\x01" * 562}, "sealed must be 1 to 561 bytes"),
    (messages.NOTE, {2: NODE, 4: HASH[:31], 6: b"\x01"}, "payment_hash must be 32 bytes"),
    (messages.NOTE, {2: bytes.fromhex(OFF_CURVE), 4: HASH, 6: b"\x01"}, "recipient is not a"),
    (messages.NOTE, {2: NODE, 6: b"\x01"}, "lacks fields \\[4\\]"),
    (messages.NOTE_ACK, {2: HASH + b"\x00"}, "payment_hash must be 32 bytes"),
    (messages.NOTE_ACK, {}, "lacks fields \\[2\\]"),
    (messages.CANCEL_REQUEST, {2: HASH[:31]}, "payment_hash must be 32 bytes"),
    (messages.CANCEL_REQUEST, {}, "lacks fields \\[2\\]"),
    (messages.CANCEL_ANSWER, {2: HASH, 4: b"\x02"}, "accepted has an unknown code"),
    (messages.CANCEL_ANSWER, {2: HASH, 4: b""}, "accepted has an unknown code"),
    (messages.CANCEL_ANSWER, {2: HASH, 4: b"\x00\x01"}, "accepted has an unknown code"),
    (messages.CANCEL_ANSWER, {1: b"\xc3", 2: HASH, 4: b"\x01"}, "reason is not UTF-8"),
    (messages.CANCEL_ANSWER, {2: HASH}, "lacks fields \\[4\\]"),
    (messages.INFO, {1: b"\x01", 2: b"", 4: b"", 6: b"", 8: b"", 10: b"", 12: b"", 14: b""},
     "relay carries no value"),
    (messages.PAYMENT_STATUS, {2: HASH, 4: b"\x03", 6: b"", 8: b"", 10: b""},
     "state has an unknown code"),
    (messages.PAYMENT_STATUS, {1: b"x" * 401, 2: HASH, 4: b"\x01", 6: b"", 8: b"", 10: b""},
     "reason is longer than 400 bytes"),
])
def test_malformed_messages_are_refused(msg_type, fields, message):
    with pytest.raises(DecodeError, match=message):
        messages.decode(raw(msg_type, fields))


def test_a_refusal_names_the_field_type():
    with pytest.raises(DecodeError) as refused:
        messages.decode(raw(messages.NOTE, {2: NODE, 4: HASH, 6: b""}))
    assert refused.value.tlv_type == 6


def test_odd_texts_are_clipped_on_a_character_boundary():
    long = "é" * 150  # 300 bytes
    status = PoolStatus(1, 0, 10, 3600, refused=(long, "short"))
    assert messages.decode(messages.encode(status)).refused == ("é" * 100, "short")
    answer = messages.decode(messages.encode(CancelAnswer(PAYMENT_HASH, False, long)))
    assert answer.reason == "é" * 100
    response = InvoiceResponse(REQUEST_ID, error_code=Code.RATE_LIMITED, error=long)
    assert messages.decode(messages.encode(response)).error == "é" * 100
    status = PaymentStatus(PAYMENT_HASH, "held", 1, 1, 1, "é" * 300)
    assert messages.decode(messages.encode(status)).reason == "é" * 200


def test_an_empty_deposit_is_a_pool_query():
    assert messages.encode(Deposit(())) == "aea5000101" + "0200"
    assert messages.decode("aea5000101" + "0200") == Deposit(())


@pytest.mark.parametrize("msg,message", [
    (InvoiceResponse(REQUEST_ID), "exactly one"),
    (InvoiceResponse(REQUEST_ID, BOLT11, Code.POOL_EMPTY), "exactly one"),
    (InvoiceResponse(REQUEST_ID, error_code=70000), "tu16 too long"),
    (Deposit((BOLT11,) * 33), "more than 32"),
    (Deposit(("lnbc€",)), "not ASCII"),
    (Deposit(("",)), "1 to 2048"),
    (InvoiceRequest(REQUEST_ID, OFF_CURVE, 1), "recipient is not a valid public key"),
    (InvoiceRequest(REQUEST_ID, RECIPIENT, 0), "at least 1"),
    (InvoiceRequest("00", RECIPIENT, 1), "request_id must be 8 bytes"),
    (Note(RECIPIENT, PAYMENT_HASH, ""), "1 to 561"),
    (NoteAck("zz"), "non-hexadecimal"),
    (PoolStatus(0, 33, 0, 0), "at most 32"),
    (PoolStatus(0, 0, 0, 0, ("no",) * 33), "more than 32"),
    (PaymentStatus(PAYMENT_HASH, HoldState.FORWARDING, 1, 1, 1, ""), "no wire code"),
])
def test_encode_refuses_what_a_peer_would_refuse(msg, message):
    with pytest.raises(ValueError, match=message):
        messages.encode(msg)


def test_encode_refuses_more_than_a_lightning_message_holds():
    # type 2 + version 3 + field header 4 + 31 items of 3 + 2048 + one of 3 + 1942 = 65535.
    fits = Deposit(("l" * 2048,) * 31 + ("l" * 1942,))
    assert len(messages.encode(fits)) // 2 == messages.MAX_MESSAGE_BYTES
    with pytest.raises(ValueError, match="65536 bytes, more than the 65535"):
        messages.encode(Deposit(("l" * 2048,) * 31 + ("l" * 1943,)))
    with pytest.raises(ValueError, match="more than the 65535"):
        messages.encode(Deposit(("l" * 2048,) * 32))


# --- issue 11, item 4: the wire of an authenticated Rod ------------------------------------

def test_the_new_fields_are_odd_so_an_old_peer_ignores_them():
    """An old Rod ignores a payee key's signature and a note's private flag (and files
    nothing it cannot check); an old payer ignores note_answer, a type it does not know."""
    sig = "30" * 8
    deposit = bytes.fromhex(messages.encode(Deposit((BOLT11,), (), RECIPIENT, sig)))
    assert decode_tlv_stream(deposit[2:], [0, 2])[7] == bytes.fromhex(sig)
    note = bytes.fromhex(messages.encode(Note(RECIPIENT, PAYMENT_HASH, "ab", private=True)))
    assert decode_tlv_stream(note[2:], [0, 2, 4, 6])[7] == b""
    assert messages.NOTE_ANSWER % 2 == 1


@pytest.mark.parametrize("fields, problem", [
    ({2: b"", 7: b"\x30" * 8}, "payee key signature without a payee key"),
    ({2: b"", 5: bytes.fromhex(RECIPIENT), 7: b"\x30" * 7}, "payee_key_sig must be 8 to 72"),
    ({2: b"", 5: bytes.fromhex(RECIPIENT), 7: b"\x30" * 73}, "payee_key_sig must be 8 to 72"),
])
def test_a_deposit_with_a_bad_payee_key_signature_is_refused(fields, problem):
    with pytest.raises(DecodeError, match=problem):
        messages.decode(raw(messages.DEPOSIT, fields))


@pytest.mark.parametrize("fields, problem", [
    ({4: b"\x01"}, "lacks fields \\[2\\]"),
    ({2: bytes.fromhex(PAYMENT_HASH)}, "lacks fields \\[4\\]"),
    ({2: bytes.fromhex(PAYMENT_HASH), 4: b"\x02"}, "stored has an unknown code"),
    ({2: bytes.fromhex(PAYMENT_HASH), 4: b"\x01", 1: b"\xc3"}, "reason is not UTF-8"),
])
def test_a_malformed_note_answer_is_refused(fields, problem):
    with pytest.raises(DecodeError, match=problem):
        messages.decode(raw(messages.NOTE_ANSWER, fields))

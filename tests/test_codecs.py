"""Wire primitives, the onion record and failure encodings (custom messages: test_messages.py)."""

import json
from dataclasses import replace

import pytest
from factories import PAYMENT_HASH, incoming, node_id, record

from asyncln import commitment, failures
from asyncln.hold import HeldPayment
from asyncln.record import FinalPayload, TrampolineRecord, find_record
from asyncln.wire import (
    DecodeError,
    decode_bigsize,
    decode_tlv_stream,
    decode_tu,
    encode_bigsize,
    encode_tlv_stream,
    encode_tu,
)


@pytest.mark.parametrize("value,encoded", [
    (0, "00"), (0xFC, "fc"), (0xFD, "fd00fd"), (0xFFFF, "fdffff"),
    (0x10000, "fe00010000"), (0xFFFFFFFF, "feffffffff"),
    (0x100000000, "ff0000000100000000"),
])
def test_bigsize_matches_bolt1_vectors(value, encoded):
    assert encode_bigsize(value).hex() == encoded
    assert decode_bigsize(bytes.fromhex(encoded)) == (value, len(encoded) // 2)


@pytest.mark.parametrize("bad", ["fd00fc", "fe0000ffff", "ff00000000ffffffff", "fd00", "fe", ""])
def test_bigsize_rejects_non_minimal_and_truncated(bad):
    with pytest.raises(DecodeError):
        decode_bigsize(bytes.fromhex(bad))


def test_truncated_integers_are_minimal():
    assert encode_tu(0) == b"" and encode_tu(256) == b"\x01\x00"
    assert decode_tu(b"\x01\x00", 8) == 256
    with pytest.raises(DecodeError):
        decode_tu(b"\x00\x01", 8)
    with pytest.raises(DecodeError):
        decode_tu(b"\x01" * 9, 8)


def test_tlv_stream_rules():
    stream = encode_tlv_stream({1: b"a", 3: b"bc"})
    assert decode_tlv_stream(stream) == {1: b"a", 3: b"bc"}
    with pytest.raises(DecodeError, match="unknown even"):
        decode_tlv_stream(encode_tlv_stream({2: b"x"}))
    assert decode_tlv_stream(encode_tlv_stream({2: b"x"}), known_even=[2]) == {2: b"x"}
    with pytest.raises(DecodeError, match="out of order"):
        decode_tlv_stream(bytes.fromhex("0301620101 61".replace(" ", "")))
    with pytest.raises(DecodeError, match="truncated"):
        decode_tlv_stream(bytes.fromhex("0105ab"))


def test_record_roundtrip_and_payload_lookup():
    rec = record(max_hold=30)
    assert TrampolineRecord.decode(rec.encode()) == rec
    no_poll = record(please_poll=False)
    assert TrampolineRecord.decode(no_poll.encode()) == no_poll
    payload = FinalPayload(110_000, 1500, rec).encode()
    offset, raw = find_record(payload)
    assert TrampolineRecord.decode(raw) == rec
    stream = decode_tlv_stream(payload[1:], known_even=[2, 4])
    assert offset == len(encode_tlv_stream({2: stream[2], 4: stream[4]}))
    assert decode_tu(stream[2], 8) == 110_000


def test_a_clear_record_carries_the_amount_commitment_as_even_type_16():
    """Version 1 too: a payer paying a deposited invoice through a holder without an onion key."""
    blob = bytes(range(commitment.SEALED_BYTES))
    rec = replace(record(), final_tlvs=((commitment.FINAL_TLV, blob),))
    fields = decode_tlv_stream(rec.encode()[1:], range(0, 18, 2))
    assert fields[16] == blob
    assert TrampolineRecord.decode(rec.encode()) == rec
    assert TrampolineRecord.from_json(json.loads(json.dumps(rec.to_json()))) == rec
    assert TrampolineRecord.from_json(record().to_json()) == record()
    held = HeldPayment(PAYMENT_HASH, incoming(), rec, 1000, 1100, 1000)  # as the holder saves it
    assert HeldPayment.from_json(json.loads(json.dumps(held.to_json()))) == held
    short = b"\x01" + encode_tlv_stream({**fields, 16: blob[:-1]})
    with pytest.raises(DecodeError, match="amount commitment"):
        TrampolineRecord.decode(short)


def test_payload_without_record_and_cln_fact_payload():
    # The payload lightningd showed in CLN-FACTS: amt 2, cltv 4 and odd type 65537.
    assert find_record(bytes.fromhex("0f02020102040203e8fe000100010101")) is None


@pytest.mark.parametrize("mutate,message", [
    (lambda raw: b"", "empty"),
    (lambda raw: b"\x02" + raw[1:], "unknown asyncln record version 2"),
    (lambda raw: raw[:-3], "truncated"),
    (lambda raw: raw + encode_tlv_stream({14: b"\x01"}), "unknown even"),
    (lambda raw: raw + encode_tlv_stream({13: b"\x01"}), None),  # unknown odd: ignored
])
def test_record_rejects_bad_input(mutate, message):
    raw = mutate(record().encode())
    if message is None:
        assert TrampolineRecord.decode(raw) == record()
        return
    with pytest.raises(DecodeError, match=message):
        TrampolineRecord.decode(raw)


KEY = bytes.fromhex(node_id(2))
OFF_CURVE = b"\x03" + b"\xbb" * 32  # 33 bytes, 03 prefix, but no point has this x


@pytest.mark.parametrize("fields,message", [
    ({0: b"\x02" + b"\x11" * 31, 2: b"\x01", 4: b"\x12", 6: b"\x00" * 32}, "valid public key"),
    ({0: OFF_CURVE, 2: b"\x01", 4: b"\x12", 6: b"\x00" * 32}, "valid public key"),
    ({0: KEY, 2: b"\x01", 4: b"\x12", 6: b"\x00" * 32, 11: OFF_CURVE}, "report_to"),
    ({0: KEY, 2: b"\x01", 4: b"\x12", 6: b"\x00" * 31}, "32 bytes"),
    ({0: KEY, 4: b"\x12", 6: b"\x00" * 32}, "lacks field 2"),
    ({0: KEY, 2: b"\x05", 4: b"\x12", 6: b"\x00" * 32, 8: b"\x04"}, "exceeds total"),
    ({0: KEY, 1: b"\x01", 2: b"\x05", 4: b"\x12", 6: b"\x00" * 32}, "please_poll"),
])
def test_record_rejects_inconsistent_fields(fields, message):
    with pytest.raises(DecodeError, match=message):
        TrampolineRecord.decode(b"\x01" + encode_tlv_stream(fields))


def test_failure_encodings():
    assert failures.temporary_node_failure() == "2002"
    assert failures.invalid_onion_payload(66101, 12) == "4016" + "fe00010235" + "000c"
    assert failures.final_incorrect_cltv_expiry(500) == "0012000001f4"
    assert failures.final_incorrect_htlc_amount(5) == "00130000000000000005"
    # bolts #836: NODE|26 with u32 fee_base_msat, u32 fee_proportional_millionths, u16 cltv_expiry_delta
    assert failures.trampoline_fee_or_expiry_insufficient(1000, 100, 150) == \
        "201a" + "000003e8" + "00000064" + "0096"
    assert failures.unknown_next_trampoline() == "401b"
    assert failures.temporary_trampoline_failure() == "2019"
    # BOLT 4: PERM|15 with u64 htlc_msat and u32 height, as lightningd answers a wrong invoice
    assert failures.incorrect_or_unknown_payment_details(5, 1000) == \
        "400f" + "0000000000000005" + "000003e8"


def test_final_tlvs_survive_a_restart_and_old_records_load_without_them():
    """Issue 11.7: the odd TLVs a last holder carries to the recipient are in its saved record."""
    from asyncln.hold import HeldPayment
    rec = replace(record(), final_tlvs=((66105, b"\x00commit"),))
    held = HeldPayment(PAYMENT_HASH, incoming(), rec, 1000, 1100, 1000, lost_partids=(1, 3))
    again = HeldPayment.from_json(json.loads(json.dumps(held.to_json())))
    assert again == held and again.record.final_tlvs == ((66105, b"\x00commit"),)
    old = held.to_json()
    del old["record"]["final_tlvs"], old["lost_partids"]       # saved by an earlier version
    loaded = HeldPayment.from_json(json.loads(json.dumps(old)))
    assert loaded.record.final_tlvs == () and loaded.lost_partids == ()


@pytest.mark.parametrize("tlvs", [((66104, b"x"),), ((8, b"x"),), ((3, b"x"),),
                                  ((66107, b"x"), (66105, b"y")), ((66105, "x"),)])
def test_final_tlvs_must_be_odd_custom_and_rising(tlvs):
    with pytest.raises(ValueError):
        replace(record(), final_tlvs=tlvs)

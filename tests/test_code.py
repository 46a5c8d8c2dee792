"""The payment code: roundtrips, every refusal, and fuzzing."""

import dataclasses

import pytest
from coincurve import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncln.code import CODE_PREFIX, MAX_CODE_CHARS, PaymentCode, Rod
from asyncln.wire import DecodeError, encode_tlv_stream

FUZZ = settings(max_examples=2000, deadline=None)
BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
SIGNATURE = ("d6tqaeuonjhi98mmont9m4wag7gg4krg1f4txonug3h5hxdmj8n9s5b3aq8odq6cr5n7b9g8yb5io9"
             "xh79f7kzsfmw8f6ayzzhe4n5uy")  # shaped like signmessage's zbase32
NOT_A_POINT = bytes([2]) + bytes(32)


def key(n: int) -> str:
    """A real compressed public key: codes refuse points that are not on the curve."""
    return PrivateKey(n.to_bytes(32, "big")).public_key.format().hex()


B, R1, R2, NOTE = key(1), key(2), key(3), key(4)


def code(**changes) -> PaymentCode:
    fields = dict(node_id=B, rods=(Rod(R1, ("203.0.113.5:9735", "[2001:db8::1]:9735")), Rod(R2)),
                  note_key=NOTE, signature=SIGNATURE)
    return PaymentCode(**{**fields, **changes})


def to_text(data: bytes, prefix: str = CODE_PREFIX) -> str:
    """Reference encoder (BIP 173's convertbits), independent of asyncln.code."""
    acc, bits, out = 0, 0, []
    for byte in data:
        acc, bits = (acc << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            out.append(BECH32[(acc >> bits) & 31])
    if bits:
        out.append(BECH32[(acc << (5 - bits)) & 31])
    return prefix + "".join(out)


def stream(**changes) -> bytes:
    """A valid code's TLV records; a change of None drops the record."""
    records = {0: b"\x01", 2: bytes.fromhex(B), 4: bytes.fromhex(R1) + b"\x00",
               6: bytes.fromhex(NOTE), 240: SIGNATURE.encode()}
    for name, value in changes.items():
        records.pop(int(name[1:]), None)
        if value is not None:
            records[int(name[1:])] = value
    return encode_tlv_stream(records)


def rod(node: str, *addresses: bytes) -> bytes:
    return bytes.fromhex(node) + bytes([len(addresses)]) + b"".join(
        bytes([len(a)]) + a for a in addresses)


address = st.text(st.characters(categories=("L", "M", "N", "P", "S")), min_size=1, max_size=20)
keys = st.lists(st.integers(1, 2**128), min_size=3, max_size=6, unique=True).map(
    lambda ns: [key(n) for n in ns])
codes = st.builds(
    lambda ks, addresses, extra, sig: PaymentCode(
        node_id=ks[0], note_key=ks[1], signature=sig, extra_records=tuple(sorted(extra.items())),
        rods=tuple(Rod(k, tuple(a)) for k, a in zip(ks[2:], addresses))),
    keys,
    st.lists(st.lists(address, max_size=2), min_size=4, max_size=4),
    st.dictionaries(st.integers(0, 119).map(lambda n: 2 * n + 1).filter(lambda t: t != 9),
                    st.binary(max_size=20), max_size=2),
    st.text(alphabet="ybndrfg8ejkmcpqxot1uwisza345h769", min_size=1, max_size=104),
)


@given(codes)
def test_roundtrip_in_either_case(c):
    text = c.encode()
    assert text.startswith(CODE_PREFIX) and len(text) <= MAX_CODE_CHARS
    assert set(text[len(CODE_PREFIX):]) <= set(BECH32)
    assert PaymentCode.decode(text) == c
    assert PaymentCode.decode(text.upper()) == c  # QR codes are upper case


@given(codes)
def test_signed_message_is_every_record_before_the_signature(c):
    message = c.signed_message()
    assert message.startswith("asyncln-code:")
    signed = bytes.fromhex(message[len("asyncln-code:"):])
    assert c.encode() == to_text(signed + encode_tlv_stream({240: c.signature.encode()}))
    assert dataclasses.replace(c, signature="").signed_message() == message


@given(codes, st.data())
def test_signed_message_changes_with_every_field(c, data):
    other = key(data.draw(st.integers(2**128 + 1, 2**129)))
    first = c.rods[0]
    for changed in (
        dataclasses.replace(c, node_id=other),
        dataclasses.replace(c, note_key=other),
        dataclasses.replace(c, rods=c.rods[:1]) if len(c.rods) > 1 else
        dataclasses.replace(c, rods=c.rods + (Rod(other),)),
        dataclasses.replace(c, rods=(Rod(other, first.addresses),) + c.rods[1:]),
        dataclasses.replace(c, rods=(Rod(first.node_id, first.addresses + ("x:1",)),) + c.rods[1:]),
        dataclasses.replace(c, extra_records=c.extra_records + ((239, b"new"),)),
    ):
        assert changed.signed_message() != c.signed_message()


def test_odd_records_are_ignored_but_stay_signed():
    text = to_text(stream(t5=b"from the future"))
    decoded = PaymentCode.decode(text)
    assert decoded.extra_records == ((5, b"from the future"),)
    assert decoded.encode() == text
    assert b"from the future".hex() in decoded.signed_message()


def test_encode_needs_a_signature_and_a_valid_code():
    with pytest.raises(ValueError, match="signed"):
        code(signature="").encode()
    with pytest.raises(ValueError, match="recipient itself"):
        code(rods=(Rod(B),)).encode()
    with pytest.raises(ValueError):
        code(rods=(Rod(R1, ("x" * 256,)),)).encode()


@pytest.mark.parametrize("text,message", [
    ("lno1" + to_text(stream())[4:], "does not start with aln1"),
    ("", "does not start with aln1"),
    (to_text(stream()) + "b", "invalid character 'b'"),
    (to_text(stream())[:10] + "1" + to_text(stream())[10:], "invalid character '1'"),
    (to_text(stream()) + "é", "outside bech32"),
    ("aLN1" + to_text(stream())[4:], "mixes upper and lower case"),
    (to_text(stream()) + "q", "whole group of padding"),
    (to_text(stream()) + "q" * MAX_CODE_CHARS, "longer than 2000"),
    ("aln1" + "q" * 160, "1-byte version"),
    ("aln1qqqs", "1-byte version"),
    (to_text(stream(t0=b"\x02")), "unknown payment code version 2"),
    (to_text(stream(t0=b"\x00\x01")), "1-byte version"),
    (to_text(stream(t0=None)), "1-byte version"),
    (to_text(stream(t10=b"must understand")), "unknown even TLV type"),
    (to_text(stream(t2=None)), "exactly one of node id and payee key"),
    (to_text(stream(t8=bytes.fromhex(key(99)))), "exactly one of node id and payee key"),
    (to_text(stream(t4=None)), "lacks its rods"),
    (to_text(stream(t6=None)), "lacks its note key"),
    (to_text(stream(t240=None)), "lacks its signature"),
    (to_text(stream(t241=b"unsigned")), "after its signature"),
    (to_text(stream(t4=b"")), "no rod"),
    (to_text(stream(t2=NOT_A_POINT)), "node id is not a valid public key"),
    (to_text(stream(t2=bytes.fromhex(B)[:32])), "node id is not a valid public key"),
    (to_text(stream(t2=b"\x04" + bytes.fromhex(B)[1:])), "node id is not a valid public key"),
    (to_text(stream(t6=NOT_A_POINT)), "note key is not a valid public key"),
    (to_text(stream(t4=NOT_A_POINT + b"\x00")), "rod id is not a valid public key"),
    (to_text(stream(t4=rod(B))), "recipient itself"),
    (to_text(stream(t4=rod(R1) + rod(R2) + rod(R1, b"a:1"))), "duplicate rod"),
    (to_text(stream(t4=rod(R1)[:-1])), "truncated rod"),
    (to_text(stream(t4=rod(R1) + bytes.fromhex(R2)[:20])), "truncated rod"),
    (to_text(stream(t4=rod(R1, b"a:1")[:-1])), "truncated rod address"),
    (to_text(stream(t4=bytes.fromhex(R1) + b"\x02\x03a:1")), "truncated rod address"),
    (to_text(stream(t4=rod(R1, b"\xff:1"))), "not UTF-8"),
    (to_text(stream(t4=rod(R1, b""))), "empty or not printable"),
    (to_text(stream(t4=rod(R1, b"a\n:1"))), "empty or not printable"),
    (to_text(stream(t240=b"")), "signature is empty"),
    (to_text(stream(t240=b"not zbase32!")), "not zbase32"),
    (to_text(stream(t240=b"\xff")), "not zbase32"),
])
def test_refusals(text, message):
    with pytest.raises(DecodeError, match=message):
        PaymentCode.decode(text)


def test_padding_bits_must_be_zero():
    data = next(d for d in (stream(t240=b"y" * n) for n in range(1, 6)) if len(d) * 8 % 5)
    text = to_text(data)  # its last character carries padding bits
    flipped = text[:-1] + BECH32[BECH32.index(text[-1]) | 1]
    with pytest.raises(DecodeError, match="non-zero padding"):
        PaymentCode.decode(flipped)


def test_longest_code_still_decodes():
    long_rod = Rod(R1, tuple(f"{'h' * 240}{i}:9735" for i in range(4)))
    text = code(rods=(long_rod,)).encode()
    assert len(text) <= MAX_CODE_CHARS
    with pytest.raises(ValueError, match="longer than"):
        code(rods=(Rod(R1, tuple(f"{'h' * 240}{i}:9735" for i in range(5))),)).encode()


def mutations(seed: str):
    """Truncations, substitutions, insertions and case flips of a valid code."""
    chars = st.sampled_from(BECH32 + BECH32.upper() + "1bio é\x00")
    return st.one_of(
        st.integers(0, len(seed)).map(lambda n: seed[:n]),
        st.tuples(st.integers(0, len(seed) - 1), chars).map(
            lambda p: seed[:p[0]] + p[1] + seed[p[0] + 1:]),
        st.tuples(st.integers(0, len(seed)), st.text(chars, max_size=8)).map(
            lambda p: seed[:p[0]] + p[1] + seed[p[0]:]),
        st.integers(0, len(seed) - 1).map(lambda n: seed[:n] + seed[n].upper() + seed[n + 1:]),
        st.text(max_size=100),
        st.text(BECH32, max_size=300).map(lambda t: CODE_PREFIX + t),
    )


@FUZZ
@given(mutations(code().encode()))
def test_fuzz_decode(text):
    try:
        decoded = PaymentCode.decode(text)
    except DecodeError:
        return
    assert decoded.encode() == text.lower()  # the encoding is canonical



@given(codes, st.data())
def test_rods_onion_keys_round_trip_under_the_signature(c, data):
    """Issue 7: each Rod's asyncln key and its node-key signature ride in the code (odd 9)."""
    keyed = tuple(dataclasses.replace(r, onion_key=key(1000 + i), onion_key_sig="ybnd" * (i + 1))
                  if data.draw(st.booleans()) else r for i, r in enumerate(c.rods))
    code = dataclasses.replace(c, rods=keyed)
    decoded = PaymentCode.decode(code.encode())
    assert decoded == code
    assert decoded.signed_message() == code.signed_message()
    if any(r.onion_key for r in keyed):
        assert decoded.signed_message() != dataclasses.replace(c).signed_message()

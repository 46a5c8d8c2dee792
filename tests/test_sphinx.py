"""Sphinx onions and error onions: BOLT 4 vectors, properties at other sizes, every refusal, fuzz."""

import hashlib
import hmac
import json
import os

import pytest
from coincurve import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
import pyln.proto.onion
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from pyln.proto.onion import RoutingOnion, generate_key
from pyln.proto.primitives import PrivateKey as PylnPrivateKey

from asyncln.sphinx import (
    HMAC_LEN,
    ONION_VERSION,
    OnionError,
    Packet,
    create_error,
    create_onion,
    decode_error,
    peel,
    wrap_error,
)
from asyncln.wire import DecodeError, encode_bigsize, is_point

VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors")  # from ../shared
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
AD = b"\x42" * 32
SIZES = (400, 650, 1300)
PROPS = settings(max_examples=40, deadline=None)
FUZZ = settings(max_examples=300, deadline=None)


def load(name):
    with open(os.path.join(VECTORS, name)) as f:
        return json.load(f)


ONION = load("bolt04-onion-test.json")
ERROR = load("bolt04-onion-error-test.json")
GEN = ONION["generate"]
HOPS = [(bytes.fromhex(h["pubkey"]), bytes.fromhex(h["payload"])) for h in GEN["hops"]]
SECRETS = [bytes.fromhex(h["hop_shared_secret"]) for h in ERROR["generate"]["hops"]]


def vector_onion():
    return create_onion(bytes.fromhex(GEN["session_key"]), HOPS, bytes.fromhex(GEN["associated_data"]))


def body(payload):
    """The TLV stream of a length-prefixed hop payload (every payload here is shorter than 0x10000)."""
    return payload[3:] if payload[0] == 0xFD else payload[1:]


def pub(key):
    return PrivateKey(key).public_key.format()


def seal(plaintext, hop_key, assocdata=AD, session=b"\x07" * 32):
    """A one-layer packet with an authentic HMAC around ``plaintext``, whatever it contains."""
    secret = PrivateKey(session).ecdh(pub(hop_key))
    buf = chacha20_xor(generate_key(secret, b"rho"), plaintext)
    mac = hmac.new(generate_key(secret, b"mu"), buf + assocdata, hashlib.sha256).digest()
    return Packet(ONION_VERSION, pub(session), buf, mac)


def chacha20_xor(key, data):
    return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(data))


@pytest.fixture
def pyln_oracle(monkeypatch):
    """pyln-proto's unwrap, with its in-place stream (refused by cryptography >= 51) done by copy."""
    def stream(key, buf):
        buf[:] = chacha20_xor(key, buf)
    monkeypatch.setattr(pyln.proto.onion, "chacha20_stream", stream)
    return RoutingOnion


# --- BOLT 4 vectors ---------------------------------------------------------

def test_create_onion_reproduces_the_vector_byte_for_byte():
    packet, secrets = vector_onion()
    assert packet.serialize().hex() == ONION["onion"]
    assert secrets == SECRETS  # the error vector lists the same route's shared secrets


def test_peeling_the_vector_yields_each_payload_and_the_next_onion(pyln_oracle):
    keys = [bytes.fromhex(k) for k in ONION["decode"]]
    assert [pub(k) for k in keys] == [pubkey for pubkey, _ in HOPS]
    packet = Packet.parse(bytes.fromhex(ONION["onion"]), 1300)
    for i, key in enumerate(keys):
        peeled = peel(packet, key, bytes.fromhex(GEN["associated_data"]))
        assert peeled.payload == body(HOPS[i][1])
        assert peeled.shared_secret == SECRETS[i]
        # pyln-proto's fixed-size implementation as an independent oracle for the next onion
        _, expected = pyln_oracle.from_bin(packet.serialize()).unwrap(
            PylnPrivateKey(key), bytes.fromhex(GEN["associated_data"]))
        if i == len(keys) - 1:
            assert peeled.next_packet is None and expected is None
        else:
            assert peeled.next_packet.serialize() == expected.to_bin()
            packet = Packet.parse(peeled.next_packet.serialize(), 1300)


def test_error_json_vector_keys_plaintext_and_final_packet():
    hops = ERROR["generate"]["hops"]
    for secret, hop in zip(SECRETS, hops):
        assert generate_key(secret, b"ammag").hex() == hop["ammag_key"]
    erring = hops[4]
    assert generate_key(SECRETS[4], b"um").hex() == erring["um_key"]
    failure = bytes.fromhex(ERROR["generate"]["failure_message"])

    packet = create_error(SECRETS[4], failure)
    plain = wrap_error(SECRETS[4], packet)  # the stream is its own inverse
    assert plain[HMAC_LEN:].hex() == erring["payload"]
    assert plain[:HMAC_LEN] == hmac.new(bytes.fromhex(erring["um_key"]), plain[HMAC_LEN:], hashlib.sha256).digest()
    for secret in reversed(SECRETS[:4]):
        packet = wrap_error(secret, packet)
    assert packet.hex() == ERROR["errorpacket"]
    assert decode_error(SECRETS, packet) == (4, failure)


# The in-spec trace of the same route (bolts a3772650, 04-onion-routing.md,
# "Returning Errors"): incorrect_or_unknown_payment_details padded to 1024.
# sha256 of raw_error_packet, then of "error packet for node 4" ... "node 0".
TRACE_FAILURE = bytes.fromhex("400f" "0000000000000064" "000c3500" "fd84d1" "fd012c") + b"\x80" * 300
TRACE_RAW = "e85c90215e31fd49f6c1ef9453b90b768100b320b0aad7d43a172d95eb7537b5"
TRACE_NODES = [
    "af9de55ab5c9355f9a438f96035a3d45be936b06d2383419457430db3d80db3b",
    "929b5202b7cddf44137ab09c9c9cce0b58d9d4d48d85d020a0dc1784527e56d3",
    "d7023647b46913b9c2ddc4f60178b1ced9e87cdb07fb16d25f0778f1d1d11efb",
    "325918ac1a2c14568c50ad5493b60cec6b05b66278121f48a47a0de6cf675f2e",
    "0709ced8da7a15dae982a2c0edfe44fefa1a2aab5db8e207f63890455799ec07",
]


def test_error_spec_trace_matches_at_every_hop():
    def digest(b):
        return hashlib.sha256(b).hexdigest()

    packet = create_error(SECRETS[4], TRACE_FAILURE, pad_to=1024)
    assert digest(wrap_error(SECRETS[4], packet)) == TRACE_RAW
    assert digest(packet) == TRACE_NODES[0]
    for secret, expected in zip(reversed(SECRETS[:4]), TRACE_NODES[1:]):
        packet = wrap_error(secret, packet)
        assert digest(packet) == expected
    assert decode_error(SECRETS, packet) == (4, TRACE_FAILURE)


# --- properties at other sizes ----------------------------------------------

scalars = st.integers(1, CURVE_ORDER - 1).map(lambda n: n.to_bytes(32, "big"))


@st.composite
def routes(draw, payload_size):
    """1-5 hops with random keys and length-prefixed payloads that together fit."""
    n = draw(st.integers(1, 5))
    keys = draw(st.lists(scalars, min_size=n, max_size=n, unique=True))
    left = payload_size - n * HMAC_LEN
    payloads = []
    for remaining in range(n - 1, -1, -1):
        # keep one byte for each later hop; a prefix takes up to 3 bytes here
        stream = draw(st.binary(max_size=max(left - remaining - 3, 0)))
        payloads.append(encode_bigsize(len(stream)) + stream)
        left -= len(payloads[-1])
    return draw(scalars), keys, payloads


@PROPS
@given(st.sampled_from(SIZES).flatmap(lambda size: st.tuples(st.just(size), routes(size))),
       st.binary(max_size=64))
def test_peeling_in_order_yields_every_payload(case, assocdata):
    size, (session, keys, payloads) = case
    packet, secrets = create_onion(session, [(pub(k), p) for k, p in zip(keys, payloads)], assocdata, size)
    assert len(packet.serialize()) == 1 + 33 + size + HMAC_LEN
    for i, key in enumerate(keys):
        packet = Packet.parse(packet.serialize(), size)
        peeled = peel(packet, key, assocdata)
        assert peeled.payload == body(payloads[i])
        assert peeled.shared_secret == secrets[i]
        assert (peeled.next_packet is None) == (i == len(keys) - 1)
        packet = peeled.next_packet


@PROPS
@given(routes(650), st.data())
def test_error_round_trip_names_the_erring_hop(route, data):
    session, keys, payloads = route
    _, secrets = create_onion(session, [(pub(k), p) for k, p in zip(keys, payloads)], AD, 650)
    erring = data.draw(st.integers(0, len(keys) - 1))
    failure = data.draw(st.binary(max_size=300))
    packet = create_error(secrets[erring], failure, pad_to=data.draw(st.sampled_from((0, 256, 1024))))
    for secret in reversed(secrets[:erring]):
        packet = wrap_error(secret, packet)
    assert decode_error(secrets, packet) == (erring, failure)


# --- refusals ----------------------------------------------------------------

KEY = b"\x11" * 32
SMALL = 400
OFF_CURVE = next(b"\x02" + x.to_bytes(32, "big") for x in range(1, 100)
                 if not is_point(b"\x02" + x.to_bytes(32, "big")))


def small_onion():
    packet, _ = create_onion(b"\x22" * 32, [(pub(KEY), b"\x02\x01\x00"), (pub(b"\x33" * 32), b"\x00")],
                             AD, SMALL)
    return packet


def test_wrong_version_is_refused():
    raw = bytearray(small_onion().serialize())
    raw[0] = 1
    with pytest.raises(OnionError, match="version"):
        peel(Packet.parse(bytes(raw), SMALL), KEY, AD)


def test_every_flipped_bit_is_refused():
    raw = small_onion().serialize()
    for bit in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(OnionError):
            peel(Packet.parse(bytes(flipped), SMALL), KEY, AD)


def test_wrong_assocdata_and_wrong_key_are_refused():
    with pytest.raises(OnionError, match="HMAC"):
        peel(small_onion(), KEY, b"\x43" * 32)
    with pytest.raises(OnionError, match="HMAC"):
        peel(small_onion(), b"\x12" * 32, AD)


def test_invalid_ephemeral_points_are_refused():
    good = small_onion()
    for key in (OFF_CURVE, b"\x04" + good.public_key[1:], bytes(33)):
        with pytest.raises(OnionError, match="point"):
            peel(Packet(good.version, key, good.payloads, good.hmac), KEY, AD)


def test_wrong_size_is_refused():
    raw = small_onion().serialize()
    assert Packet.parse(raw, SMALL).serialize() == raw
    for wrong in (raw[:-1], raw + b"\x00", raw[:SMALL], b""):
        with pytest.raises(OnionError, match="bytes"):
            Packet.parse(wrong, SMALL)
    for size in (SMALL - 1, SMALL + 1, 1300):
        with pytest.raises(OnionError, match="bytes"):
            Packet.parse(raw, size)


@pytest.mark.parametrize("prefix", [
    encode_bigsize(SMALL - HMAC_LEN - 2),  # one byte too long for the packet
    encode_bigsize(SMALL),
    b"\xfd\x00\x10",  # non-minimal
    b"\xff" + b"\xff" * 8,
])
def test_payload_overrunning_the_packet_is_refused(prefix):
    packet = seal(prefix + bytes(SMALL - len(prefix)), KEY)
    with pytest.raises(OnionError):
        peel(packet, KEY, AD)


def test_payload_exactly_filling_the_packet_is_accepted():
    prefix = encode_bigsize(SMALL - HMAC_LEN - 3)
    assert len(prefix) == 3
    peeled = peel(seal(prefix + bytes(SMALL - 3), KEY), KEY, AD)
    assert peeled.payload == bytes(SMALL - HMAC_LEN - 3) and peeled.next_packet is None


def test_payloads_that_do_not_fit_are_refused_at_creation():
    def hops(last_len):
        stream = bytes(last_len)
        return [(pub(KEY), b"\x00"), (pub(b"\x33" * 32), encode_bigsize(len(stream)) + stream)]

    exact = SMALL - 2 * HMAC_LEN - 1 - 3  # second payload fills the packet to the byte
    create_onion(KEY, hops(exact), AD, SMALL)
    with pytest.raises(ValueError, match="need"):
        create_onion(KEY, hops(exact + 1), AD, SMALL)
    with pytest.raises(ValueError, match="need"):
        create_onion(KEY, [(pub(KEY), b"\x00")] * 13, AD, SMALL)


@pytest.mark.parametrize("hops", [
    [],
    [(pub(KEY), b"\x02\x01")],  # prefix says 2, one byte follows
    [(pub(KEY), b"\x00\x00")],  # prefix says 0, one byte follows
    [(pub(KEY), b"")],
    [(OFF_CURVE, b"\x00")],
])
def test_malformed_hops_are_refused_at_creation(hops):
    with pytest.raises(ValueError):
        create_onion(KEY, hops, AD, SMALL)


def test_error_packet_refusals():
    _, secrets = vector_onion()
    packet = create_error(secrets[2], b"\x20\x02")
    with pytest.raises(OnionError):
        decode_error(secrets[3:], packet)  # not the route it came back on
    tampered = bytearray(packet)
    tampered[40] ^= 1
    with pytest.raises(OnionError):
        decode_error(secrets, bytes(tampered))
    for short in (b"", packet[:HMAC_LEN], packet[:HMAC_LEN + 3]):
        with pytest.raises(OnionError):
            decode_error(secrets, short)
    with pytest.raises(ValueError):
        create_error(secrets[0], bytes(0x10000))


@pytest.mark.parametrize("body", [
    b"\x00\x05\x20\x02\x00\x00",  # failure_len overruns
    b"\x00\x02\x20\x02\x00\x05\x00",  # pad_len disagrees with the packet
    b"\x00\x02\x20\x02",  # no pad_len
])
def test_authentic_error_with_inconsistent_lengths_is_refused(body):
    secret = SECRETS[0]
    mac = hmac.new(generate_key(secret, b"um"), body, hashlib.sha256).digest()
    with pytest.raises(OnionError, match="short|add up"):
        decode_error([secret], wrap_error(secret, mac + body))


# --- fuzz ----------------------------------------------------------------------

def sized(size):
    return st.one_of(
        st.binary(min_size=size - 2, max_size=size + 2),
        st.tuples(st.binary(min_size=33, max_size=33), st.binary(min_size=size - 34, max_size=size - 34))
        .map(lambda p: b"\x00" + p[0] + p[1]),
        st.tuples(scalars, st.binary(min_size=size - 34, max_size=size - 34))
        .map(lambda p: b"\x00" + pub(p[0]) + p[1]),
    )


@FUZZ
@given(sized(1 + 33 + 64 + HMAC_LEN))
def test_parse_and_peel_of_random_bytes(raw):
    try:
        peel(Packet.parse(raw, 64), KEY, AD)
    except DecodeError:
        pass


@FUZZ
@given(st.binary(min_size=SMALL, max_size=SMALL))
def test_peel_of_authentic_random_plaintext(plaintext):
    try:
        peeled = peel(seal(plaintext, KEY), KEY, AD)
    except OnionError:
        return
    assert len(peeled.payload) <= SMALL - HMAC_LEN - 1
    if peeled.next_packet is not None:
        assert len(peeled.next_packet.serialize()) == 1 + 33 + SMALL + HMAC_LEN


@FUZZ
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=5), st.binary(max_size=400))
def test_decode_error_of_random_bytes(secrets, raw):
    try:
        decode_error(secrets, raw)
    except OnionError:
        pass


@FUZZ
@given(st.binary(max_size=80))
def test_decode_error_of_authentic_random_body(body):
    secret = SECRETS[1]
    mac = hmac.new(generate_key(secret, b"um"), body, hashlib.sha256).digest()
    try:
        index, failure = decode_error([SECRETS[0], secret], wrap_error(secret, mac + body))
    except OnionError:
        return
    assert index == 1 and failure == body[2:2 + len(failure)]

"""The asyncln onion (record version 2): built by the payer, peeled one layer per holder.

Real keys throughout: each holder's key is what ``makesecret`` would answer,
reduced by ``onion.secret_key``; the payer encrypts to ``onion.public_key``.
"""

import hashlib

import pytest
from coincurve import PrivateKey
from factories import PAYER, PAYMENT_HASH, RECIPIENT, node_id
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncln import onion, sphinx
from asyncln.layer import Layer
from asyncln.record import HintHop
from asyncln.wire import (
    DecodeError,
    decode_bigsize,
    decode_tlv_stream,
    decode_tu,
    encode_bigsize,
    encode_tlv_stream,
    encode_tu,
)

S, R = node_id(4), node_id(5)   # first holder (the payer's), next holder (the payee's Rod)
S_MAKESECRET, R_MAKESECRET = "44" * 32, "55" * 32
S_KEY, R_KEY = onion.public_key(S_MAKESECRET), onion.public_key(R_MAKESECRET)
S_SECRET, R_SECRET = onion.secret_key(S_MAKESECRET), onion.secret_key(R_MAKESECRET)
PAYMENT_SECRET = "22" * 32
PROPS = settings(max_examples=150, deadline=None)
sessions = st.integers(1, 2**255).map(lambda n: n.to_bytes(32, "big"))  # valid secp256k1 keys

u32 = st.integers(0, 2**32 - 1)
amounts = st.integers(1, 2**63)
scids = st.tuples(st.integers(0, 2**24 - 1), st.integers(0, 2**24 - 1),
                  st.integers(0, 2**16 - 1)).map(lambda s: "x".join(map(str, s)))
hint_hops = st.builds(HintHop, st.sampled_from([node_id(n) for n in range(6, 10)]), scids,
                      u32, u32, st.integers(0, 2**16 - 1))
# Small enough that two layers always fit in PAYLOAD_SIZE: one hint route of up to two hops.
small_hints = st.lists(st.lists(hint_hops, min_size=1, max_size=2).map(tuple),
                       max_size=1).map(tuple)


@st.composite
def final_layers(draw, hints=small_hints):
    amount = draw(amounts)
    return Layer(amt_to_forward=amount, outgoing_cltv_delta=draw(u32),
                 outgoing_node_id=RECIPIENT, please_poll=draw(st.booleans()),
                 max_hold_blocks=draw(st.none() | u32),
                 payment_secret=draw(st.binary(min_size=32, max_size=32)).hex(),
                 total_msat=draw(st.integers(amount, 2**64 - 1)), route_hints=draw(hints),
                 report_to=draw(st.none() | st.just(PAYER)))


@st.composite
def forward_layers(draw):
    """A first holder's layer: forward to the next holder R, nothing about the recipient."""
    return Layer(amt_to_forward=draw(amounts), outgoing_cltv_delta=draw(u32),
                 outgoing_node_id=R, please_poll=draw(st.booleans()),
                 max_hold_blocks=draw(st.none() | u32),
                 report_to=draw(st.none() | st.just(PAYER)))


def forward_layer(**changes):
    return Layer(**{**dict(amt_to_forward=101_500, outgoing_cltv_delta=500, outgoing_node_id=R,
                           max_hold_blocks=36, report_to=PAYER), **changes})


def final_layer(**changes):
    return Layer(**{**dict(amt_to_forward=100_000, outgoing_cltv_delta=18,
                           outgoing_node_id=RECIPIENT, max_hold_blocks=108,
                           payment_secret=PAYMENT_SECRET, total_msat=100_000), **changes})


def framed_size(layer: Layer) -> int:
    """Bytes a layer takes in the onion: length prefix, stream, next HMAC."""
    stream = layer.encode()
    return len(encode_bigsize(len(stream))) + len(stream) + sphinx.HMAC_LEN


# --- build -> peel -----------------------------------------------------------------

@PROPS
@given(st.one_of(final_layers(), forward_layers()), st.binary(min_size=32, max_size=32),
       sessions)
def test_one_holder_peels_exactly_its_layer(layer, payment_hash, session):
    raw, secrets = onion.build([(S_KEY, layer)], payment_hash.hex(), session)
    assert len(raw) == onion.PACKET_SIZE and len(secrets) == 1
    peeled, following = onion.peel(raw, S_SECRET, payment_hash.hex())
    assert peeled == layer
    assert following is None


@PROPS
@given(forward_layers(), final_layers(), st.binary(min_size=32, max_size=32), sessions)
def test_two_holders_each_peel_their_own_layer(first, last, payment_hash, session):
    raw, secrets = onion.build([(S_KEY, first), (R_KEY, last)], payment_hash.hex(), session)
    assert len(secrets) == 2
    got_first, to_r = onion.peel(raw, S_SECRET, payment_hash.hex())
    assert got_first == first
    assert to_r is not None and len(to_r) == onion.PACKET_SIZE
    got_last, after = onion.peel(to_r, R_SECRET, payment_hash.hex())
    assert got_last == last
    assert after is None
    # Neither holder can open the other's layer.
    for packet, wrong_secret in ((raw, R_SECRET), (to_r, S_SECRET)):
        with pytest.raises(DecodeError):
            onion.peel(packet, wrong_secret, payment_hash.hex())


def test_the_shared_secrets_are_each_holders_ecdh():
    raw, secrets = onion.build([(S_KEY, forward_layer()), (R_KEY, final_layer())], PAYMENT_HASH,
                               b"\x07" * 32)
    _, to_r = onion.peel(raw, S_SECRET, PAYMENT_HASH)
    assert secrets[0] == PrivateKey(S_SECRET).ecdh(raw[1:34])
    assert secrets[1] == PrivateKey(R_SECRET).ecdh(to_r[1:34])


def test_the_first_holder_learns_only_the_next_holder():
    last = final_layer(route_hints=((HintHop(node_id(7), "105x1x0", 1000, 10, 40),),))
    raw, _ = onion.build([(S_KEY, forward_layer()), (R_KEY, last)], PAYMENT_HASH)
    mine, to_r = onion.peel(raw, S_SECRET, PAYMENT_HASH)
    assert not mine.is_final
    assert mine.payment_secret is None and mine.total_msat is None
    assert mine.outgoing_node_id == R and mine.route_hints == () and mine.inner_onion is None
    assert len(to_r) == onion.PACKET_SIZE
    secrets_in_clear = (bytes.fromhex(RECIPIENT), bytes.fromhex(PAYMENT_SECRET),
                        bytes.fromhex(node_id(7)), bytes.fromhex(R))
    for packet in (raw, to_r):
        for needle in secrets_in_clear:
            assert needle not in packet
    # What S sees in clear: its own layer; the next packet is opaque to it.
    assert bytes.fromhex(RECIPIENT) not in mine.encode()
    assert bytes.fromhex(PAYMENT_SECRET) not in mine.encode()


def test_a_single_holders_packet_is_the_same_size_as_a_chains():
    one, _ = onion.build([(R_KEY, final_layer())], PAYMENT_HASH)
    two, _ = onion.build([(S_KEY, forward_layer()), (R_KEY, final_layer())], PAYMENT_HASH)
    assert len(one) == len(two) == onion.PACKET_SIZE
    assert onion.PACKET_SIZE == 1 + 33 + onion.PAYLOAD_SIZE + 32


@pytest.mark.parametrize("holders", [1, 2])
def test_a_wrong_payment_hash_is_refused(holders):
    route = [(S_KEY, forward_layer()), (R_KEY, final_layer())][-holders:]
    first_secret = S_SECRET if holders == 2 else R_SECRET
    raw, _ = onion.build(route, PAYMENT_HASH)
    other = hashlib.sha256(b"another preimage").hexdigest()
    with pytest.raises(DecodeError):
        onion.peel(raw, first_secret, other)
    if holders == 2:  # the next holder checks the hash too
        _, to_r = onion.peel(raw, S_SECRET, PAYMENT_HASH)
        with pytest.raises(DecodeError):
            onion.peel(to_r, R_SECRET, other)


def test_keys_come_from_makesecret_not_the_node_key():
    key = onion.public_key(S_MAKESECRET)
    assert key == PrivateKey(onion.secret_key(S_MAKESECRET)).public_key.format().hex()
    assert key != onion.public_key(R_MAKESECRET)
    assert onion.key_statement(key) == f"asyncln-onion-key:{key}"
    assert onion.ONION_TLV == 66103 and onion.ONION_TLV % 2 == 1


# --- sizes -------------------------------------------------------------------------

def test_layers_too_big_for_the_payload_are_refused_at_build():
    hop = HintHop(node_id(7), "105x1x0", 1000, 10, 40)
    big = final_layer(route_hints=tuple((hop, hop, hop) for _ in range(4)))
    assert framed_size(big) > onion.PAYLOAD_SIZE
    with pytest.raises(ValueError):
        onion.build([(R_KEY, big)], PAYMENT_HASH)
    half = final_layer(route_hints=tuple((hop, hop) for _ in range(3)))
    assert framed_size(half) <= onion.PAYLOAD_SIZE  # fits alone...
    onion.build([(R_KEY, half)], PAYMENT_HASH)
    assert framed_size(half) * 2 > onion.PAYLOAD_SIZE  # ...but not twice
    with pytest.raises(ValueError):
        onion.build([(S_KEY, half), (R_KEY, half)], PAYMENT_HASH)


def tail(n: int) -> Layer:
    """A layer whose size grows one byte per byte of inner onion."""
    return Layer(amt_to_forward=1, outgoing_cltv_delta=0, outgoing_node_id=None,
                 please_poll=False, inner_onion=b"\xab" * n)


def test_a_layer_exactly_filling_the_payload_builds_and_one_byte_more_does_not():
    n = max(n for n in range(1, onion.PAYLOAD_SIZE) if framed_size(tail(n)) <= onion.PAYLOAD_SIZE)
    assert framed_size(tail(n)) == onion.PAYLOAD_SIZE
    raw, _ = onion.build([(S_KEY, tail(n))], PAYMENT_HASH)
    assert onion.peel(raw, S_SECRET, PAYMENT_HASH) == (tail(n), None)
    with pytest.raises(ValueError):
        onion.build([(S_KEY, tail(n + 1))], PAYMENT_HASH)


@settings(max_examples=60, deadline=None)
@given(st.one_of(final_layers(st.lists(st.lists(hint_hops, min_size=1, max_size=3).map(tuple),
                                        max_size=4).map(tuple)), forward_layers()),
       final_layers(st.lists(st.lists(hint_hops, min_size=1, max_size=3).map(tuple),
                             max_size=4).map(tuple)))
def test_build_succeeds_exactly_when_the_layers_fit(first, last):
    fits = framed_size(first) + framed_size(last) <= onion.PAYLOAD_SIZE
    if not fits:
        with pytest.raises(ValueError):
            onion.build([(S_KEY, first), (R_KEY, last)], PAYMENT_HASH)
        return
    raw, _ = onion.build([(S_KEY, first), (R_KEY, last)], PAYMENT_HASH)
    got, to_r = onion.peel(raw, S_SECRET, PAYMENT_HASH)
    assert got == first and onion.peel(to_r, R_SECRET, PAYMENT_HASH)[0] == last


# --- the holder's final-hop payload ------------------------------------------------

@PROPS
@given(st.integers(0, 2**64 - 1), u32, st.binary(min_size=1, max_size=onion.PACKET_SIZE))
def test_final_payload_carries_the_packet_where_find_onion_looks(amount, expiry, packet):
    payload = onion.final_payload(amount, expiry, packet)
    length, start = decode_bigsize(payload)
    assert start + length == len(payload)
    fields = decode_tlv_stream(payload[start:], known_even=[2, 4])
    assert decode_tu(fields[2], 8) == amount and decode_tu(fields[4], 4) == expiry
    assert fields[onion.ONION_TLV] == packet
    offset, found = onion.find_onion(payload)
    assert found == packet
    before = encode_tlv_stream({2: encode_tu(amount), 4: encode_tu(expiry)})
    assert offset == len(before)  # the TLV's own offset in the stream, as BOLT 4 reports it
    assert payload[start + offset:start + offset + 5] == b"\xfe" + (66103).to_bytes(4, "big")


def test_find_onion_sees_no_onion_in_an_ordinary_or_clear_payload():
    stream = encode_tlv_stream({2: encode_tu(1000), 4: encode_tu(500)})
    assert onion.find_onion(encode_bigsize(len(stream)) + stream) is None
    clear = encode_tlv_stream({2: encode_tu(1000), 4: encode_tu(500), 66101: b"\x01"})
    assert onion.find_onion(encode_bigsize(len(clear)) + clear) is None


# --- route_hops: lightningd's onion to the holder -----------------------------------

def scid_of(value: bytes) -> str:
    n = int.from_bytes(value, "big")
    return f"{n >> 40}x{(n >> 16) & 0xFFFFFF}x{n & 0xFFFF}"


@st.composite
def sendpay_routes(draw):
    size = draw(st.integers(1, 5))
    ids = draw(st.lists(st.sampled_from([node_id(n) for n in range(10, 30)]), min_size=size,
                        max_size=size, unique=True))
    return [{"id": node, "channel": draw(scids), "direction": draw(st.integers(0, 1)),
             "amount_msat": draw(st.integers(1, 2**48)), "delay": draw(st.integers(0, 5000))}
            for node in ids]


@PROPS
@given(sendpay_routes(), st.integers(1, 2**31 - 6000), st.binary(min_size=1, max_size=200))
def test_route_hops_tell_each_hop_the_next_channel_amount_and_expiry(route, base, last):
    last_payload = encode_bigsize(len(last)) + last
    hops = onion.route_hops(route, base, last_payload)
    assert [h["pubkey"] for h in hops] == [hop["id"] for hop in route]
    assert bytes.fromhex(hops[-1]["payload"]) == last_payload
    for hop, onward in zip(hops, route[1:]):
        payload = bytes.fromhex(hop["payload"])
        length, start = decode_bigsize(payload)
        assert start + length == len(payload)
        fields = decode_tlv_stream(payload[start:], known_even=[2, 4, 6])
        assert set(fields) == {2, 4, 6}
        assert decode_tu(fields[2], 8) == onward["amount_msat"]
        assert decode_tu(fields[4], 4) == base + onward["delay"]
        assert len(fields[6]) == 8 and scid_of(fields[6]) == onward["channel"]


def test_route_hops_build_an_onion_lightningd_would_accept():
    """The hops are createonion's format: every payload passes sphinx's framing checks."""
    route = [{"id": node_id(10), "channel": "103x1x0", "direction": 0, "amount_msat": 102_600,
              "delay": 378},
             {"id": S, "channel": "110x2x1", "direction": 1, "amount_msat": 102_500,
              "delay": 344}]
    packet, _ = onion.build([(S_KEY, forward_layer()), (R_KEY, final_layer())], PAYMENT_HASH)
    hops = onion.route_hops(route, 801, onion.final_payload(102_500, 801 + 344, packet))
    keys = [PrivateKey(bytes([10]) * 32).secret, PrivateKey(bytes([4]) * 32).secret]
    built, _ = sphinx.create_onion(b"\x09" * 32, [(bytes.fromhex(h["pubkey"]),
                                                    bytes.fromhex(h["payload"])) for h in hops],
                                   bytes.fromhex(PAYMENT_HASH))
    first = sphinx.peel(built, keys[0], bytes.fromhex(PAYMENT_HASH))
    second = sphinx.peel(first.next_packet, keys[1], bytes.fromhex(PAYMENT_HASH))
    assert second.next_packet is None
    offset, found = onion.find_onion(encode_bigsize(len(second.payload)) + second.payload)
    assert found == packet
    assert onion.peel(found, S_SECRET, PAYMENT_HASH)[0] == forward_layer()


def test_forward_payload_encodes_the_scid_as_bolt_7():
    payload = onion.forward_payload("700000x1234x5", 1, 2)
    fields = decode_tlv_stream(payload[1:], known_even=[2, 4, 6])
    assert fields[6] == ((700000 << 40) | (1234 << 16) | 5).to_bytes(8, "big")
    assert (decode_tu(fields[2], 8), decode_tu(fields[4], 4)) == (1, 2)

"""What a holder makes of the asyncln onion (peel.read): a record to hold, or a BOLT 4 / #836 refusal.

Every refusal is checked byte for byte: its failure code, and for
invalid_onion_payload the TLV type and offset it names.
"""

import hashlib
import json
import struct

import pytest
from factories import PAYER, PAYMENT_HASH, RECIPIENT, incoming, node_id
from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_node import RecordingRpc
from test_review_issue7 import (
    ARRIVAL,
    HOLD,
    POLICY as ISSUE7_POLICY,
    S as ISSUE7_S,
    Request,
    forwarding_to_r,
    holder,
    hook,
    run_queued,
)

from asyncln import chain, commitment, failures, hold, note, onion, peel
from asyncln.hold import HEIGHT_SLACK, Incoming, Reject
from asyncln.layer import Layer
from asyncln.node import Node
from asyncln.policy import Policy
from asyncln.record import TrampolineRecord, FinalPayload
from asyncln.states import HoldState
from asyncln.wire import decode_bigsize, encode_bigsize, encode_tlv_stream, encode_tu

S, R = node_id(4), node_id(5)     # S: the holder reading; R: the next holder
S_SECRET = onion.secret_key("44" * 32)
R_SECRET = onion.secret_key("55" * 32)
S_KEY, R_KEY = onion.public_key("44" * 32), onion.public_key("55" * 32)
PAYMENT_SECRET = "22" * 32
HEIGHT = 1000
POLICY = Policy(fee_base_msat=1234, fee_ppm=567, safety_blocks=100, max_hold_blocks=500)
ONION_AT = len(encode_tlv_stream({2: encode_tu(200_000), 4: encode_tu(2000)}))


def final_layer(**changes):
    return Layer(**{**dict(amt_to_forward=100_000, outgoing_cltv_delta=18,
                           outgoing_node_id=RECIPIENT, max_hold_blocks=36,
                           payment_secret=PAYMENT_SECRET, total_msat=100_000,
                           report_to=PAYER), **changes})


def forward_layer(**changes):
    return Layer(**{**dict(amt_to_forward=100_000, outgoing_cltv_delta=400, outgoing_node_id=R,
                           max_hold_blocks=36, report_to=PAYER), **changes})


def packet(*route, payment_hash=PAYMENT_HASH):
    """route: layers for S, then (for two) R."""
    keys = [S_KEY, R_KEY][:len(route)]
    raw, _ = onion.build(list(zip(keys, route)), payment_hash, b"\x07" * 32)
    return raw


def enough(layer, policy=POLICY, height=HEIGHT):
    """An incoming HTLC that exactly covers the layer's fee and one block of hold."""
    return incoming(amount=layer.amt_to_forward + policy.fee(layer.amt_to_forward),
                    cltv_expiry=height + layer.outgoing_cltv_delta + chain._margin(policy, 1))


def payload_for(raw, inc=None):
    inc = inc or incoming(amount=200_000, cltv_expiry=2000)
    return onion.final_payload(inc.amount_msat, inc.cltv_expiry, raw)


def read(payload, inc=None, secret=S_SECRET, us=S, policy=POLICY, height=HEIGHT,
         payment_hash=PAYMENT_HASH):
    inc = inc or incoming(amount=200_000, cltv_expiry=2000)
    return peel.read(payload, payment_hash, secret, us, policy, inc, height)


def invalid_onion_payload(reject):
    """(code, tlv type, offset) of an invalid_onion_payload failure."""
    raw = bytes.fromhex(reject.failure_message)
    code = struct.unpack(">H", raw[:2])[0]
    tlv_type, end = decode_bigsize(raw, 2)
    assert len(raw) == end + 2
    return code, tlv_type, struct.unpack(">H", raw[end:])[0]


def code_of(reject) -> int:
    return struct.unpack(">H", bytes.fromhex(reject.failure_message)[:2])[0]


def fee_or_expiry_terms(reject):
    raw = bytes.fromhex(reject.failure_message)
    assert len(raw) == 12
    return struct.unpack(">HIIH", raw)


# --- no onion ----------------------------------------------------------------------

def test_no_onion_is_none():
    stream = encode_tlv_stream({2: encode_tu(1000), 4: encode_tu(500)})
    assert read(encode_bigsize(len(stream)) + stream) is None
    clear = FinalPayload(110_000, 1500, TrampolineRecord(
        RECIPIENT, 100_000, 18, PAYMENT_SECRET, 100_000, True)).encode()
    assert read(clear) is None  # a version-1 record is hold.py's, not ours
    assert read(b"\x00") is None


# --- refusals naming our TLV (invalid_onion_payload) --------------------------------

def test_a_payload_whose_tlvs_do_not_parse_is_invalid_onion_payload():
    good = payload_for(packet(final_layer()))
    for bad in (good + b"\x00",                      # length prefix does not match
                good[:-1],
                b"\x03\xfd\x00\x01",                 # non-minimal bigsize type
                b""):
        reject = read(bad)
        assert isinstance(reject, Reject), bad[:8]
        assert invalid_onion_payload(reject)[0] == failures.INVALID_ONION_PAYLOAD


def test_a_truncated_onion_tlv_names_it_and_its_offset():
    raw = packet(final_layer())
    head = encode_tlv_stream({2: encode_tu(200_000), 4: encode_tu(2000)})
    stream = (head + encode_bigsize(onion.ONION_TLV) + encode_bigsize(len(raw)) + raw[:-10])
    reject = read(encode_bigsize(len(stream)) + stream)
    assert invalid_onion_payload(reject) == (failures.INVALID_ONION_PAYLOAD, onion.ONION_TLV,
                                             ONION_AT)


def flip(raw, at, value=None):
    return raw[:at] + bytes([value if value is not None else raw[at] ^ 1]) + raw[at + 1:]


RAW = packet(final_layer())
BROKEN_PACKETS = {
    "hmac": flip(RAW, len(RAW) - 1),
    "payload byte": flip(RAW, 40),
    "version": flip(RAW, 0, 1),
    "ephemeral key not a point": flip(RAW, 1, 5),
    "ephemeral key another point": RAW[:1] + bytes.fromhex(node_id(9)) + RAW[34:],
    "truncated": RAW[:-1],
    "oversize": RAW + b"\x00",
    "empty": b"",
    "a whole lightningd onion": bytes(1366),
}


@pytest.mark.parametrize("name", BROKEN_PACKETS)
def test_a_packet_we_cannot_peel_is_invalid_onion_payload_naming_tlv_66103(name):
    reject = read(payload_for(BROKEN_PACKETS[name]))
    assert isinstance(reject, Reject)
    assert invalid_onion_payload(reject) == (failures.INVALID_ONION_PAYLOAD, onion.ONION_TLV,
                                             ONION_AT)


def test_another_payment_hash_is_refused():
    reject = read(payload_for(RAW), payment_hash=hashlib.sha256(b"other").hexdigest())
    assert invalid_onion_payload(reject) == (failures.INVALID_ONION_PAYLOAD, onion.ONION_TLV,
                                             ONION_AT)


def test_an_onion_for_another_holder_is_refused():
    reject = read(payload_for(RAW), secret=R_SECRET)
    assert invalid_onion_payload(reject)[1:] == (onion.ONION_TLV, ONION_AT)


def test_without_a_key_every_onion_is_refused():
    reject = read(payload_for(RAW), secret=None)
    assert invalid_onion_payload(reject) == (failures.INVALID_ONION_PAYLOAD, onion.ONION_TLV,
                                             ONION_AT)


def test_a_forwarding_layer_with_no_onion_after_it_is_refused():
    reject = read(payload_for(packet(forward_layer())))
    assert invalid_onion_payload(reject) == (failures.INVALID_ONION_PAYLOAD, onion.ONION_TLV,
                                             ONION_AT)


def test_a_layer_that_does_not_decode_is_refused():
    """An authentic packet (right key and hash) whose layer is not a valid TLV stream."""
    from asyncln import sphinx
    junk = b"\x02\x00"  # amt_to_forward of zero length: amount 0, refused by Layer
    built, _ = sphinx.create_onion(b"\x07" * 32, [(bytes.fromhex(S_KEY),
                                                   encode_bigsize(len(junk)) + junk)],
                                   bytes.fromhex(PAYMENT_HASH), onion.PAYLOAD_SIZE)
    reject = read(payload_for(built.serialize()))
    assert invalid_onion_payload(reject) == (failures.INVALID_ONION_PAYLOAD, onion.ONION_TLV,
                                             ONION_AT)


# --- #836 refusals -------------------------------------------------------------------

@pytest.mark.parametrize("layer", [final_layer(outgoing_node_id=S), forward_layer(outgoing_node_id=S)])
def test_an_onion_looping_back_to_us_is_unknown_next_trampoline(layer):
    route = (layer,) if layer.is_final else (layer, final_layer())
    reject = read(payload_for(packet(*route)))
    assert isinstance(reject, Reject)
    assert reject.failure_message == failures.unknown_next_trampoline()
    assert code_of(reject) == failures.PERM | 27


def tail_layer(inner: bytes, **changes) -> Layer:
    """The payer's layer for S (a Rod) carrying a tail the payee built: amount and hold only."""
    return Layer(**{**dict(amt_to_forward=100_000, outgoing_cltv_delta=18, outgoing_node_id=None,
                           max_hold_blocks=36, report_to=PAYER, inner_onion=inner), **changes})


@pytest.mark.parametrize("inner", [b"\x00" * 40, bytes(onion.TAIL_PACKET_SIZE)])
def test_a_payee_tail_that_does_not_peel_is_refused_naming_tlv_66103(inner):
    reject = read(payload_for(packet(tail_layer(inner))))
    assert isinstance(reject, Reject)
    assert invalid_onion_payload(reject) == (failures.INVALID_ONION_PAYLOAD, onion.ONION_TLV,
                                             ONION_AT)


def test_a_payee_tail_for_another_holder_or_not_final_is_refused():
    final_tail = final_layer(max_hold_blocks=None, report_to=None)
    for key, tail in ((R_KEY, final_tail), (S_KEY, forward_layer())):
        inner, _ = onion.build([(key, tail)], PAYMENT_HASH, size=onion.TAIL_PAYLOAD_SIZE)
        reject = read(payload_for(packet(tail_layer(inner))))
        assert isinstance(reject, Reject)
        assert invalid_onion_payload(reject)[1:] == (onion.ONION_TLV, ONION_AT)


def test_a_payee_tail_names_the_recipient_and_the_payer_sets_amount_and_hold():
    tail = final_layer(amt_to_forward=1, total_msat=1, outgoing_cltv_delta=40,
                       max_hold_blocks=None, report_to=None)
    inner, _ = onion.build([(S_KEY, tail)], PAYMENT_HASH, size=onion.TAIL_PAYLOAD_SIZE)
    outer = tail_layer(inner)
    inc = incoming(amount=outer.amt_to_forward + POLICY.fee(outer.amt_to_forward),
                   cltv_expiry=HEIGHT + 40 + chain._margin(POLICY, 1))
    record, offset, refusal = read(payload_for(packet(outer), inc), inc)
    assert refusal is None and offset == ONION_AT
    assert (record.next_node, record.payment_secret) == (RECIPIENT, PAYMENT_SECRET)
    assert (record.amount_msat, record.total_msat) == (100_000, 100_000)
    assert record.final_cltv_delta == 40  # the payee's CLTV wins over the payer's lower one
    assert (record.max_hold_blocks, record.report_to) == (36, PAYER)
    assert record.next_onion is None


def test_the_payers_amount_commitment_reaches_the_record_as_final_tlv_66105():
    """The last holder delivers the payer's sealed amount to the recipient, unread (item 11.6)."""
    blob = commitment.seal(100_000, note.note_public_key("5a" * 32), PAYMENT_HASH)
    layer = final_layer(amount_commitment=blob)
    inc = enough(layer)
    record, _, refusal = read(payload_for(packet(layer), inc), inc)
    assert refusal is None and record.final_tlvs == ((66105, blob),)


def test_around_a_payee_tail_the_payers_commitment_is_the_one_delivered():
    """A private offer: only the payer's commitment binds what it paid; the tail's is dropped."""
    payers = commitment.seal(100_000, note.note_public_key("5a" * 32), PAYMENT_HASH)
    planted = commitment.seal(1, note.note_public_key("5a" * 32), PAYMENT_HASH)
    tail = final_layer(amt_to_forward=1, total_msat=1, max_hold_blocks=None, report_to=None,
                       amount_commitment=planted)
    inner, _ = onion.build([(S_KEY, tail)], PAYMENT_HASH, size=onion.TAIL_PAYLOAD_SIZE)
    for outer_blob, delivered in ((payers, ((66105, payers),)), (None, ())):
        outer = tail_layer(inner, amount_commitment=outer_blob)
        inc = incoming(amount=outer.amt_to_forward + POLICY.fee(outer.amt_to_forward),
                       cltv_expiry=HEIGHT + 18 + chain._margin(POLICY, 36))
        record, _, _ = read(payload_for(packet(outer), inc), inc)
        assert record.final_tlvs == delivered


@pytest.mark.parametrize("layer", [final_layer(), forward_layer()])
def test_one_msat_short_of_the_fee_returns_the_record_with_our_terms(layer):
    route = (layer,) if layer.is_final else (layer, final_layer())
    good = enough(layer)
    short = Incoming(**{**good.__dict__, "amount_msat": good.amount_msat - 1})
    record, offset, refusal = read(payload_for(packet(*route), short), short)
    assert record.amount_msat == layer.amt_to_forward and offset == ONION_AT
    assert fee_or_expiry_terms(refusal) == (
        failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT, 1234, 567,
        36 - 1 + HEIGHT_SLACK + chain.LEG_CLTV_BUDGET + 100)
    assert code_of(refusal) == failures.NODE | 26
    # and exactly enough is taken
    assert read(payload_for(packet(*route), good), good)[2] is None


@pytest.mark.parametrize("layer", [final_layer(), forward_layer()])
def test_one_block_short_of_cltv_returns_the_record_with_our_terms(layer):
    route = (layer,) if layer.is_final else (layer, final_layer())
    good = enough(layer)
    short = Incoming(**{**good.__dict__, "cltv_expiry": good.cltv_expiry - 1})
    record, _, refusal = read(payload_for(packet(*route), short), short)
    assert record.amount_msat == layer.amt_to_forward
    assert fee_or_expiry_terms(refusal) == (
        failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT, 1234, 567,
        36 - 1 + HEIGHT_SLACK + chain.LEG_CLTV_BUDGET + 100)
    assert read(payload_for(packet(*route), good), good)[2] is None
    # the same HTLC a block later is short too: the height counts
    assert read(payload_for(packet(*route), good), good, height=HEIGHT + 1)[2] is not None


def test_the_refusal_asks_for_the_policys_hold_when_the_layer_sets_none():
    layer = final_layer(max_hold_blocks=None)
    short = Incoming(**{**enough(layer).__dict__, "amount_msat": 1})
    _, _, refusal = read(payload_for(packet(layer), short), short)
    assert fee_or_expiry_terms(refusal)[3] == 500 - 1 + HEIGHT_SLACK + chain.LEG_CLTV_BUDGET + 100
    capped = final_layer(max_hold_blocks=10_000)  # the payer may not ask beyond our cap
    _, _, refusal = read(payload_for(packet(capped), short), short)
    assert fee_or_expiry_terms(refusal)[3] == 500 - 1 + HEIGHT_SLACK + chain.LEG_CLTV_BUDGET + 100


def test_a_zero_hold_is_refused_with_the_terms_for_one_attempt():
    layer = final_layer(max_hold_blocks=0)
    short = Incoming(**{**enough(layer).__dict__, "amount_msat": 1})
    _, _, refusal = read(payload_for(packet(layer), short), short)
    assert fee_or_expiry_terms(refusal)[3] == chain._margin(POLICY, 1)


# --- what the holder holds -----------------------------------------------------------

def test_a_final_layer_becomes_the_record_the_holder_delivers():
    layer = final_layer()
    inc = enough(layer)
    record, offset, refusal = read(payload_for(packet(layer), inc), inc)
    assert refusal is None and offset == ONION_AT
    assert record == layer.to_record()
    assert record.next_onion is None and record.payment_secret == PAYMENT_SECRET


def test_a_next_holder_layer_becomes_a_record_carrying_the_next_onion():
    first, last = forward_layer(please_poll=False), final_layer()
    raw = packet(first, last)
    inc = enough(first)
    record, offset, refusal = read(payload_for(raw, inc), inc)
    _, following = onion.peel(raw, S_SECRET, PAYMENT_HASH)
    assert refusal is None and offset == ONION_AT
    assert record == TrampolineRecord(
        next_node=R, amount_msat=first.amt_to_forward, final_cltv_delta=first.outgoing_cltv_delta,
        payment_secret="", total_msat=first.amt_to_forward, please_poll=False,
        max_hold_blocks=36, report_to=PAYER, next_onion=following.hex())
    # what S passes on is R's to read, and R reads the recipient's layer from it
    assert onion.peel(bytes.fromhex(record.next_onion), R_SECRET, PAYMENT_HASH) == (last, None)
    assert RECIPIENT not in json.dumps(record.to_json())


def test_the_next_holder_reads_what_the_first_passes_on():
    first, last = forward_layer(), final_layer()
    inc = enough(first)
    record, _, _ = read(payload_for(packet(first, last), inc), inc)
    to_r = incoming(amount=last.amt_to_forward + POLICY.fee(last.amt_to_forward),
                    cltv_expiry=HEIGHT + first.outgoing_cltv_delta)
    got, _, refusal = read(onion.final_payload(to_r.amount_msat, to_r.cltv_expiry,
                                               bytes.fromhex(record.next_onion)),
                           to_r, secret=R_SECRET, us=R)
    assert refusal is None and got == last.to_record()


# --- property: a record read without refusal never lets the holder overspend -----------

policies = st.builds(Policy, fee_base_msat=st.integers(0, 10_000), fee_ppm=st.integers(0, 50_000),
                     safety_blocks=st.integers(1, 300), max_hold_blocks=st.integers(1, 2016))


@settings(max_examples=200, deadline=None)
@given(policies, st.booleans(), st.integers(1, 10**8), st.integers(0, 3000),
       st.one_of(st.none(), st.integers(0, 3000)), st.integers(-3000, 10**6),
       st.integers(-30, 3000), st.integers(100, 800_000))
def test_no_refusal_means_the_hold_covers_its_fee_and_cltv(policy, final, amt, delta, max_hold,
                                                          fee_slack, cltv_slack, height):
    """Incoming amount and expiry drawn around what the layer needs, so both sides are hit."""
    incoming_msat = max(1, amt + policy.fee(amt) + fee_slack)
    incoming_left = max(0, delta + chain._margin(policy, 1) + cltv_slack)
    if final:
        layer = final_layer(amt_to_forward=amt, total_msat=amt, outgoing_cltv_delta=delta,
                            max_hold_blocks=max_hold)
        route = (layer,)
    else:
        layer = forward_layer(amt_to_forward=amt, outgoing_cltv_delta=delta,
                              max_hold_blocks=max_hold)
        route = (layer, final_layer())
    inc = incoming(amount=incoming_msat, cltv_expiry=height + incoming_left)
    result = read(payload_for(packet(*route), inc), inc, policy=policy, height=height)
    record, offset, refusal = result
    assert offset == len(encode_tlv_stream({2: encode_tu(inc.amount_msat),
                                            4: encode_tu(inc.cltv_expiry)}))
    assert record.amount_msat == amt and record.final_cltv_delta == delta
    event("refused" if refusal is not None else "taken")
    if refusal is not None:
        assert code_of(refusal) == failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT
        assert fee_or_expiry_terms(refusal)[1:3] == (policy.fee_base_msat, policy.fee_ppm)
        return
    assert record.amount_msat + policy.fee(record.amount_msat) <= inc.amount_msat
    assert inc.cltv_expiry - height >= delta + chain._margin(policy, 1)
    # Holding it: the holder never asks for a route costing more than the HTLC leaves.
    relay = hold.Relay(policy, height)
    verdict, actions = relay.admit(PAYMENT_HASH, inc, record, offset, inc.amount_msat,
                                   inc.cltv_expiry, height, refusal)
    event(f"held: {type(verdict).__name__}")
    for action in actions:
        if isinstance(action, hold.FindRoute):
            assert action.amount_msat == record.amount_msat
            assert (action.amount_msat + action.maxfee_msat + policy.fee(record.amount_msat)
                    <= inc.amount_msat)


# --- the Node: a replay past the layer's CLTV budget, and a fresh HTLC there ------------

RESTART = ARRIVAL + HOLD + 5   # a few blocks after S's hold: too late for a new HTLC


def test_at_the_restart_height_the_layer_no_longer_fits():
    """What makes the replays below meaningful: read would refuse this HTLC as new."""
    hook_onion, htlc = hook(RESTART)
    inc = incoming(amount=htlc["amount_msat"], cltv_expiry=htlc["cltv_expiry"])
    _, _, refusal = peel.read(bytes.fromhex(hook_onion["payload"]), PAYMENT_HASH,
                              onion.secret_key("44" * 32), ISSUE7_S, ISSUE7_POLICY, inc, RESTART)
    assert refusal is not None
    _, _, ok = peel.read(bytes.fromhex(hook_onion["payload"]), PAYMENT_HASH,
                         onion.secret_key("44" * 32), ISSUE7_S, ISSUE7_POLICY, inc, ARRIVAL)
    assert ok is None


def expected_refusal():
    return failures.trampoline_fee_or_expiry_insufficient(
        ISSUE7_POLICY.fee_base_msat, ISSUE7_POLICY.fee_ppm, chain._margin(ISSUE7_POLICY, HOLD))


def test_a_fresh_v2_htlc_at_the_restart_height_is_refused_with_our_terms():
    shell, rpc = holder(RESTART)
    request = Request()
    shell.htlc_accepted(*hook(RESTART), PAYER, request)
    assert request.result == {"result": "fail", "failure_message": expected_refusal()}
    assert shell.relay.held == {}
    assert "datastore" not in [m for m, _ in rpc.calls]


def test_another_htlc_with_a_saved_hash_at_the_restart_height_is_refused_not_reattached():
    first, _ = forwarding_to_r()
    saved = first.relay.held[PAYMENT_HASH]
    shell, _ = holder(RESTART, [saved])
    hook_onion, htlc = hook(RESTART)
    request = Request()
    shell.htlc_accepted({**hook_onion, "shared_secret": "66" * 32}, {**htlc, "id": 9},
                        PAYER, request)
    assert request.result == {"result": "fail", "failure_message": expected_refusal()}
    assert not shell.relay.held[PAYMENT_HASH].attached  # the saved hold still waits for its own


def test_a_replay_of_an_expired_hold_gets_its_own_failure_not_our_terms():
    """Between attempts at the restart height the hold is past its give-up height: the replay
    is reattached and failed as the hold's end (temporary_trampoline_failure), not refused
    as a new HTLC (trampoline_fee_or_expiry_insufficient). test_review_issue7 covers the
    attempt-in-flight and completed cases."""
    first, _ = holder(ARRIVAL)
    request = Request()
    first.htlc_accepted(*hook(ARRIVAL), PAYER, request)
    with first.lock:
        first.relay.route_failed(PAYMENT_HASH, "R offline")
    saved = first.relay.held[PAYMENT_HASH]
    assert saved.state == HoldState.HELD and saved.give_up_height <= RESTART
    shell, _ = holder(RESTART, [saved])
    request = Request()
    shell.htlc_accepted(*hook(RESTART), PAYER, request)
    run_queued(shell)
    assert request.result == {"result": "fail",
                              "failure_message": failures.temporary_trampoline_failure()}
    assert shell.relay.held[PAYMENT_HASH].state == HoldState.FAILED


def test_a_node_without_an_onion_key_refuses_v2_naming_tlv_66103():
    rpc = RecordingRpc(getinfo={"id": ISSUE7_S, "blockheight": ARRIVAL})  # makesecret answers {}
    shell = Node(rpc, lambda *a, **k: None, ISSUE7_POLICY)
    assert shell.onion_secret is None and shell.announced.onion_key is None
    request = Request()
    hook_onion, htlc = hook(ARRIVAL)
    shell.htlc_accepted(hook_onion, htlc, PAYER, request)
    assert request.result["result"] == "fail"
    offset, _ = onion.find_onion(bytes.fromhex(hook_onion["payload"]))
    assert request.result["failure_message"] == failures.invalid_onion_payload(onion.ONION_TLV,
                                                                               offset)


def test_the_node_announces_the_key_it_peels_with():
    shell, rpc = holder(ARRIVAL)
    assert shell.announced.onion_key == onion.public_key("44" * 32)
    assert ("signmessage", {"message": onion.key_statement(onion.public_key("44" * 32))}) \
        in rpc.calls
    hook_onion, _ = hook(ARRIVAL)
    raw = onion.find_onion(bytes.fromhex(hook_onion["payload"]))[1]
    mine, _ = onion.peel(raw, shell.onion_secret, PAYMENT_HASH)
    assert mine.outgoing_node_id == node_id(5)  # the payer's layer for S names R


def test_a_multi_part_final_layer_is_refused_naming_the_onion_tlv():
    layer = final_layer(total_msat=200_000)
    inc = enough(layer)
    record, offset, refusal = read(payload_for(packet(layer), inc), inc)
    verdict, actions = hold.Relay(POLICY, HEIGHT).admit(
        PAYMENT_HASH, inc, record, offset, inc.amount_msat, inc.cltv_expiry, HEIGHT, refusal)
    assert isinstance(verdict, Reject) and actions == []
    assert invalid_onion_payload(verdict) == (failures.INVALID_ONION_PAYLOAD, onion.ONION_TLV,
                                              offset)


def test_a_replay_in_flight_is_reattached_even_when_the_key_is_missing_after_a_restart():
    first, _ = forwarding_to_r()
    saved = first.relay.held[PAYMENT_HASH]
    assert saved.state == HoldState.FORWARDING
    rpc = RecordingRpc(getinfo={"id": ISSUE7_S, "blockheight": ARRIVAL + 2},
                       listdatastore={"datastore": [
                           {"key": ["asyncln", "held", PAYMENT_HASH],
                            "string": json.dumps(saved.to_json())}]})  # makesecret answers {}
    shell = Node(rpc, lambda *a, **k: None, ISSUE7_POLICY)
    assert shell.onion_secret is None
    request = Request()
    shell.htlc_accepted(*hook(ARRIVAL + 2), PAYER, request)
    assert request.result is None, f"the replayed HTLC was answered: {request.result}"
    assert shell.relay.held[PAYMENT_HASH].attached

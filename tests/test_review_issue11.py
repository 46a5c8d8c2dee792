"""Cold review of issue 11's money paths: each finding as a test that failed before its fix."""

from factories import PAYER, PAYMENT_HASH, channel, direct_route, incoming, payload, record
from test_node import RecordingRpc, judged_lost, node

from asyncln import hold


def test_a_lost_part_whose_htlc_shows_up_is_not_passed_over():
    """channeld may list a part's HTLC only after lightningd's 30 s offer timeout: a part
    judged lost whose HTLC then shows must be adopted, never sent beside (two live HTLCs)."""
    rec = record()
    rpc, shell = judged_lost(rec, [{"partid": 1, "groupid": 1, "status": "pending", "amount_msat": 100_000}])
    assert shell.relay.held[PAYMENT_HASH].lost_partids == (1,)
    rpc.answers["listpeerchannels"] = {"channels": [{**channel(), "htlcs": [   # channeld committed it
        {"direction": "out", "id": 0, "payment_hash": PAYMENT_HASH, "amount_msat": 100_000,
         "expiry": 1100, "state": "SENT_ADD_ACK_REVOCATION"}]}]}
    with shell.lock:
        actions = shell.relay.peer_online(rec.next_node)
    shell.run(actions)
    assert [p["partid"] for m, p in rpc.calls if m == "sendonion"] == []
    assert shell.relay.held[PAYMENT_HASH].state == hold.HoldState.FORWARDING
    assert shell.relay.held[PAYMENT_HASH].partid == 1                    # adopted


def test_no_attempt_starts_at_or_past_the_give_up_height():
    """A block reaching the give-up height arrives while the route is searched: the attempt
    the relay planned a block earlier is refused, and the HTLC is failed back in time."""
    rpc = RecordingRpc(createonion={"onion": "00" * 1366, "shared_secrets": ["33" * 32]},
                       sendonion={"status": "pending"})
    shell = node(rpc)
    with shell.lock:
        shell.relay.htlc_accepted(PAYMENT_HASH, incoming(), payload(record()), 110_000, 1500)
        give_up = shell.relay.held[PAYMENT_HASH].give_up_height
        shell.relay.route_failed(PAYMENT_HASH, "offline")
        shell.relay.block(give_up - 1)
        shell.relay.poll(PAYMENT_HASH)
        send = shell.relay.route_found(PAYMENT_HASH, direct_route(record()))[-1]
    assert isinstance(send, hold.SendPay) and send.max_height > give_up + 1  # CLTV has room
    rpc.answers.update(getinfo={"id": PAYER, "blockheight": give_up},
                       getchaininfo={"headercount": give_up, "blockcount": give_up, "ibd": False})
    follow = shell.send_attempt(send)
    assert "sendonion" not in [m for m, _ in rpc.calls]
    assert any(isinstance(a, hold.FailIncoming) for a in follow)

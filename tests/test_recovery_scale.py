"""Recovery at scale: the fast record restore reads exactly what the dataclasses read,
and a restart writes back only the records that changed."""

import json
import socket
import threading
import time
from dataclasses import asdict, replace

import pytest
from factories import PAYMENT_HASH, channel, incoming, record
from hypothesis import given, settings
from hypothesis import strategies as st
from pyln.client import RpcError
from test_node import RecordingRpc

from asyncln import hold
from asyncln.node import Node
from asyncln.policy import Policy
from asyncln.record import HintHop, TrampolineRecord, restore
from asyncln.states import HoldState
from asyncln.store import list_all


def stored(**changes):
    held = hold.HeldPayment(PAYMENT_HASH, incoming(), record(), 1000, 1100, 1010,
                            attached=False)
    return json.loads(json.dumps(replace(held, **changes).to_json(), sort_keys=True))


hints = st.lists(st.lists(st.builds(HintHop, node_id=st.just("02" + "11" * 32),
                                    short_channel_id=st.just("1x2x3"),
                                    fee_base_msat=st.integers(0, 10), fee_ppm=st.integers(0, 10),
                                    cltv_delta=st.integers(0, 10)),
                          min_size=1, max_size=2).map(tuple), max_size=2).map(tuple)


@settings(max_examples=60, deadline=None)
@given(state=st.sampled_from(list(HoldState)), attempts=st.integers(0, 5),
       lost=st.lists(st.integers(1, 9), max_size=3).map(tuple), route_hints=hints,
       error=st.one_of(st.none(), st.text(max_size=5)), paid=st.one_of(st.none(), st.floats(0, 1)))
def test_restore_reads_what_init_reads(state, attempts, lost, route_hints, error, paid):
    held = hold.HeldPayment(PAYMENT_HASH, incoming(), replace(record(), route_hints=route_hints),
                            1000, 1100, 1010, attempts=attempts, state=state, last_error=error,
                            lost_partids=lost, paid_at=paid, attached=False)
    back = hold.HeldPayment.from_json(json.loads(json.dumps(held.to_json())))
    assert back == held and back.attached is False
    assert asdict(back) == asdict(held)


def test_restore_fills_defaults_and_refuses_what_init_refuses():
    data = stored()
    for optional in ("sent_msat", "woken_at", "paid_at", "lost_partids", "hops"):
        data.pop(optional, None)
    back = hold.HeldPayment.from_json(data)
    assert (back.sent_msat, back.woken_at, back.lost_partids, back.hops) == (None, None, (), 0)
    for broken in ({**stored(), "surprise": 1}, {k: v for k, v in stored().items() if k != "give_up_height"},
                   {**stored(), "attached": True},
                   {**stored(), "incoming": {**stored()["incoming"], "odd": 1}}):
        with pytest.raises(TypeError):
            hold.HeldPayment.from_json(broken)
    with pytest.raises(TypeError):
        restore(TrampolineRecord, {"amount_msat": 1})


def test_restore_runs_post_init_checks():
    data = record().to_json()
    data["final_tlvs"] = [[2, "00"]]  # even: refused, as TrampolineRecord(...) refuses it
    with pytest.raises(ValueError):
        TrampolineRecord.from_json(data)


def test_recovery_writes_nothing_unchanged():
    """A record whose channel lightningd does not list (its HTLC may be gone) is loaded
    as it is: the restart does not write 100,000 records back."""
    rpc = RecordingRpc(listpeerchannels={"channels": [channel(scid="9x9x9", alias="8x8x8")]},
                       listdatastore={"datastore": [
                           {"key": ["asyncln", "held", PAYMENT_HASH],
                            "string": json.dumps(stored(incoming=incoming(channel_id=None)))}]})
    node = Node(rpc, lambda *a, **k: None, Policy())
    assert PAYMENT_HASH in node.relay.held and not node.relay.unsaved


class SocketRpc:
    """lightningd's RPC socket answering one listdatastore in small pieces, the blank line
    that ends it split across two of them."""

    def __init__(self, tmp_path, answer: bytes, piece: int):
        self.socket_path = str(tmp_path / "rpc")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.socket_path)
        self.server.listen(1)
        self.requests = []

        def serve():
            conn, _ = self.server.accept()
            with conn:
                self.requests.append(json.loads(conn.recv(65536)))
                for start in range(0, len(answer), piece):
                    conn.sendall(answer[start:start + piece])
                    time.sleep(0.001)  # one recv per piece
        threading.Thread(target=serve, daemon=True).start()


def test_list_all_reads_a_split_answer(tmp_path):
    entries = [{"key": ["asyncln", "held", f"{i:064x}"], "string": json.dumps({"i": i})}
               for i in range(50)]
    body = json.dumps({"jsonrpc": "2.0", "id": "x", "result": {"datastore": entries}}).encode()
    piece = 97
    answer = body + b"\n\n"
    while len(answer) % piece != 1:  # the blank line's two newlines in two pieces
        body += b" "
        answer = body + b"\n\n"
    rpc = SocketRpc(tmp_path, answer, piece)
    assert list_all(rpc, ["asyncln", "held"]) == entries
    [request] = rpc.requests
    assert request["params"] == {"key": ["asyncln", "held"]}
    assert request["filter"] == {"datastore": [{"key": True, "string": True}]}


def test_list_all_reports_lightningd_errors(tmp_path):
    answer = json.dumps({"jsonrpc": "2.0", "id": "x",
                         "error": {"code": -1, "message": "no"}}).encode() + b"\n\n"
    with pytest.raises(RpcError):
        list_all(SocketRpc(tmp_path, answer, 10), ["asyncln", "held"])


def test_changed_refuses_an_unknown_field_as_replace_does():
    held = hold.HeldPayment.from_json(stored())
    assert hold._changed(held, {"attempts": 3}) == replace(held, attempts=3)
    with pytest.raises(TypeError):
        hold._changed(held, {"atempts": 3})

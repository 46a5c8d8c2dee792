"""The Rod shell for R, B and A (and S's payer cancel), against fake lightningds wired together.

``Net`` stands in for a few lightningds and the wire between them: each
:class:`asyncln.node.Node` gets a ``FakeLightningd`` that records every RPC
call (so tests can assert their order), keeps a datastore, mints and decodes
fake invoices, signs messages with real keys, and hands ``sendcustommsg`` to the
peer's ``custom_message`` as lightningd's custommsg hook would. The peer's
worker jobs then run at once, one node at a time and never re-entrantly, so
a payer's ``fetch`` (which waits for an answer) completes on the test's own
thread. A peer with no Node is a scripted responder.
"""

import dataclasses
import hashlib
import json
import time
from typing import Callable, Dict, List, Optional

import pytest
from factories import (PAYER, PAYMENT_HASH, direct_route, incoming, node_id, payload, record,
                       signmessage, stored_held)
from pyln.client import RpcError

from asyncln import code as codes
from asyncln import hold, messages, note, onion, payee, rod, rod_shell, signature
from asyncln import payer as payer_core
from asyncln.errors import AsynclnError, Code
from asyncln.features import feature_hex
from asyncln.node import Node
from asyncln.policy import Policy
from asyncln.recipient import RecipientConfig
from asyncln.states import HoldState, PayState

A, B, R, R2, C, MALLORY, STRANGER = (node_id(n) for n in range(51, 58))
DAY = 86_400


def rpc_error(method, message="broke", code=-1):
    return RpcError(method, {}, {"code": code, "message": message})


class FakeLightningd:
    """One node's lightningd RPC, as far as the Rod shell uses it."""

    def __init__(self, net: "Net", node_id: str, height: int = 1000):
        self.net, self.id, self.height = net, node_id, height
        self.calls: List[tuple] = []
        self.datastore: Dict[tuple, str] = {}
        self.fail: Dict[str, Callable[[dict], bool]] = {}  # method -> when to raise RpcError
        self.handlers: Dict[str, Callable[[dict], dict]] = {}
        self.invoices: List[dict] = []
        self.secret = hashlib.sha256(b"makesecret" + bytes.fromhex(node_id)).hexdigest()

    def getinfo(self):
        return self.call("getinfo")

    def call(self, method, params=None):
        params = params or {}
        self.calls.append((method, params))
        if method in self.fail and self.fail[method](params):
            raise rpc_error(method, f"{method} broke")
        handler = self.handlers.get(method) or getattr(self, "_" + method, None)
        if handler is None:
            raise rpc_error(method, f"Unknown command '{method}'", -32601)
        return handler(params)

    # --- what was done -------------------------------------------------------

    def methods(self):
        return [m for m, _ in self.calls]

    def sent(self, kind=None, to=None):
        """(peer, message) of every sendcustommsg, decoded."""
        out = [(p["node_id"], messages.decode(p["msg"])) for m, p in self.calls
               if m == "sendcustommsg"]
        return [(peer, msg) for peer, msg in out
                if (kind is None or isinstance(msg, kind)) and (to is None or peer == to)]

    def stored(self, kind, key):
        if kind == "held":
            return stored_held(self.datastore, key)
        raw = self.datastore.get(("asyncln", kind, key))
        return None if raw is None else json.loads(raw)

    def index(self, predicate):
        return next(i for i, call in enumerate(self.calls) if predicate(*call))

    # --- lightningd ------------------------------------------------------------

    def _getinfo(self, params):
        return {"id": self.id, "blockheight": self.height}

    def _waitblockheight(self, params):
        return {"blockheight": self.height}

    def _getchaininfo(self, params):
        return {"chain": "regtest", "headercount": self.height, "blockcount": self.height,
                "ibd": False}

    def _listdatastore(self, params):
        prefix = tuple(params.get("key", []))
        return {"datastore": [{"key": list(k), "string": v} for k, v in sorted(self.datastore.items())
                              if k[:len(prefix)] == prefix]}

    def _datastore(self, params):
        self.datastore[tuple(params["key"])] = params["string"]
        return {"key": params["key"]}

    def _deldatastore(self, params):
        self.datastore.pop(tuple(params["key"]), None)
        return {}

    def _listpeers(self, params):
        return {"peers": [{"id": p, "connected": True, "features": feature_hex()}
                          for p in sorted(self.net.peers(self.id))]}

    def _listpeerchannels(self, params):
        peers = [params["id"]] if "id" in params else sorted(self.net.peers(self.id))
        return {"channels": [{"peer_id": p, "peer_connected": p in self.net.peers(self.id),
                              "state": "CHANNELD_NORMAL"}
                             for p in peers if frozenset((self.id, p)) in self.net.channels]}

    def _listsendpays(self, params):
        return {"payments": []}

    def _connect(self, params):
        target = params["id"].split("@")[0]
        if target in self.net.down or not (target in self.net.nodes
                                           or target in self.net.responders):
            raise rpc_error("connect", "Connection refused", 401)
        self.net.connect(self.id, target, channel=False)
        return {"id": target}

    def _sendcustommsg(self, params):
        target = params["node_id"]
        if target not in self.net.peers(self.id):
            raise rpc_error("sendcustommsg", "Peer is not connected", 401)
        self.net.deliver(self.id, target, params["msg"])
        return {"status": "Message sent"}

    def _invoice(self, params):
        payment_hash = hashlib.sha256(params["label"].encode()).hexdigest()
        bolt11 = "lnbcrt1" + payment_hash
        decoded = {"type": "bolt11 invoice", "valid": True, "payee": self.id,
                   "payment_hash": payment_hash, "payment_secret": "22" * 32,
                   "created_at": int(time.time()), "expiry": params["expiry"],
                   "min_final_cltv_expiry": 18, "description": params["description"]}
        if params["amount_msat"] != "any":
            decoded["amount_msat"] = params["amount_msat"]
        self.net.bolt11[bolt11] = decoded
        self.invoices.append({"label": params["label"], "bolt11": bolt11,
                              "payment_hash": payment_hash, "status": "unpaid"})
        return {"bolt11": bolt11, "payment_hash": payment_hash}

    def _listinvoices(self, params):
        return {"invoices": [i for i in self.invoices
                             if i["payment_hash"] == params.get("payment_hash")]}

    def _decode(self, params):
        if params["string"] not in self.net.bolt11:
            raise rpc_error("decode", "Invalid bolt11: Bad bech32 string")
        return dict(self.net.bolt11[params["string"]])

    def _makesecret(self, params):
        if params == {"string": note.NOTE_KEY_LABEL}:
            return {"secret": self.secret}
        label = params["string"].encode()  # another key of this node's: distinct per label
        return {"secret": hashlib.sha256(label + bytes.fromhex(self.id)).hexdigest()}

    def _signmessage(self, params):
        return {"zbase": signmessage(self.id, params["message"])}

    def _listnodes(self, params):
        return {"nodes": [{"nodeid": params["id"],
                           "addresses": self.net.announced.get(params["id"], [])}]}


class Net:
    def __init__(self):
        self.nodes: Dict[str, Node] = {}
        self.links = set()            # frozenset({a, b}): connected
        self.channels = set()         # frozenset({a, b}): a channel between them
        self.down = set()             # ids that refuse connections
        self.responders: Dict[str, Callable] = {}  # id -> f(sender, msg) -> [(from, msg), ...]
        self.heard: Dict[str, List] = {}            # responder id -> [(sender, msg)]
        self.bolt11: Dict[str, dict] = {}           # every invoice any node made
        self.announced: Dict[str, list] = {}
        self.errors: List[Exception] = []           # what a worker job raised
        self.logs: List[str] = []
        self._busy = set()

    def add(self, name, limits=rod.RodLimits(), rods=(), pool=20, expiry=7 * DAY,
            rpc: Optional[FakeLightningd] = None, policy=Policy()) -> Node:
        rpc = rpc or FakeLightningd(self, name)
        config = RecipientConfig(tuple(r if isinstance(r, codes.Rod) else codes.Rod(r)
                                       for r in rods), pool, expiry)
        node = Node(rpc, lambda msg, level="info": self.logs.append(msg), policy,
                    rod_limits=limits, recipient=config)
        self.nodes[name] = node
        return node

    def respond(self, name, answer=lambda sender, msg: []):
        self.responders[name] = answer
        self.heard[name] = []

    def connect(self, a, b, channel=True):
        self.links.add(frozenset((a, b)))
        if channel:
            self.channels.add(frozenset((a, b)))

    def disconnect(self, a, b):
        self.links.discard(frozenset((a, b)))

    def peers(self, name):
        return {p for link in self.links if name in link for p in link if p != name}

    def deliver(self, sender, target, payload):
        if target in self.responders:
            msg = messages.decode(payload)
            self.heard[target].append((sender, msg))
            for origin, reply in self.responders[target](sender, msg):
                self.nodes[sender].custom_message(origin, messages.encode(reply))
            return
        self.nodes[target].custom_message(sender, payload)
        self.run(target)

    def run(self, name):
        """The node's worker: its queued jobs in order; never re-entered while one runs."""
        if name in self._busy:
            return
        self._busy.add(name)
        node = self.nodes[name]
        try:
            for _ in range(10_000):
                if not node._jobs:
                    return
                job = node._jobs.popleft()
                try:
                    job()
                except Exception as e:  # the worker logs it and goes on
                    self.errors.append(e)
            raise AssertionError(f"{name}'s worker never went idle")
        finally:
            self._busy.discard(name)

    def settle(self):
        for _ in range(100):
            if not any(n._jobs for n in self.nodes.values()):
                return
            for name in list(self.nodes):
                self.run(name)
        raise AssertionError("the nodes never went idle")

    def arrive(self, name, peer):
        """``peer`` connected to ``name``: the connect notification."""
        self.nodes[name].peer_connected(peer)
        self.run(name)


def rpc_of(node: Node) -> FakeLightningd:
    return node.rpc


def invoice_of(net, payee, amount="any", rod_id=R, description=None):
    """An invoice ``payee``'s lightningd made, as B's shell deposits it at ``rod_id``."""
    maker = net.nodes.get(payee) or net.add(payee)
    return rpc_of(maker)._invoice({
        "label": f"inv{len(net.bolt11)}", "expiry": 7 * DAY, "amount_msat": amount,
        "description": codes.deposit_description(rod_id) if description is None else description})


@pytest.fixture
def net():
    return Net()


def rod_and_recipient(net, pool=20, limits=rod.RodLimits(), expiry=7 * DAY):
    """R keeps B's invoices; B has a channel with R and is connected."""
    r = net.add(R, limits)
    b = net.add(B, rods=(R,), pool=pool, expiry=expiry)
    net.connect(B, R)
    return r, b


def deposit_from(net, r, depositor, *bolt11):
    r.custom_message(depositor, messages.encode(messages.Deposit(tuple(bolt11))))
    net.run(R)


# --- R: the Rod ----------------------------------------------------------------------------

def test_a_strangers_deposit_is_refused_and_nothing_is_stored(net):
    r = net.add(R)
    net.respond(STRANGER)
    net.connect(STRANGER, R, channel=False)
    net.bolt11["lnbcrt1stranger"] = {"type": "bolt11 invoice", "valid": True, "payee": STRANGER}
    deposit_from(net, r, STRANGER, "lnbcrt1stranger")
    [(_, answer)] = rpc_of(r).sent(messages.PoolStatus, to=STRANGER)
    assert (answer.level, answer.accepted, answer.max_invoices) == (0, 0, 0)
    assert len(answer.refused) == 1 and "only for its channel peers" in answer.refused[0]
    assert "datastore" not in rpc_of(r).methods() and "decode" not in rpc_of(r).methods()
    assert r.rods.rod.depositors() == []


def test_a_deposit_of_someone_elses_invoice_is_refused(net):
    r, b = rod_and_recipient(net)
    net.respond(B)  # B answers nothing: only R's answer is looked at
    foreign = invoice_of(net, C)["bolt11"]
    deposit_from(net, r, B, foreign)
    [(_, answer)] = rpc_of(r).sent(messages.PoolStatus, to=B)
    assert answer.accepted == 0 and answer.level == 0
    assert len(answer.refused) == 1 and "not the depositor's own" in answer.refused[0]
    assert "datastore" not in rpc_of(r).methods()
    assert r.rods.rod.level(B) == 0


@pytest.mark.parametrize("description", [codes.deposit_description(R2), "", "coffee"])
def test_a_deposit_not_made_for_this_rod_is_refused(net, description):
    r, _ = rod_and_recipient(net)
    net.respond(B)
    deposit_from(net, r, B, invoice_of(net, B, description=description)["bolt11"])
    [(_, answer)] = rpc_of(r).sent(messages.PoolStatus, to=B)
    assert answer.accepted == 0 and len(answer.refused) == 1
    assert codes.deposit_description(R) in answer.refused[0]
    assert "datastore" not in rpc_of(r).methods()


def test_an_undecodable_deposit_is_refused_with_lightningds_reason(net):
    r, _ = rod_and_recipient(net)
    net.respond(B)
    deposit_from(net, r, B, "lnbcrt1garbage")
    [(_, answer)] = rpc_of(r).sent(messages.PoolStatus, to=B)
    assert answer.refused == ("cannot decode: Invalid bolt11: Bad bech32 string",)


def test_an_accepted_deposit_is_written_before_the_rod_answers(net):
    r, b = rod_and_recipient(net)
    net.respond(B)
    minted = [invoice_of(net, B) for _ in range(3)]
    deposit_from(net, r, B, *(m["bolt11"] for m in minted))
    rpc = rpc_of(r)
    written = rpc.index(lambda m, p: m == "datastore" and p["key"] == ["asyncln", "rod", B])
    answered = rpc.index(lambda m, p: m == "sendcustommsg")
    assert written < answered
    assert rpc.methods().count("sendcustommsg") == 1
    pool = rod.Pool.from_json(rpc.stored("rod", B))
    assert [i.payment_hash for i in pool.invoices] == [m["payment_hash"] for m in minted]
    [(_, answer)] = rpc.sent(messages.PoolStatus, to=B)
    assert (answer.level, answer.accepted, answer.refused) == (3, 3, ())
    assert answer.max_invoices == r.rods.rod.limits.max_invoices


def test_a_failed_deposit_write_sends_no_pool_status(net):
    r, b = rod_and_recipient(net)
    net.respond(B)
    rpc_of(r).fail["datastore"] = lambda p: True
    minted = invoice_of(net, B)
    deposit_from(net, r, B, minted["bolt11"])
    assert rpc_of(r).sent(messages.PoolStatus) == []
    assert [type(e) for e in net.errors] == [RpcError]


def stocked(net, count=3, limits=rod.RodLimits(), amount="any"):
    """R holds ``count`` of B's invoices; B is then offline."""
    r, b = rod_and_recipient(net, pool=count, limits=limits)
    net.arrive(B, R)
    net.settle()
    assert r.rods.rod.level(B) == count
    net.disconnect(B, R)
    return r, b


def request(net, r, request_id, recipient=B, amount=5000, sender=A):
    """``sender`` asks R for an invoice; R's worker answers it."""
    r.custom_message(sender, messages.encode(messages.InvoiceRequest(request_id, recipient,
                                                                     amount)))
    net.run(R)


def test_serve_writes_the_pool_before_sending_the_invoice(net):
    r, _ = stocked(net)
    net.respond(A)
    net.connect(A, R, channel=False)
    before = len(rpc_of(r).calls)
    request(net, r, "01" * 8)
    calls = rpc_of(r).calls[before:]
    assert [m for m, _ in calls] == ["datastore", "sendcustommsg"]
    assert calls[0][1]["key"] == ["asyncln", "rod", B]
    [(_, answer)] = rpc_of(r).sent(messages.InvoiceResponse, to=A)
    served = net.bolt11[answer.bolt11]["payment_hash"]
    pool = rod.Pool.from_json(json.loads(calls[0][1]["string"]))
    assert served in pool.served and pool.served[served].requester == A
    assert served not in {i.payment_hash for i in pool.invoices} and len(pool.invoices) == 2


def test_a_failed_pool_write_means_no_invoice_is_sent(net):
    r, _ = stocked(net)
    net.respond(A)
    net.connect(A, R, channel=False)
    on_disk = rpc_of(r).stored("rod", B)
    rpc_of(r).fail["datastore"] = lambda p: True
    request(net, r, "01" * 8)
    assert rpc_of(r).sent(messages.InvoiceResponse) == []
    assert rpc_of(r).stored("rod", B) == on_disk
    assert len(net.errors) == 1


@pytest.mark.parametrize("recipient, code", [(C, Code.UNKNOWN_RECIPIENT), (B, Code.POOL_EMPTY)])
def test_an_invoice_request_refusal_carries_the_asyncln_code(net, recipient, code):
    r, _ = stocked(net, count=1)
    net.respond(A)
    net.connect(A, R, channel=False)
    request(net, r, "01" * 8)  # takes the only invoice
    request(net, r, "02" * 8, recipient)
    answer = rpc_of(r).sent(messages.InvoiceResponse, to=A)[-1][1]
    assert answer.request_id == "02" * 8 and answer.bolt11 is None
    assert answer.error_code == int(code) and answer.error


def test_a_rate_limited_request_answers_rate_limited(net):
    r, _ = stocked(net, count=3, limits=rod.RodLimits(fetches_per_hour=1))
    net.respond(A)
    net.connect(A, R, channel=False)
    for n in (1, 2):
        request(net, r, f"{n:016x}")
    answers = [m for _, m in rpc_of(r).sent(messages.InvoiceResponse, to=A)]
    assert answers[0].bolt11 and answers[1].error_code == int(Code.RATE_LIMITED)
    assert r.rods.rod.level(B) == 2


@pytest.mark.parametrize("kind", ["invoice_request", "deposit"])
def test_two_requests_queued_from_one_peer_are_both_handled(net, kind):
    r, b = stocked(net, count=2)
    net.connect(B, R)
    net.respond(A)
    net.connect(A, R, channel=False)
    if kind == "invoice_request":  # the worker is busy: both wait in its queue
        for request_id in ("01" * 8, "02" * 8):
            r.custom_message(A, messages.encode(messages.InvoiceRequest(request_id, B, 5000)))
        net.run(R)
        answered = {m.request_id for _, m in rpc_of(r).sent(messages.InvoiceResponse, to=A)}
        assert answered == {"01" * 8, "02" * 8}
    else:
        level = r.rods.rod.level(B)
        for _ in range(2):
            r.custom_message(B, messages.encode(messages.Deposit((invoice_of(net, B)["bolt11"],))))
        net.run(R)
        assert r.rods.rod.level(B) == level + 2


def test_a_rod_restarted_from_its_datastore_never_serves_a_hash_twice(net):
    r, _ = stocked(net, count=2)
    net.respond(A)
    net.connect(A, R, channel=False)
    request(net, r, "01" * 8)
    first = rpc_of(r).sent(messages.InvoiceResponse, to=A)[-1][1].bolt11
    again = net.add(R, rpc=rpc_of(r))                  # a restart: the same datastore
    request(net, again, "02" * 8)
    request(net, again, "03" * 8)
    later = [m for _, m in rpc_of(r).sent(messages.InvoiceResponse, to=A)][1:]
    assert later[0].bolt11 not in (None, first)
    assert later[1].error_code == int(Code.POOL_EMPTY)


# --- B: the recipient -------------------------------------------------------------------------

def pool_status(level, max_invoices=50, refused=()):
    return messages.encode(messages.PoolStatus(level, 0, max_invoices, DAY, tuple(refused)))


def test_a_low_pool_status_from_my_rod_deposits_amountless_invoices(net):
    b = net.add(B, rods=(R,), pool=20, expiry=3 * DAY)
    net.respond(R)
    net.connect(B, R)
    b.rods.query(R)
    b.custom_message(R, pool_status(level=15))
    net.run(B)
    minted = [p for m, p in rpc_of(b).calls if m == "invoice"]
    assert len(minted) == 5
    assert all(p["amount_msat"] == "any" and p["expiry"] == 3 * DAY for p in minted)
    assert all(p["label"].startswith(rod_shell.INVOICE_LABEL) for p in minted)
    assert len({p["label"] for p in minted}) == 5
    [(_, query), (peer, deposit)] = net.heard[R]
    assert query == messages.Deposit(()) and peer == B
    assert deposit.invoices == tuple(i["bolt11"] for i in rpc_of(b).invoices)
    assert b.rods.rods_json() == [{"id": R, "level": 15, "max_invoices": 50}]


@pytest.mark.parametrize("peer, status", [
    (C, pool_status(level=0)),                                    # not one of my Rods
    (R, None),                                                    # my Rod, but unasked
    (R, pool_status(level=0, refused=("the pool is full",))),     # my Rod refused something
    (R, pool_status(level=20)),                                   # full
    (R, pool_status(level=3, max_invoices=3)),                    # the Rod's max
])
def test_no_deposit_when_not_asked_for(net, peer, status):
    b = net.add(B, rods=(R,), pool=20)
    for other in (R, C):
        net.respond(other)
        net.connect(B, other)
    if status is None:
        status = pool_status(level=0)
    else:
        b.rods.query(R)
    b.custom_message(peer, status)
    net.run(B)
    assert "invoice" not in rpc_of(b).methods()
    assert [m for _, m in net.heard[R] if m != messages.Deposit(())] == net.heard[C] == []


def test_a_pool_status_never_asks_for_more_than_one_batch(net):
    b = net.add(B, rods=(R,), pool=100)
    net.respond(R)
    net.connect(B, R)
    b.rods.query(R)
    b.custom_message(R, pool_status(level=0, max_invoices=100))
    net.run(B)
    assert rpc_of(b).methods().count("invoice") == messages.MAX_DEPOSIT_BATCH


def test_the_top_up_fills_the_pool_up_to_the_rods_max_and_stops(net):
    r, b = rod_and_recipient(net, pool=80, limits=rod.RodLimits(max_invoices=50,
                                                                max_bytes=100_000))
    net.arrive(B, R)
    net.settle()
    assert r.rods.rod.level(B) == 50
    assert rpc_of(b).methods().count("invoice") == 50       # none minted in vain
    assert all(not s.refused for _, s in rpc_of(r).sent(messages.PoolStatus))
    assert rod.Pool.from_json(rpc_of(r).stored("rod", B)).invoices == r.rods.rod.pool(B).invoices
    assert net.errors == []


def test_the_pool_is_topped_up_again_after_payers_drained_it(net):
    r, b = stocked(net, count=5)
    net.respond(A)
    net.connect(A, R, channel=False)
    for n in range(3):
        request(net, r, f"{n:016x}")
    assert r.rods.rod.level(B) == 2
    b.block(1006)  # the next window of asyncln-poll-blocks: B may mint a pool again
    net.settle()
    net.connect(B, R)
    net.arrive(B, R)
    net.settle()
    assert r.rods.rod.level(B) == 5
    assert rpc_of(b).methods().count("invoice") == 8
    b.block(1012)  # a later block: the pool is full, nothing more is asked
    net.settle()
    assert rpc_of(b).methods().count("invoice") == 8


def test_a_rod_that_refuses_every_invoice_is_not_sent_a_batch_every_poll(net):
    r, b = rod_and_recipient(net, pool=20, limits=rod.RodLimits(min_expiry_seconds=2 * DAY),
                             expiry=DAY)
    net.arrive(B, R)
    net.settle()
    assert rpc_of(b).methods().count("invoice") == 20 and r.rods.rod.level(B) == 0
    for height in range(1001, 1061):
        b.block(height)
        net.settle()
    assert rpc_of(b).methods().count("invoice") == 20


def met_before_the_channel(net, limits=rod.RodLimits(), pool=5):
    """B connects to its Rod R before their channel exists: R refuses B's first query."""
    r = net.add(R, limits)
    b = net.add(B, rods=(R,), pool=pool)
    net.connect(B, R, channel=False)
    net.arrive(B, R)
    net.settle()
    assert r.rods.rod.level(B) == 0 and "invoice" not in rpc_of(b).methods()
    return r, b


def queries(b: Node) -> int:
    return sum(1 for _, m in rpc_of(b).sent(messages.Deposit, to=R) if m == messages.Deposit(()))


def at_block(net, node: Node, height: int) -> None:
    node.rpc.height = height
    node.block(height)
    net.settle()


def test_the_pool_fills_as_soon_as_the_channel_to_my_rod_is_usable(net):
    """Issue 12, item 7: the channel event asks again at once, not a poll later."""
    r, b = met_before_the_channel(net)
    net.channels.add(frozenset((B, R)))
    b.rods.channel_changed(R, "CHANNELD_NORMAL")
    net.settle()
    assert r.rods.rod.level(B) == 5
    assert rpc_of(b).methods().count("invoice") == 5  # the refused query minted nothing
    assert rpc_of(b).stored(rod_shell.MINTED, R)["count"] == 5
    assert net.errors == []


@pytest.mark.parametrize("peer, state", [(C, "CHANNELD_NORMAL"),
                                         (R, "CHANNELD_AWAITING_LOCKIN"), (R, "ONCHAIN")])
def test_other_channel_events_ask_nothing(net, peer, state):
    r, b = met_before_the_channel(net)
    net.channels.add(frozenset((B, R)))
    b.rods.channel_changed(peer, state)
    net.settle()
    assert queries(b) == 1 and r.rods.rod.level(B) == 0


def test_a_refused_depositor_asks_again_the_next_block_once_its_channel_is_usable(net):
    """A channel event missed (or it came before the Rod saw the channel): the next block asks."""
    r, b = met_before_the_channel(net)
    at_block(net, b, 1001)
    assert queries(b) == 1  # no channel yet: nothing to ask
    net.channels.add(frozenset((B, R)))
    at_block(net, b, 1002)
    assert r.rods.rod.level(B) == 5 and queries(b) == 2


def test_a_rod_that_keeps_refusing_is_asked_once_a_block_and_mints_nothing(net):
    r, b = met_before_the_channel(net, limits=rod.RodLimits(depositors="none"))
    net.channels.add(frozenset((B, R)))  # usable, but R keeps nobody's invoices
    for height in range(1001, 1031):
        at_block(net, b, height)
        b.rods.on_block(height)  # the same block twice: still one query
        net.settle()
    b.rods.channel_changed(R, "CHANNELD_NORMAL")
    net.settle()
    assert queries(b) == 1 + 30 + 1
    assert "invoice" not in rpc_of(b).methods() and rpc_of(b).stored(rod_shell.MINTED, R) is None


def refusing_deposits(sender, msg):
    """A Rod that answers B's query with room but refuses the invoices that follow, as a
    Rod does whose channel with B closed in between."""
    if not isinstance(msg, messages.Deposit):
        return []
    if msg.invoices:
        return [(R, messages.PoolStatus(0, 0, 0, DAY, ("this Rod keeps invoices only for "
                                                       "its channel peers",)))]
    return [(R, messages.PoolStatus(0, 0, 50, DAY, ()))]


def test_invoices_refused_with_their_depositor_are_deposited_again_not_minted_again(net):
    r = net.add(R)
    b = net.add(B, rods=(R,), pool=5)
    net.connect(B, R)
    net.respond(R, refusing_deposits)
    net.arrive(B, R)
    net.settle()
    for _ in range(10):  # it keeps refusing: the same invoices go again, no new ones
        b.rods.channel_changed(R, "CHANNELD_NORMAL")
        net.settle()
    deposits = [m for _, m in net.heard[R] if isinstance(m, messages.Deposit) and m.invoices]
    first = deposits[0]
    assert len(first.invoices) == 5 and len(deposits) == 11
    assert all(m.invoices == first.invoices for m in deposits)
    del net.responders[R]  # now R keeps them
    b.rods.channel_changed(R, "CHANNELD_NORMAL")
    net.settle()
    assert [i.bolt11 for i in r.rods.rod.pool(B).invoices] == list(first.invoices)
    assert rpc_of(b).methods().count("invoice") == 5
    assert rpc_of(b).stored(rod_shell.MINTED, R)["count"] == 5
    assert net.errors == []


def deposited(b: Node, payment_hash=PAYMENT_HASH):
    """B's lightningd holds an invoice with this hash, made by B's shell for a Rod."""
    rpc_of(b).invoices.append({"label": rod_shell.INVOICE_LABEL + "1", "bolt11": "lnbcrt1",
                               "payment_hash": payment_hash, "status": "unpaid"})


def note_for(b: Node, text: str, payment_hash=PAYMENT_HASH) -> str:
    return note.seal(text, note.note_public_key(rpc_of(b).secret), payment_hash).hex()


def test_a_good_note_from_my_rod_is_stored_and_acked(net):
    b = net.add(B, rods=(R,))
    net.respond(R)
    net.connect(B, R)
    deposited(b)
    b.custom_message(R, messages.encode(messages.Note(B, PAYMENT_HASH, note_for(b, "for #12"))))
    net.run(B)
    stored = rpc_of(b).stored("note", PAYMENT_HASH)
    assert stored["note"] == "for #12" and stored["rod"] == R
    assert net.heard[R] == [(B, messages.NoteAck(PAYMENT_HASH))]
    assert [n["note"] for n in b.rods.listnotes()["notes"]] == ["for #12"]
    assert b.rods.listnotes()["notes"][0]["invoice_status"] == "unpaid"


@pytest.mark.parametrize("sealed, ours", [
    ("00" * 60, True),                   # garbage
    ("other hash", True),                # sealed for another payment
    ("other key", True),                 # sealed to another node's key
    ("good", False),                     # fine, but for no invoice of ours
])
def test_a_note_that_fails_its_checks_is_acked_but_not_stored(net, sealed, ours):
    b = net.add(B, rods=(R,))
    net.respond(R)
    net.connect(B, R)
    if ours:
        deposited(b)
    sealed = {"other hash": lambda: note_for(b, "hi", payment_hash="ab" * 32),
              "other key": lambda: note.seal("hi", note.note_public_key("77" * 32),
                                             PAYMENT_HASH).hex(),
              "good": lambda: note_for(b, "hi")}.get(sealed, lambda: sealed)()
    b.custom_message(R, messages.encode(messages.Note(B, PAYMENT_HASH, sealed)))
    net.run(B)
    assert rpc_of(b).stored("note", PAYMENT_HASH) is None
    assert net.heard[R] == [(B, messages.NoteAck(PAYMENT_HASH))]
    assert b.rods.listnotes() == {"notes": []}


def test_a_note_for_me_from_a_peer_that_is_not_my_rod_is_ignored(net):
    b = net.add(B, rods=(R,))
    deposited(b)
    net.respond(C)
    net.connect(B, C)
    b.custom_message(C, messages.encode(messages.Note(B, PAYMENT_HASH, note_for(b, "hi"))))
    net.run(B)
    assert rpc_of(b).stored("note", PAYMENT_HASH) is None
    assert net.heard[C] == []  # no ack either
    assert b.rods.rod.depositors() == []  # nor kept as if B were C's Rod


def test_code_is_signed_and_names_my_rods(net):
    net.announced[R2] = [{"type": "ipv4", "address": "10.0.0.2", "port": 9735},
                         {"type": "dns", "address": "rod2.example", "port": 9736},
                         {"type": "websocket", "port": 9999}]
    b = net.add(B, rods=(codes.Rod(R, ("rod.example:9735",)), R2))
    before = len(rpc_of(b).calls)
    out = b.rods.code()
    paycode = codes.PaymentCode.decode(out["code"])
    assert paycode.node_id == B == out["node_id"]
    assert paycode.rods == (codes.Rod(R, ("rod.example:9735",)),
                            codes.Rod(R2, ("10.0.0.2:9735", "rod2.example:9736")))
    assert out["rods"] == [{"id": r.node_id, "addresses": list(r.addresses)}
                           for r in paycode.rods]
    [signed] = [p for m, p in rpc_of(b).calls[before:] if m == "signmessage"]
    assert signed["message"] == paycode.signed_message()
    assert signature.signer(paycode.signed_message(), paycode.signature) == B
    assert paycode.note_key == out["note_key"] == note.note_public_key(rpc_of(b).secret)
    assert [p for m, p in rpc_of(b).calls if m == "listnodes"] == [{"id": R2}]


def test_an_announced_ipv6_address_is_bracketed(net):
    net.announced[R] = [{"type": "ipv6", "address": "2001:db8::1", "port": 9735}]
    b = net.add(B, rods=(R,))
    paycode = codes.PaymentCode.decode(b.rods.code()["code"])
    assert paycode.rods[0].addresses == ("[2001:db8::1]:9735",)


def test_code_without_rods_is_a_bad_parameter(net):
    b = net.add(B)
    before = len(rpc_of(b).calls)
    with pytest.raises(AsynclnError) as e:
        b.rods.code()
    assert e.value.code == Code.BAD_PARAMETER
    assert rpc_of(b).calls[before:] == []


def test_deposit_rpc_makes_fixed_amount_invoices_for_one_of_my_rods(net):
    b = net.add(B, rods=(R, R2))
    for rod_id in (R, R2):
        net.respond(rod_id)
        net.connect(B, rod_id)
    assert b.deposit(7000, 2, R2) == {"rod": R2, "deposited": 2}
    assert [p["amount_msat"] for m, p in rpc_of(b).calls if m == "invoice"] == [7000, 7000]
    assert [type(m) for _, m in net.heard[R2]] == [messages.Deposit] and net.heard[R] == []
    assert b.deposit(None, 1, None)["rod"] == R  # the first Rod by default


@pytest.mark.parametrize("amount, count, target, code", [
    (None, 1, C, Code.BAD_PARAMETER),                         # not my Rod
    (None, 0, R, Code.BAD_PARAMETER),
    (None, messages.MAX_DEPOSIT_BATCH + 1, R, Code.BAD_PARAMETER),
    ("lots", 1, R, Code.BAD_PARAMETER),
    (None, 1, R2, Code.NO_ANSWER),                            # my Rod, but not connected
])
def test_deposit_rpc_refusals(net, amount, count, target, code):
    b = net.add(B, rods=(R, R2))
    net.respond(R)
    net.connect(B, R)
    with pytest.raises(AsynclnError) as e:
        b.deposit(amount, count, target)
    assert e.value.code == code
    if code == Code.BAD_PARAMETER:
        assert "invoice" not in rpc_of(b).methods()


# --- A: the payer -----------------------------------------------------------------------------

def code_of(net, rods=(R,)) -> str:
    """B's real payment code, made by B's own shell (B then stays offline)."""
    if B not in net.nodes:
        net.add(B, rods=rods)
    return net.nodes[B].rods.code()["code"]


def serving(bolt11_of: Callable[[], Optional[str]], sender=None, error_code=None):
    """A scripted Rod answering every invoice request (from ``sender``, if given)."""
    def answer(peer, msg):
        if not isinstance(msg, messages.InvoiceRequest):
            return []
        reply = (messages.InvoiceResponse(msg.request_id, error_code=error_code, error="no")
                 if error_code is not None
                 else messages.InvoiceResponse(msg.request_id, bolt11=bolt11_of()))
        return [(sender or R, reply)]
    return answer


@pytest.fixture
def payer(net):
    a = net.add(A)
    net.connect(A, R, channel=False)
    return a


def fetch_error(a, text, amount=5000, note_text=None) -> AsynclnError:
    with pytest.raises(AsynclnError) as e:
        a.fetchinvoice(text, amount, note_text)
    return e.value


def test_fetch_from_a_real_rod_checks_and_remembers_the_invoice(net, payer):
    r, b = stocked(net, count=2)
    text = b.rods.code()["code"]
    out = payer.fetchinvoice(text, 5000, "for order #7")
    decoded = net.bolt11[out["bolt11"]]
    assert out["recipient"] == B and out["rod"] == R and out["amount_msat"] == 5000
    assert out["payment_hash"] == decoded["payment_hash"] and decoded["payee"] == B
    assert rpc_of(payer).stored("fetched", out["payment_hash"]) is not None
    assert out["payment_hash"] in payer.fetched
    # The note went to R, sealed to B for this payment; B gets it when it comes back.
    assert out["note_sent"] and r.rods.rod.notes_for(B)
    net.connect(B, R)
    net.arrive(R, B)
    net.settle()
    assert rpc_of(b).stored("note", out["payment_hash"])["note"] == "for order #7"
    assert r.rods.rod.notes_for(B) == []
    assert net.errors == []


def with_signature(text: str, zbase: str) -> str:
    return dataclasses.replace(codes.PaymentCode.decode(text), signature=zbase).encode()


def reshaped(zbase: str, first=None, r=None, s=None) -> str:
    """``zbase`` with its recovery byte, r or s replaced: still 104 zbase32 characters."""
    raw = bytearray(signature.decode(zbase))
    if first is not None:
        raw[0] = first
    if r is not None:
        raw[1:33] = r.to_bytes(32, "big")
    if s is not None:
        raw[33:] = s.to_bytes(32, "big")
    return signature.encode(bytes(raw))


def test_a_code_whose_signature_does_not_verify_is_a_bad_code(net, payer):
    text = code_of(net)
    forged = with_signature(text, signmessage(MALLORY, codes.PaymentCode.decode(text).signed_message()))
    net.respond(R, serving(lambda: "never asked"))
    error = fetch_error(payer, forged)
    assert error.code == Code.BAD_CODE == 2135
    assert net.heard[R] == []


@pytest.mark.parametrize("malformed", [
    dict(first=40), dict(first=30), dict(first=35), dict(first=0), dict(first=255),
    dict(r=0), dict(s=0), dict(r=signature._ORDER), dict(s=2**256 - 1)])
def test_a_signature_lightningd_cannot_parse_is_a_bad_code_and_never_reaches_it(
        net, payer, malformed):
    """Issue 11.8: checkmessage aborts lightningd on a recovery byte outside 31..34."""
    text = code_of(net)
    crafted = with_signature(text, reshaped(codes.PaymentCode.decode(text).signature, **malformed))
    net.respond(R, serving(lambda: "never asked"))
    assert fetch_error(payer, crafted).code == Code.BAD_CODE
    assert "checkmessage" not in rpc_of(payer).methods()
    assert net.heard[R] == []


@pytest.mark.parametrize("text", ["aln1qqqq", "lnbcrt1xyz", "", "aln1" + "q" * 3000])
def test_a_malformed_code_is_a_bad_code(net, payer, text):
    assert fetch_error(payer, text).code == Code.BAD_CODE
    assert "checkmessage" not in rpc_of(payer).methods()


@pytest.mark.parametrize("zbase", ["ybndrfg8", "y" * 103, "y" * 105])
def test_a_signature_of_the_wrong_length_is_a_bad_code(net, payer, zbase):
    assert fetch_error(payer, with_signature(code_of(net), zbase)).code == Code.BAD_CODE
    assert "checkmessage" not in rpc_of(payer).methods()


# --- a Rod's onion key: kept only with the Rod's own valid signature ----------

ROD_KEY = node_id(70)


def code_with_rod_key(net, zbase: str) -> str:
    """B's code naming R's onion key with ``zbase`` as R's signature over it."""
    text = code_of(net)
    paycode = codes.PaymentCode.decode(text)
    rods = (dataclasses.replace(paycode.rods[0], onion_key=ROD_KEY, onion_key_sig=zbase),)
    unsigned = dataclasses.replace(paycode, rods=rods)
    return dataclasses.replace(unsigned, signature=signmessage(B, unsigned.signed_message())).encode()


def test_a_rod_key_signed_by_the_rod_is_kept(net, payer):
    text = code_with_rod_key(net, signmessage(R, onion.key_statement(ROD_KEY)))
    payer.rods.verified(text)
    assert payer.rods.rod_keys == {R: ROD_KEY}


@pytest.mark.parametrize("zbase", [
    lambda: signmessage(MALLORY, onion.key_statement(ROD_KEY)),   # not the Rod's key
    lambda: signmessage(R, onion.key_statement(node_id(71))),     # over another key
    lambda: reshaped(signmessage(R, onion.key_statement(ROD_KEY)), first=40),
    lambda: reshaped(signmessage(R, onion.key_statement(ROD_KEY)), first=30),
    lambda: "ybnd"])
def test_a_rod_key_with_a_bad_signature_is_ignored_and_never_reaches_checkmessage(
        net, payer, zbase):
    paycode = payer.rods.verified(code_with_rod_key(net, zbase()))
    assert paycode.node_id == B  # the code itself is fine: only the Rod's key is ignored
    assert payer.rods.rod_keys == {}
    assert "checkmessage" not in rpc_of(payer).methods()


def test_b_publishes_a_rods_key_only_with_the_rods_valid_signature(net):
    b = net.add(B, rods=(R, R2))
    good = signmessage(R, onion.key_statement(ROD_KEY))
    b.terms[R] = Policy(onion_key=ROD_KEY, onion_key_sig=good)
    b.terms[R2] = Policy(onion_key=node_id(71), onion_key_sig=reshaped(
        signmessage(R2, onion.key_statement(node_id(71))), first=40))
    rods = codes.PaymentCode.decode(b.rods.code()["code"]).rods
    assert [(r.onion_key, r.onion_key_sig) for r in rods] == [(ROD_KEY, good), (None, None)]


def test_an_answer_from_another_peer_is_ignored(net, payer, monkeypatch):
    monkeypatch.setattr(rod_shell, "ANSWER_SECONDS", 0.05)
    text = code_of(net)
    forged = invoice_of(net, B)["bolt11"]
    net.respond(R, serving(lambda: forged, sender=MALLORY))
    error = fetch_error(payer, text)
    assert error.code == Code.NO_ANSWER
    assert "decode" not in rpc_of(payer).methods()
    assert not payer.fetched


def test_the_rods_own_answer_still_counts_after_a_strangers(net, payer):
    text = code_of(net)
    forged, genuine = invoice_of(net, B)["bolt11"], invoice_of(net, B)["bolt11"]

    def answer(peer, msg):
        return [(MALLORY, messages.InvoiceResponse(msg.request_id, bolt11=forged)),
                (R, messages.InvoiceResponse(msg.request_id, bolt11=genuine))]
    net.respond(R, answer)
    assert payer.fetchinvoice(text, 5000, None)["bolt11"] == genuine


def test_an_answer_to_another_request_is_ignored(net, payer, monkeypatch):
    monkeypatch.setattr(rod_shell, "ANSWER_SECONDS", 0.05)
    text = code_of(net)
    bolt11 = invoice_of(net, B)["bolt11"]
    net.respond(R, lambda peer, msg: [(R, messages.InvoiceResponse("ff" * 8, bolt11=bolt11))])
    assert fetch_error(payer, text).code == Code.NO_ANSWER


@pytest.mark.parametrize("code", [Code.POOL_EMPTY, Code.UNKNOWN_RECIPIENT, Code.RATE_LIMITED,
                                  Code.BAD_PARAMETER])
def test_a_rods_refusal_keeps_its_code(net, payer, code):
    text = code_of(net)
    net.respond(R, serving(None, error_code=int(code)))
    error = fetch_error(payer, text)
    assert error.code == code and "the Rod refused" in str(error)


def test_a_refusal_with_an_unknown_code_is_no_answer(net, payer):
    text = code_of(net)
    net.respond(R, serving(None, error_code=9999))
    assert fetch_error(payer, text).code == Code.NO_ANSWER


def test_a_silent_rod_gives_way_to_the_next(net, payer, monkeypatch):
    monkeypatch.setattr(rod_shell, "ANSWER_SECONDS", 0.05)
    text = code_of(net, rods=(R, R2))
    genuine = invoice_of(net, B, rod_id=R2)["bolt11"]
    net.respond(R)
    net.respond(R2, serving(lambda: genuine, sender=R2))
    net.connect(A, R2, channel=False)
    out = payer.fetchinvoice(text, 5000, None)
    assert (out["rod"], out["bolt11"]) == (R2, genuine)
    assert [type(m) for _, m in net.heard[R]] == [messages.InvoiceRequest]


def test_an_unreachable_rod_is_dialled_at_its_addresses_then_by_id(net):
    a = net.add(A)
    net.add(B, rods=(codes.Rod(R, ("10.0.0.1:9735", "rod.example:9735")),))
    text = net.nodes[B].rods.code()["code"]
    net.down.add(R)
    error = fetch_error(a, text)
    assert error.code == Code.NO_ANSWER
    assert [p["id"] for m, p in rpc_of(a).calls if m == "connect"] == [
        f"{R}@10.0.0.1:9735", f"{R}@rod.example:9735", R]


@pytest.mark.parametrize("code", [Code.POOL_EMPTY, Code.UNKNOWN_RECIPIENT])
def test_an_empty_first_rod_gives_way_to_the_next(net, payer, code):
    text = code_of(net, rods=(R, R2))
    genuine = invoice_of(net, B, rod_id=R2)["bolt11"]
    net.respond(R, serving(None, error_code=int(code)))
    net.respond(R2, serving(lambda: genuine, sender=R2))
    net.connect(A, R2, channel=False)
    assert payer.fetchinvoice(text, 5000, None)["rod"] == R2


def test_an_invoice_signed_by_someone_else_is_a_mismatch(net, payer):
    text = code_of(net)
    other = invoice_of(net, C)["bolt11"]
    net.respond(R, serving(lambda: other))
    error = fetch_error(payer, text)
    assert error.code == Code.INVOICE_MISMATCH and C in str(error)
    assert not payer.fetched
    assert not [k for k in rpc_of(payer).datastore if k[1] == "fetched"]


@pytest.mark.parametrize("make", [
    lambda net: invoice_of(net, B, amount=4000)["bolt11"],      # the wrong amount
    lambda net: invoice_of(net, B, rod_id=R2)["bolt11"],        # deposited at another Rod
    lambda net: invoice_of(net, B, description="Rod's own bill")["bolt11"],  # not deposited
    lambda net: "lnbcrt1undecodable",
])
def test_an_unusable_invoice_is_a_mismatch(net, payer, make):
    text = code_of(net)
    bolt11 = make(net)
    net.respond(R, serving(lambda: bolt11))
    assert fetch_error(payer, text).code == Code.INVOICE_MISMATCH


def test_a_hash_fetched_before_is_refused_even_after_a_restart(net, payer):
    text = code_of(net)
    minted = invoice_of(net, B)
    net.respond(R, serving(lambda: minted["bolt11"]))
    assert payer.fetchinvoice(text, 5000, None)["payment_hash"] == minted["payment_hash"]
    assert rpc_of(payer).stored("fetched", minted["payment_hash"]) is not None
    assert fetch_error(payer, text).code == Code.HASH_REUSED
    restarted = net.add(A, rpc=rpc_of(payer))
    assert fetch_error(restarted, text).code == Code.HASH_REUSED


def test_a_hash_lightningd_already_paid_is_refused(net, payer):
    text = code_of(net)
    minted = invoice_of(net, B)
    net.respond(R, serving(lambda: minted["bolt11"]))
    rpc_of(payer).handlers["listsendpays"] = lambda p: {"payments": [
        {"payment_hash": p["payment_hash"], "status": "failed", "partid": 1, "groupid": 1}]}
    error = fetch_error(payer, text)
    assert error.code == Code.HASH_REUSED == 2138
    assert rpc_of(payer).stored("fetched", minted["payment_hash"]) is None


def test_a_bad_note_is_refused_before_any_rod_is_asked(net, payer):
    text = code_of(net)
    net.respond(R, serving(lambda: "never asked"))
    error = fetch_error(payer, text, note_text="x" * (note.MAX_NOTE_BYTES + 1))
    assert error.code == Code.NOTE_REFUSED
    assert net.heard[R] == []


def test_paying_a_code_needs_an_amount_and_a_note_needs_a_code(net, payer):
    text = code_of(net)
    with pytest.raises(AsynclnError) as e:
        payer.pay(text, None, None, None)
    assert e.value.code == Code.BAD_PARAMETER
    with pytest.raises(AsynclnError) as e:
        payer.pay("lnbcrt1xyz", None, None, None, note="hello")
    assert e.value.code == Code.NOTE_REFUSED
    assert "sendcustommsg" not in rpc_of(payer).methods()


# --- S: the holding node and its payer's cancel ---------------------------------------------

class HookRequest:
    def __init__(self):
        self.results = []

    def set_result(self, result):
        self.results.append(result)


def holding(net, forwarding=False):
    """S (here: C) holds PAYER's HTLC, whose record asks for reports to PAYER."""
    s = net.add(C)
    for peer in (PAYER, MALLORY):
        net.respond(peer)
        net.connect(C, peer)
    rpc_of(s).fail["getroutes"] = lambda p: True  # B is offline: no route
    request = HookRequest()
    inc = incoming()
    onion = {"payload": payload(record()).hex(), "forward_msat": inc.amount_msat,
             "outgoing_cltv_value": inc.cltv_expiry, "shared_secret": inc.shared_secret}
    htlc = {"short_channel_id": inc.channel, "id": inc.htlc_id, "amount_msat": inc.amount_msat,
            "cltv_expiry": inc.cltv_expiry, "payment_hash": PAYMENT_HASH}
    s.htlc_accepted(onion, htlc, PAYER, request)
    net.run(C)
    assert s.relay.held[PAYMENT_HASH].state == HoldState.HELD
    if forwarding:
        with s.lock:  # the next search finds a route; its SendPay is left unrun
            s.relay.poll(PAYMENT_HASH)
            s.relay.route_found(PAYMENT_HASH, direct_route(record()))
        assert s.relay.held[PAYMENT_HASH].state == HoldState.FORWARDING
    assert request.results == []
    net.heard[PAYER].clear()
    return s, request


def cancel_from(net, s, peer, payment_hash=PAYMENT_HASH):
    """The CancelAnswers ``peer`` got for this one request."""
    heard = len(net.heard[peer])
    s.custom_message(peer, messages.encode(messages.CancelRequest(payment_hash)))
    net.run(C)
    return [m for _, m in net.heard[peer][heard:] if isinstance(m, messages.CancelAnswer)]


@pytest.mark.parametrize("peer, payment_hash", [
    (MALLORY, PAYMENT_HASH),          # not the record's report_to
    (PAYER, "ab" * 32),               # nothing held with that hash
])
def test_a_cancel_from_anyone_but_the_payer_is_refused_and_fails_nothing(net, peer,
                                                                      payment_hash):
    s, request = holding(net)
    writes = rpc_of(s).methods().count("datastore")
    [answer] = cancel_from(net, s, peer, payment_hash)
    assert answer == messages.CancelAnswer(payment_hash, False, answer.reason, 2101)
    assert not answer.accepted and answer.error_code == Code.UNKNOWN_PAYMENT
    assert s.relay.held[PAYMENT_HASH].state == HoldState.HELD
    assert request.results == []
    assert rpc_of(s).methods().count("datastore") == writes


def test_the_payers_cancel_fails_the_htlc_back(net):
    s, request = holding(net)
    [answer] = cancel_from(net, s, PAYER)
    assert answer.accepted and answer.reason == hold.CANCELLED_BY_PAYER
    held = s.relay.held[PAYMENT_HASH]
    assert held.state == HoldState.FAILED and held.last_error == hold.CANCELLED_BY_PAYER
    assert request.results == [{"result": "fail", "failure_message": held.failure_message}]
    assert held.failure_message  # a BOLT 4 failure, whichever S chose
    assert rpc_of(s).stored("held", PAYMENT_HASH)["state"] == "failed"
    [status] = [m for _, m in net.heard[PAYER] if isinstance(m, messages.PaymentStatus)]
    assert status.state == HoldState.FAILED and status.reason == hold.CANCELLED_BY_PAYER
    [again] = cancel_from(net, s, PAYER)  # a second cancel: already failed
    assert not again.accepted and again.error_code == Code.ALREADY_RESOLVED
    assert len(request.results) == 1


def test_the_payers_cancel_is_refused_while_forwarding(net):
    s, request = holding(net, forwarding=True)
    [answer] = cancel_from(net, s, PAYER)
    assert not answer.accepted and answer.error_code == Code.ATTEMPT_IN_FLIGHT == 2102
    assert s.relay.held[PAYMENT_HASH].state == HoldState.FORWARDING
    assert request.results == []


# --- A's side of the cancel ----------------------------------------------------------------

def pay_record(**kw):
    fields = dict(payment_hash=PAYMENT_HASH, bolt11="lnbcrt1x", destination=B, trampoline=C,
                  amount_msat=5000, amount_sent_msat=6000, cltv_expiry=1500,
                  max_hold_blocks=100, created_at=1, trampoline_index=1, report=True,
                  status=PayState.HELD, partid=1, groupid=1)
    fields.update(kw)
    return payer_core.Pay(**fields)


def test_cancel_as_payer_asks_the_trampoline_and_notes_the_answer(net, payer):
    payer.save_pay(pay_record())
    net.respond(C, lambda peer, msg: [(C, messages.CancelAnswer(msg.payment_hash, True,
                                                                hold.CANCELLED_BY_PAYER))])
    net.connect(A, C)
    out = payer.cancel(PAYMENT_HASH)
    assert net.heard[C] == [(A, messages.CancelRequest(PAYMENT_HASH))]
    assert out["reason"] == hold.CANCELLED_BY_PAYER and out["status"] == "held"
    net.run(A)
    assert rpc_of(payer).stored("pay", PAYMENT_HASH)["reason"] == hold.CANCELLED_BY_PAYER


def test_cancel_as_payer_keeps_the_holding_nodes_code(net, payer):
    payer.save_pay(pay_record())
    net.respond(C, lambda peer, msg: [(C, messages.CancelAnswer(
        msg.payment_hash, False, "in flight", int(Code.ATTEMPT_IN_FLIGHT)))])
    net.connect(A, C)
    with pytest.raises(AsynclnError) as e:
        payer.cancel(PAYMENT_HASH)
    assert e.value.code == Code.ATTEMPT_IN_FLIGHT
    assert payer.pays[PAYMENT_HASH].reason is None


def test_cancel_as_payer_ignores_another_peers_answer(net, payer, monkeypatch):
    monkeypatch.setattr(rod_shell, "ANSWER_SECONDS", 0.05)
    payer.save_pay(pay_record())
    net.respond(C, lambda peer, msg: [(MALLORY, messages.CancelAnswer(msg.payment_hash, True))])
    net.connect(A, C)
    with pytest.raises(AsynclnError) as e:
        payer.cancel(PAYMENT_HASH)
    assert e.value.code == Code.NO_ANSWER
    assert payer.pays[PAYMENT_HASH].reason is None


@pytest.mark.parametrize("changes, code", [
    ({"report": False}, Code.UNKNOWN_PAYMENT),
    ({"status": PayState.FAILED}, Code.ALREADY_RESOLVED),
    ({"status": PayState.COMPLETE}, Code.ALREADY_RESOLVED),
])
def test_cancel_as_payer_refusals_ask_nobody(net, payer, changes, code):
    payer.save_pay(pay_record(**changes))
    net.respond(C)
    net.connect(A, C)
    with pytest.raises(AsynclnError) as e:
        payer.cancel(PAYMENT_HASH)
    assert e.value.code == code
    assert net.heard[C] == []


# --- issue 11, item 4: who a pool belongs to -------------------------------------------------

def hijacker_deposits(net, r, deposit):
    """MALLORY, a depositor R allows, sends ``deposit``; returns R's answer to it."""
    net.respond(MALLORY)
    net.connect(MALLORY, R)
    r.custom_message(MALLORY, messages.encode(deposit))
    net.run(R)
    return rpc_of(r).sent(messages.PoolStatus, to=MALLORY)[-1][1]


@pytest.mark.parametrize("signature", ["none", "B's, replayed", "its own key's"])
def test_a_hijacker_cannot_file_its_pool_under_bs_payee_key(net, payer, signature):
    """MALLORY copies the payee key from B's private code and deposits under it first."""
    r, b = net.add(R), net.add(B, rods=(R,), pool=3)
    b_key = payee.public_key(b.rods.payee_secret())
    sig = {"none": lambda: None,
           "B's, replayed": lambda: payee.sign(b.rods.payee_secret(),
                                               payee.owner_statement(B, R)),
           "its own key's": lambda: payee.sign("e1" * 32, payee.owner_statement(MALLORY, R)),
           }[signature]()
    own = invoice_of(net, MALLORY)["bolt11"]
    answer = hijacker_deposits(net, r, messages.Deposit((own,), (), b_key) if sig is None
                               else messages.Deposit((own,), (), b_key, sig))
    net.connect(B, R)
    net.arrive(B, R)
    net.settle()
    net.disconnect(B, R)
    # B's private payers are served from B's pool, not the hijacker's.
    out = payer.fetchinvoice(b.rods.code(private=True)["code"], 5000, "for #7")
    assert out["payment_hash"] in {i["payment_hash"] for i in rpc_of(b).invoices}
    assert out["note_sent"] is True  # filed under B, found by its payee key
    assert [h for h, _ in r.rods.rod.notes_for(B)] == [out["payment_hash"]]
    assert answer.accepted == 1 and any("payee key" in reason for reason in answer.refused)
    assert r.rods.rod.level(B) == 2 and r.rods.rod.level(MALLORY) == 1


def test_a_hijacker_cannot_take_bs_node_id_as_its_payee_key(net, payer):
    """Filed under B's node id, it would have caught B's public payers' notes."""
    r, b = stocked(net, count=3)
    own = invoice_of(net, MALLORY)["bolt11"]
    answer = hijacker_deposits(net, r, messages.Deposit((own,), (), B))
    out = payer.fetchinvoice(b.rods.code()["code"], 5000, "for #7")
    assert r.rods.rod.notes_for(B) and out["note_sent"] is True
    assert any("payee key" in reason for reason in answer.refused)
    assert r.rods.rod.depositor_of(B, private=True) is None


def test_a_private_request_naming_bs_node_id_gets_nothing(net):
    """Whoever holds B's private code cannot guess which node is behind its payee key."""
    r, _ = stocked(net, count=3)
    net.respond(A)
    net.connect(A, R, channel=False)
    r.custom_message(A, messages.encode(messages.InvoiceRequest("01" * 8, B, 5000, True)))
    net.run(R)
    [(_, answer)] = rpc_of(r).sent(messages.InvoiceResponse, to=A)
    assert answer.error_code == int(Code.UNKNOWN_RECIPIENT) and answer.offer is None
    assert r.rods.rod.level(B) == 3


def test_a_note_for_a_recipient_without_a_pool_is_refused_and_not_sent(net):
    r, _ = stocked(net, count=1)
    net.respond(A)
    net.connect(A, R, channel=False)
    request(net, r, "01" * 8)  # A got B's hash: a note would be fine for B, but not for C
    [(_, served)] = rpc_of(r).sent(messages.InvoiceResponse, to=A)
    payment_hash = net.bolt11[served.bolt11]["payment_hash"]
    r.custom_message(A, messages.encode(messages.Note(C, payment_hash, "00" * 40)))
    net.run(R)
    [(_, answer)] = rpc_of(r).sent(messages.NoteAnswer, to=A)
    assert answer == messages.NoteAnswer(payment_hash, False, answer.reason,
                                         int(Code.NOTE_REFUSED))
    assert "no pool" in answer.reason and r.rods.rod.notes_for(B) == []


@pytest.mark.parametrize("rod_answer", ["refused", "silent"])
def test_note_sent_is_true_only_when_the_rod_stored_it(net, payer, monkeypatch, rod_answer):
    monkeypatch.setattr(rod_shell, "NOTE_SECONDS", 0.01)
    text = code_of(net)
    bolt11 = invoice_of(net, B)["bolt11"]
    serve = serving(lambda: bolt11)

    def answer(peer, msg):
        if isinstance(msg, messages.Note) and rod_answer == "refused":
            return [(R, messages.NoteAnswer(msg.payment_hash, False, "no pool for that recipient",
                                            int(Code.NOTE_REFUSED)))]
        return serve(peer, msg)
    net.respond(R, answer)
    out = payer.fetchinvoice(text, 5000, "for #7")
    assert out["bolt11"] == bolt11 and out["note_sent"] is False
    assert ("no pool" if rod_answer == "refused" else "did not answer") in out["note_error"]


# --- issue 11, item 5: B's own count bounds what it mints --------------------------------------

def lying_rod(sender, msg):
    """A Rod that takes every deposit and always says B's pool there is empty."""
    if isinstance(msg, messages.Deposit):
        return [(R, messages.PoolStatus(0, len(msg.invoices), 50, DAY))]
    return []


def test_a_rod_that_always_reports_level_zero_gets_at_most_a_pool_per_window(net):
    b = net.add(B, rods=(R,), pool=20)
    net.respond(R, lying_rod)
    net.connect(B, R)
    net.arrive(B, R)
    net.settle()
    assert rpc_of(b).methods().count("invoice") == 20
    poll = b.relay.policy.poll_blocks
    for height in range(1001, 1000 + poll):  # the same window: queries, but no new invoices
        b.block(height)
        net.settle()
        net.arrive(B, R)
    b = net.add(B, rpc=rpc_of(b), rods=(R,), pool=20)  # a restart keeps the count
    net.arrive(B, R)
    net.settle()
    assert rpc_of(b).methods().count("invoice") == 20
    windows = 10
    for height in range(1000 + poll, 1000 + poll * windows):
        b.block(height)
        net.settle()
        net.arrive(B, R)
    assert rpc_of(b).methods().count("invoice") == 20 * windows
    assert len(net.heard[R]) > 2 * windows  # the Rod was asked often, and lied each time

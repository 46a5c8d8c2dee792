"""The holder's shell (Node) over interleaved hook calls, answers, cancels, restarts and
injected internal errors, against a stand-in lightningd (issue 11, items 2 and 3).

A payer with two channels to us sends HTLCs for two payment hashes, often reusing one
onion (the same shared secret) with new HTLC ids; zero-conf channels confirm (the hook
then names them by their real scid); lightningd replays every unanswered HTLC after a
restart; any step of htlc_accepted, of the worker's actions, of the replay path or of
the answer may raise RuntimeError, ValueError or KeyError until healed.

Always: no request is answered twice; a resolve carries the hash's preimage; an HTLC is
never failed while an attempt sent for it may still succeed. Once healed and reconciled:
every HTLC still waiting is held (open record, its key); no decided answer is left
undelivered; B paid means some HTLC for the hash was resolved.
"""

import hashlib
import json
from collections import defaultdict

from factories import PAYER, RECIPIENT, payload, record
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pyln.client import RpcError
from pyln.client.plugin import RequestState

from asyncln import hold, holder_shell, peel, port
from asyncln.errors import AsynclnError
from asyncln.holder_shell import HolderShell
from asyncln.node import Node
from asyncln.policy import Policy
from asyncln.port import Port
from asyncln.states import HOLD_OPEN
from asyncln.store import Store

PREIMAGES = [bytes([i + 1]) * 32 for i in range(2)]
HASHES = [hashlib.sha256(p).hexdigest() for p in PREIMAGES]
CHANNELS = [("c1" * 32, "1x0x0", "103x1x0"), ("c2" * 32, "2x0x0", "104x1x0")]
POLICY = Policy(poll_blocks=3, max_hold_blocks=40, safety_blocks=6)
ERRORS = [RuntimeError, ValueError, KeyError]
# Every step of htlc_accepted, the replay path, the worker's actions and the answer.
FAULTS = {
    "carries_record": (holder_shell, "carries_record"),
    "incoming_from_hook": (holder_shell, "incoming_from_hook"),
    "peel.read": (peel, "read"),
    "Relay.replay": (hold.Relay, "replay"),
    "Relay.admit": (hold.Relay, "admit"),
    "Relay.htlc_accepted": (hold.Relay, "htlc_accepted"),
    "Relay.answered": (hold.Relay, "answered"),
    "Relay.action_failed": (hold.Relay, "action_failed"),
    "Relay.attempt_checked": (hold.Relay, "attempt_checked"),
    "Node._tell": (HolderShell, "_tell"),
    "Node.execute": (HolderShell, "execute"),
    "Node.answer": (Node, "answer"),  # Node's own: the machine's wrapper of Port.answer
    "Node.refresh_channels": (Port, "refresh_channels"),
    "Store.put": (Store, "put"),
}


class Request:
    """A hook request; a second answer is counted, never swallowed."""

    def __init__(self, htlc, machine, key):
        self.htlc, self.machine, self.key = htlc, machine, key
        self.state = RequestState.PENDING
        self.results = []

    def set_result(self, result):
        if self.machine.fault == "set_result":
            raise self.machine.error("injected: lightningd's pipe")
        if self.state != RequestState.PENDING:
            self.machine.violations.append(f"{self.htlc} answered twice: {result}")
        self.machine.check_answer(self.htlc, result)
        if self.machine.answering not in (None, self.key):
            self.machine.violations.append(f"{self.key} got the answer for {self.machine.answering}")
        self.results.append(result)
        self.state = RequestState.FINISHED


class Lightningd:
    """The RPC calls Node makes, over a little model of lightningd."""

    def __init__(self):
        self.height = 1000
        self.datastore = {}
        self.parts = defaultdict(dict)  # hash -> partid -> [status, owner HTLC]
        self.confirmed = [False, False]
        self.online = False
        self.owner = None               # the HTLC whose record is sending: set by the machine

    def getinfo(self):
        return self.call("getinfo")

    def call(self, method, params=None):
        params = params or {}
        match method:
            case "getinfo":
                return {"id": "02" + "55" * 32, "blockheight": self.height}
            case "getchaininfo":
                return {"headercount": self.height, "blockcount": self.height, "ibd": False}
            case "waitblockheight":
                return {"blockheight": self.height}
            case "createonion":
                return {"onion": "00" * 1366, "shared_secrets": ["33" * 32]}
            case "listdatastore":
                prefix = tuple(params["key"])
                return {"datastore": [{"key": list(k), "string": v} for k, v in self.datastore.items()
                                      if k[:len(prefix)] == prefix]}
            case "datastore":
                self.datastore[tuple(params["key"])] = params["string"]
                return {}
            case "deldatastore":
                self.datastore.pop(tuple(params["key"]), None)
                return {}
            case "listpeerchannels":
                if "id" in params:
                    return {"channels": []}
                return {"channels": [
                    {"channel_id": cid, "alias": {"local": alias},
                     **({"short_channel_id": scid} if self.confirmed[i] else {}),
                     "htlcs": [{"direction": "out", "payment_hash": h}
                               for h, parts in self.parts.items() for p in parts.values()
                               if p[0] == "pending" and i == 0]}
                    for i, (cid, alias, scid) in enumerate(CHANNELS)]}
            case "listsendpays":
                return {"payments": [
                    {"partid": k, "groupid": 1, "status": p[0],
                     **({"payment_preimage": PREIMAGES[HASHES.index(params["payment_hash"])].hex()}
                        if p[0] == "complete" else {})}
                    for k, p in self.parts[params["payment_hash"]].items()]}
            case "getroutes":
                if not self.online:
                    raise RpcError(method, params, {"message": "no route"})
                return {"routes": [{"path": [{
                    "short_channel_id_dir": "105x1x0/0", "node_id_out": RECIPIENT,
                    "amount_out_msat": params["amount_msat"], "cltv_out": params["final_cltv"]}]}]}
            case "sendpay" | "sendonion":
                parts = self.parts[params["payment_hash"]]
                assert not any(p[0] in ("pending", "complete") for p in parts.values()), \
                    "a second attempt while one may succeed"
                parts[params["partid"]] = ["pending", self.owner(params["payment_hash"])]
                return {"status": "pending"}
            case "listnodes":
                return {"nodes": []}
            case "listinvoices":
                return {"invoices": []}
            case "listpeers":
                return {"peers": []}
            case "makesecret" | "listconfigs" | "sendcustommsg" | "signmessage":
                return {}
            case _:
                raise RpcError(method, params, {"message": f"unknown {method}"})


class AnswerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.ln = Lightningd()
        self.ln.owner = self.owner
        self.fault = None
        self.error = RuntimeError
        self.originals = {}
        self.next_id = [0, 0]
        self.requests = []           # every request lightningd ever made, replays included
        self.waiting = {}            # HTLC (channel index, id) -> its live request
        self.htlcs = {}              # HTLC -> (hash index, secret)
        self.resolved = set()        # hashes some HTLC of which was resolved
        self.orphaned = False        # a hook answer could not be written: restart to heal
        self.violations = []         # what an answer broke
        self.lazy = False            # the worker lags behind the hooks
        self.answering = None        # the HTLC key Node.answer is delivering to
        self.node = self.start()
        original = Node.answer

        def answer(node, payment_hash, key, result, what):
            self.answering = key
            try:
                return original(node, payment_hash, key, result, what)
            finally:
                self.answering = None
        Node.answer = answer
        self.unwrap = lambda: setattr(Node, "answer", original)

    def start(self):
        node = Node(self.ln, lambda *a, **k: None, POLICY)
        return node

    # --- faults -------------------------------------------------------------

    def inject(self, name, error):
        self.heal()
        self.fault, self.error = name, error
        if name in FAULTS:
            owner, attr = FAULTS[name]
            original = owner.__dict__[attr]
            self.originals[name] = original

            def broken(*args, **kwargs):
                raise error(f"injected in {name}")
            setattr(owner, attr, staticmethod(broken) if isinstance(original, staticmethod)
                    else broken)

    def heal(self):
        for name, original in self.originals.items():
            owner, attr = FAULTS[name]
            setattr(owner, attr, original)
        self.originals.clear()
        self.fault = None

    def teardown(self):
        try:
            self.heal_and_check()
        finally:
            self.unwrap()

    # --- the model's checks --------------------------------------------------

    def owner(self, payment_hash):
        """The HTLC on whose record an attempt is sent."""
        held = self.node.relay.held[payment_hash]
        index = next(i for i, c in enumerate(CHANNELS) if c[0] == held.incoming.channel_id)
        return (index, held.incoming.htlc_id)

    def check_answer(self, htlc, result):
        """Recorded, not raised: the shell under test may catch what is raised here."""
        i, _ = self.htlcs[htlc]
        if result["result"] == "resolve":
            if result["payment_key"] != PREIMAGES[i].hex():
                self.violations.append(f"{htlc} resolved with another hash's preimage")
            self.resolved.add(HASHES[i])
        elif result["result"] == "fail":
            for status, owner in self.ln.parts[HASHES[i]].values():
                if owner == htlc and status in ("pending", "complete"):
                    self.violations.append(f"{htlc} failed while its own attempt may succeed")

    @invariant()
    def money_rules_held(self):
        assert self.violations == []

    def drain(self, jobs=200, lazy_too=False):
        """The worker: queued jobs, in order; one that raises is logged, as Node._work does.

        A lazy worker leaves them queued (answers decided, not yet delivered) until
        the ``work`` rule or a check runs them.
        """
        if self.lazy and not lazy_too:
            return
        for _ in range(jobs):
            if not self.node._jobs:
                return
            job = self.node._jobs.popleft()
            try:
                job()
            except Exception:
                pass

    def key_of(self, htlc):
        """lightningd's name for the HTLC now: its channel's scid once confirmed, else alias."""
        c, htlc_id = htlc
        _, alias, scid = CHANNELS[c]
        return f"{scid if self.ln.confirmed[c] else alias}/{htlc_id}"

    def hook(self, htlc, request):
        i, secret = self.htlcs[htlc]
        c, htlc_id = htlc
        cid, alias, scid = CHANNELS[c]
        expiry = 1100
        hook_onion = {"payload": payload(record(), 110_000, expiry).hex(), "type": "tlv",
                      "forward_msat": 110_000, "outgoing_cltv_value": expiry,
                      "shared_secret": secret}
        params = {"short_channel_id": scid if self.ln.confirmed[c] else alias, "id": htlc_id,
                  "amount_msat": 110_000, "cltv_expiry": expiry,
                  "cltv_expiry_relative": expiry - self.ln.height, "payment_hash": HASHES[i]}
        try:
            self.node.htlc_accepted(hook_onion, params, PAYER, request)
        except Exception:  # plugin.py's last resort
            try:
                if request.state == RequestState.PENDING and self.node.may_fail(params, request):
                    request.set_result(port.FAIL_TEMPORARY)
            except Exception:
                pass
        if request.state == RequestState.PENDING and not any(
                r is request for r in self.node.pending.values()) and not any(
                c[3] is request for c in self.node.undecided.values()):
            # Its answer could not be written (a broken pipe): the plugin is as good as
            # dead, and lightningd replays the HTLC to the next one.
            assert self.fault == "set_result", f"{htlc} left unanswered and untracked"
            self.orphaned = True
        self.drain()

    def settle(self):
        """What lightningd does with an answer: the HTLC is gone."""
        for htlc, request in list(self.waiting.items()):
            if request.state != RequestState.PENDING:
                del self.waiting[htlc]

    # --- rules --------------------------------------------------------------

    @rule(c=st.integers(0, 1), i=st.integers(0, 1), reuse=st.booleans())
    def arrive(self, c, i, reuse):
        htlc = (c, self.next_id[c])
        self.next_id[c] += 1
        self.htlcs[htlc] = (i, "ab" * 32 if reuse else f"{len(self.htlcs) + 1:064x}")
        request = Request(htlc, self, self.key_of(htlc))
        self.requests.append(request)
        self.waiting[htlc] = request
        self.hook(htlc, request)
        self.settle()

    @rule(c=st.integers(0, 1), told=st.booleans())
    def confirm(self, c, told):
        """The zero-conf channel confirms: lightningd names it by its real scid."""
        self.ln.confirmed[c] = True
        if told:
            self.node.channel_changed()
            self.drain()

    @rule(online=st.booleans())
    def recipient(self, online):
        self.ln.online = online
        if online:
            try:
                self.node.poll()
            except AsynclnError:
                pass
            self.drain()
        self.settle()

    @rule(advance=st.integers(0, 20))
    def block(self, advance):
        self.ln.height += advance
        self.node.block(self.ln.height)
        self.drain()
        self.settle()

    @precondition(lambda self: any(p[0] == "pending" for ps in self.ln.parts.values()
                                   for p in ps.values()))
    @rule(data=st.data(), succeed=st.booleans(), told=st.booleans())
    def outcome(self, data, succeed, told):
        live = sorted((h, k) for h, ps in self.ln.parts.items() for k, p in ps.items()
                      if p[0] == "pending")
        payment_hash, partid = data.draw(st.sampled_from(live))
        self.ln.parts[payment_hash][partid][0] = "complete" if succeed else "failed"
        if told:
            if succeed:
                preimage = PREIMAGES[HASHES.index(payment_hash)].hex()
                self.node.attempt_succeeded(payment_hash, preimage)
            else:
                self.node.attempt_failed({"data": {"payment_hash": payment_hash,
                                                   "partid": partid, "failcode": 0x1007}})
            self.drain()
        self.settle()

    @rule(i=st.integers(0, 1))
    def cancel(self, i):
        try:
            self.node.cancel(HASHES[i])
        except AsynclnError:
            pass
        self.drain()
        self.settle()

    @rule()
    def reconcile(self):
        self.node.reconcile()
        self.drain()
        self.settle()

    @rule()
    def restart(self):
        """Plugin and lightningd restart: every HTLC not answered is replayed, with the
        fault still there (what broke before the restart breaks after it)."""
        fault, error = self.fault, self.error
        self.heal()
        self.orphaned = False
        self.node = self.start()
        if fault is not None:
            self.inject(fault, error)
        for htlc in sorted(self.waiting):
            request = Request(htlc, self, self.key_of(htlc))
            self.requests.append(request)
            self.waiting[htlc] = request
            self.hook(htlc, request)
        self.node.reconcile()
        self.drain()
        self.settle()

    @rule(name=st.sampled_from(sorted(FAULTS)), error=st.sampled_from(ERRORS))
    def restart_broken(self, name, error):
        """What broke the plugin breaks it again on the replays."""
        self.inject(name, error)
        self.restart()

    @rule(lazy=st.booleans())
    def worker_pace(self, lazy):
        self.lazy = lazy

    @rule(jobs=st.integers(1, 5))
    def work(self, jobs):
        self.drain(jobs, lazy_too=True)
        self.settle()

    @rule(name=st.sampled_from(sorted(FAULTS) + ["set_result"]), error=st.sampled_from(ERRORS))
    def break_(self, name, error):
        self.inject(name, error)

    @rule()
    def heal_and_check(self):
        self.heal()
        if self.orphaned:
            self.orphaned = False
            self.restart()
        self.lazy = False
        self.drain()
        for _ in range(3):
            self.node.reconcile()
            self.drain()
            self.settle()
        relay = self.node.relay
        assert not self.node.undecided
        for htlc, request in self.waiting.items():
            i, _ = self.htlcs[htlc]
            held = relay.held.get(HASHES[i])
            assert held is not None and held.attached, f"{htlc} waits with no record"
            assert held.incoming.key == f"{held.incoming.channel}/{htlc[1]}"
            assert held.state in HOLD_OPEN, f"{htlc} waits on a {held.state.value} record"
            assert self.node.pending.get(held.incoming.key) is request
        for held in relay.held.values():
            assert held.state in HOLD_OPEN or not held.attached, "a decided answer was not delivered"
        for payment_hash, parts in self.ln.parts.items():
            if any(p[0] == "complete" for p in parts.values()):
                held = relay.held.get(payment_hash)
                waiting = held is not None and held.attached
                assert payment_hash in self.resolved or waiting, "S paid B and was not paid"

    @invariant()
    def stored_records_load(self):
        for key, value in self.ln.datastore.items():
            if key[1] == "held":
                hold.HeldPayment.from_json(json.loads(value))


AnswerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
TestAnswerMachine = AnswerMachine.TestCase

"""The shell: carries out the cores' actions against lightningd, off the hook path.

plugin.py hands every hook, notification and RPC call to one :class:`Node`.
Hooks and notifications only feed the pure cores (fast, under ``lock``) and
queue the actions they return; one worker thread does the slow I/O
(``getroutes``, ``sendonion``, datastore writes, waiting for a reconnected
peer's channel) and feeds each result back. A plain forward therefore never
waits behind a poll round. An action that raises is reported to the core
(:meth:`hold.Relay.action_failed`) and the rest of the queue goes on.
"""

import os
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Sequence, assert_never

from pyln.client import RpcError
from pyln.client.plugin import RequestState

from . import __version__, failures, hold, messages, onion, payee, payer, peel, rod
from .errors import AsynclnError, Code
from .features import FEATURE_BIT, has_feature
from .lightningd import (
    Failed,
    failed_part,
    first_route,
    judge_attempt,
    judge_failure,
    msat,
    next_attempt_ids,
    onion_failure,
    outgoing_htlc_hashes,
    rpc_message,
    sendpay_route,
)
from .policy import Policy
from .recipient import RecipientConfig
from .record import RECORD_TYPE, find_record
from .rod_shell import RodShell, peer_code
from .code import CODE_PREFIX
from .states import PAY_OPEN, HoldState, PayState
from .store import Store
from .wire import DecodeError

ROUTE_LAYERS = ["auto.localchans", "auto.sourcefree"]
# A route hint names no capacity: assume the largest channel before wumbo (0.16 BTC).
HINT_CAPACITY_MSAT = 16_777_215_000
PEER_READY_SECONDS = 60    # longest wait for a reconnected peer's channel
TICK_SECONDS = 0.2         # how often the worker looks at waking peers
CHAIN_SECONDS = 1.0        # how often it asks again whether lightningd reached bitcoind's tip
RECONCILE_SECONDS = 30     # re-issue what is owed even without a new block
QUEUED_PER_PEER = 4        # a peer's requests of one kind waiting for the worker
TERMS_SECONDS = 10         # longest an RPC waits for a just-connected peer's info

CONTINUE = {"result": "continue"}
FAIL_TEMPORARY = {"result": "fail", "failure_message": failures.temporary_node_failure()}


def synced(tip: int, chain: Optional[dict], info: dict) -> bool:
    """lightningd has processed every block bitcoind has (``tip``, read after ``getchaininfo``).

    getinfo's warnings alone are not enough: lightningd clears them once, at
    the end of its first catch-up after startup, and never sets them again.
    Blocks that reach bitcoind later (a burst, or the ones lightningd has not
    polled yet) leave lightningd's height behind with no warning, and an
    attempt sent then gets an expiry from the stale height (soak seed A).
    So lightningd's own tip must reach bitcoind's header count; ``chain`` is
    None when ``getchaininfo`` failed, which counts as not synced.
    """
    if chain is None or "warning_bitcoind_sync" in info or "warning_lightningd_sync" in info:
        return False
    try:
        headers, blocks = int(chain["headercount"]), int(chain["blockcount"])
    except (KeyError, TypeError, ValueError):
        return False
    return not chain.get("ibd", False) and headers == blocks and tip >= headers


def incoming_from_hook(htlc: dict, onion: dict, peer_id: Optional[str],
                       channel_id: Optional[str]) -> hold.Incoming:
    return hold.Incoming(channel=htlc["short_channel_id"], htlc_id=int(htlc["id"]),
                         amount_msat=msat(htlc["amount_msat"]),
                         cltv_expiry=int(htlc["cltv_expiry"]), peer=peer_id,
                         shared_secret=onion.get("shared_secret"), channel_id=channel_id)


def htlc_key(htlc: dict) -> str:
    """The name lightningd gives the HTLC in this hook call (see hold.Incoming.key)."""
    return f"{htlc['short_channel_id']}/{int(htlc['id'])}"


def channel_names(channels: List[dict]) -> Dict[str, str]:
    """lightningd's own mapping (listpeerchannels): each scid and local alias -> channel id.

    The hook names a channel by its scid, or by its local alias until it has
    one; the peer's alias (alias.remote) is the peer's choice, never ours.
    """
    names = {}
    for channel in channels:
        channel_id = channel.get("channel_id")
        for name in (channel.get("short_channel_id"), (channel.get("alias") or {}).get("local")):
            if channel_id and name:
                names[name] = channel_id
    return names


def waiting(request) -> bool:
    return request.state == RequestState.PENDING


def carries_record(hook_onion: dict) -> bool:
    """The payload carries an asyncln record (version 1) or onion (version 2), or is malformed."""
    try:
        payload = bytes.fromhex(hook_onion["payload"])
    except (KeyError, ValueError):
        return False
    try:
        return find_record(payload) is not None or onion.find_onion(payload) is not None
    except DecodeError:
        return True  # the relay refuses it, with the failure that fits


class Node:
    """Everything the shell keeps between calls; one per plugin process."""

    def __init__(self, rpc, log: Callable[..., None], policy: Policy,
                 refused_options: Optional[str] = None, plugin_paths: Sequence[str] = (),
                 rod_limits: rod.RodLimits = rod.RodLimits(),
                 recipient: RecipientConfig = RecipientConfig()):
        self.rpc = rpc
        self.log = log
        self.lock = threading.RLock()
        self.store = Store(rpc)
        self.node_id = rpc.getinfo()["id"]
        height, in_sync = self.chain_state()
        self.refused_options = refused_options
        self.important = self._is_important(plugin_paths)
        # scid or local alias -> channel id, from listpeerchannels; names are only
        # added (a spliced channel's old scid still names it for a replay).
        self.channels: Dict[str, str] = {}
        try:
            self.refresh_channels()
        except Exception as e:  # never keep the plugin (and its held HTLCs) from starting
            self.log(f"listpeerchannels failed at startup: {e!r}; unknown channels are "
                     "looked up when their HTLCs arrive", level="broken")
        loaded = self._load("held", hold.HeldPayment.from_json).values()
        held = [self._with_channel_id(h) for h in loaded]
        self.relay = hold.Relay(policy, height, held, synced=in_sync,
                                accept_new=refused_options is None)
        # Records that just learnt their channel id: startup's reconcile writes them.
        self.relay.unsaved.update(h.payment_hash for h, old in zip(held, loaded) if h is not old)
        self.pays: Dict[str, payer.Pay] = self._load("pay", payer.Pay.from_json)
        self.terms: Dict[str, Policy] = {}   # peer -> the terms its INFO announced
        # Incoming.key (channel/HTLC id, as lightningd named it) -> the htlc_accepted
        # request awaiting our answer. Never payer-chosen data: an HTLC must never
        # take another's answer.
        self.pending: Dict[str, object] = {}
        # Incoming.key -> the hook call (onion, htlc, peer, request) still to decide:
        # its channel was unknown, or deciding raised while it may have a record.
        self.undecided: Dict[str, tuple] = {}
        self.paying: set = set()             # hashes an asyncln-pay call is working on
        self._jobs: deque = deque()
        self._cv = threading.Condition()
        self._waking: Dict[str, float] = {}  # peer -> give up waiting at (monotonic)
        self._queued: Dict[tuple, int] = {}  # (peer, kind) -> jobs queued, at most QUEUED_PER_PEER
        self._last_tick = self._last_reconcile = self._last_chain = time.monotonic()
        # hash of an invoice a Rod handed us -> that Rod: paying it later holds for the Rod
        fetched = self.store.load("fetched")
        self.fetched = {h: v.get("rod") for h, v in fetched.items()}
        # ...and the recipient's note key from its code: we commit to the amount with it
        self.commit_keys = {h: v["note_key"] for h, v in fetched.items() if v.get("note_key")}
        # hash -> the shared secrets of our attempt's onion to a next holder (onion_failure)
        self.onion_secrets = self.store.load("secrets")
        self.onion_secret, self.announced = self._onion_key(policy)
        self.rods = RodShell(self, rod_limits, recipient)

    def _onion_key(self, policy: Policy):
        """Our asyncln key (makesecret) and the terms we announce: the policy, the key, its signature."""
        secret = self.rpc.call("makesecret", {"string": onion.ONION_KEY_LABEL}).get("secret")
        if secret is None:
            return None, policy
        key = onion.public_key(secret)
        signed = self.rpc.call("signmessage", {"message": onion.key_statement(key)})
        return onion.secret_key(secret), replace(policy, onion_key=key,
                                                 onion_key_sig=signed.get("zbase"))

    def _load(self, kind: str, parse) -> dict:
        """One unreadable record must not keep the others (and the plugin) from loading."""
        loaded = {}
        for key, value in self.store.load(kind).items():
            try:
                loaded[key] = parse(value)
            except (KeyError, TypeError, ValueError) as e:
                self.log(f"skipping unreadable {kind} record {key}: {e!r}", level="warn")
        return loaded

    def refresh_channels(self) -> None:
        names = channel_names(self.rpc.call("listpeerchannels")["channels"])
        with self.lock:
            self.channels.update(names)

    def _with_channel_id(self, held: hold.HeldPayment) -> hold.HeldPayment:
        """A record stored before channel ids were: its channel's id, if lightningd lists it."""
        if held.incoming.channel_id is not None:
            return held
        return replace(held, incoming=replace(held.incoming,
                                              channel_id=self.channels.get(held.incoming.channel)))

    def has_open_records(self) -> bool:
        """Any held record counts: a complete or failed one may still be replayed."""
        return bool(self.relay.held) or any(p.status in PAY_OPEN for p in self.pays.values())

    def start(self) -> None:
        """Start the worker, then settle what a crash may have left open."""
        threading.Thread(target=self._work, name="asyncln-worker", daemon=True).start()
        self.submit(self._startup)

    def _startup(self) -> None:
        self.reconcile()
        for peer in self.asyncln_peers():
            self.greet(peer)
            self.rods.peer_connected(peer)

    # --- the worker --------------------------------------------------------

    def submit(self, job: Callable[[], None], urgent: bool = False) -> None:
        with self._cv:
            (self._jobs.appendleft if urgent else self._jobs.append)(job)
            self._cv.notify()

    def submit_once(self, key: tuple, job: Callable[[], None]) -> None:
        """A peer's request: at most QUEUED_PER_PEER queued per (peer, kind), however many it sends.

        A flood then costs a few jobs, not a queue that delays held payments;
        an honest peer's few concurrent requests all get through.
        """
        with self._cv:
            if self._queued.get(key, 0) >= QUEUED_PER_PEER:
                self.log(f"dropping a {key[1]} request from {key[0]}: too many queued",
                         level="info")
                return
            self._queued[key] = self._queued.get(key, 0) + 1

        def once():
            with self._cv:
                self._queued[key] -= 1
                if not self._queued[key]:
                    del self._queued[key]
            job()
        self.submit(once)

    def submit_actions(self, actions: List[hold.Action]) -> None:
        if actions:
            urgent = any(isinstance(a, (hold.ResolveIncoming, hold.FailIncoming)) for a in actions)
            self.submit(lambda: self.run(actions), urgent)

    def _work(self) -> None:
        while True:
            with self._cv:
                if not self._jobs:
                    self._cv.wait(TICK_SECONDS)
                job = self._jobs.popleft() if self._jobs else None
            for step in ([job] if job else []) + [self._tick]:
                try:
                    step()
                except Exception as e:  # the worker must outlive any one job
                    self.log(f"internal error in the worker: {e!r}", level="warn")

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick < TICK_SECONDS:
            return
        self._last_tick = now
        for peer, deadline in list(self._waking.items()):
            if now > deadline or self.channel_ready(peer):
                with self._cv:
                    self._waking.pop(peer, None)
                with self.lock:
                    actions = self.relay.peer_online(peer)
                self.run(actions)
        if not self.relay.synced and now - self._last_chain >= CHAIN_SECONDS:
            self.check_chain()
        if now - self._last_reconcile >= RECONCILE_SECONDS:
            self.reconcile()

    def run(self, actions: List[hold.Action]) -> None:
        """Carry out actions in order; a failed one is reported, and the rest still run."""
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            try:
                follow = self.execute(action)
            except Exception as e:
                error = rpc_message(e) if isinstance(e, RpcError) else repr(e)
                self.log(f"{type(action).__name__} for {action.payment_hash} failed: {error}",
                         level="warn")
                try:
                    with self.lock:
                        follow = self.relay.action_failed(action, error)
                except Exception as e:  # the rest of the queue may hold another HTLC's answer
                    self.log(f"internal error reporting a failed {type(action).__name__} for "
                             f"{action.payment_hash}: {e!r}; reconcile re-issues what is owed",
                             level="broken")
                    follow = []
            queue.extendleft(reversed(follow))

    def execute(self, action: hold.Action) -> List[hold.Action]:
        match action:
            case hold.Persist(held=held):
                # The record as it is now: an older snapshot written after a newer
                # one (answers jump the queue) would undo a state a restart needs.
                with self.lock:
                    current = self.relay.held.get(held.payment_hash, held)
                self.store.put("held", held.payment_hash, current.to_json())
            case hold.Forget(payment_hash=payment_hash):
                self.store.delete("held", payment_hash)
                with self.lock:
                    had_secrets = self.onion_secrets.pop(payment_hash, None) is not None
                if had_secrets:
                    self.store.delete("secrets", payment_hash)
            case hold.FindRoute():
                return self.find_route(action)
            case hold.SendPay():
                return self.send_attempt(action)
            case hold.CheckAttempt(payment_hash=payment_hash, partid=partid):
                return self.check_attempt(payment_hash, partid)
            case hold.ResolveIncoming(payment_hash=payment_hash, preimage=preimage, htlc=key):
                self.answer(payment_hash, key, {"result": "resolve", "payment_key": preimage},
                            "resolved with the preimage")
            case hold.FailIncoming(payment_hash=payment_hash, failure_message=message,
                                   reason=reason, htlc=key):
                self.answer(payment_hash, key, {"result": "fail", "failure_message": message},
                            f"failed back: {reason}")
            case hold.NotifyPayer():
                self.send(action.payer, messages.PaymentStatus(
                    action.payment_hash, action.state, action.give_up_height,
                    action.next_poll_height, action.attempts, action.reason))
            case _:
                assert_never(action)
        return []

    # --- the holding node's actions ----------------------------------------

    def find_route(self, action: hold.FindRoute) -> List[hold.Action]:
        layer = self.hint_layer(action) if action.hints else None
        try:
            answer = self.rpc.call("getroutes", {
                "source": self.node_id, "destination": action.destination,
                "amount_msat": action.amount_msat,
                "layers": ROUTE_LAYERS + ([layer] if layer else []),
                "maxfee_msat": action.maxfee_msat, "final_cltv": action.final_cltv,
                "maxdelay": action.maxdelay, "maxparts": 1})
            route = sendpay_route(first_route(answer))
        except RpcError as e:
            unknown = (action.destination if not action.hints and self.unknown_node(action.destination)
                       else None)
            with self.lock:
                return self.relay.route_failed(action.payment_hash, rpc_message(e), unknown)
        except (KeyError, IndexError, ValueError) as e:
            with self.lock:
                return self.relay.route_failed(action.payment_hash, f"unusable getroutes answer: {e!r}")
        finally:
            if layer:
                self._try_rpc("askrene-remove-layer", {"layer": layer})
        with self.lock:
            return self.relay.route_found(action.payment_hash, route)

    def unknown_node(self, node_id: str) -> bool:
        """Neither gossip nor our peers know it: a route to it cannot appear by waiting."""
        if self.rpc.call("listnodes", {"id": node_id}).get("nodes"):
            return False
        return not self.rpc.call("listpeers", {"id": node_id}).get("peers")

    def hint_layer(self, action: hold.FindRoute) -> Optional[str]:
        """An askrene layer holding the invoice's hinted channels, which gossip never shows.

        Our own channels are left out: ``auto.localchans`` knows them better.
        """
        layer = f"asyncln-hints-{action.payment_hash}"
        self._try_rpc("askrene-remove-layer", {"layer": layer})  # a crash may have left it
        if not self._try_rpc("askrene-create-layer", {"layer": layer, "persistent": False}):
            return None
        for route in action.hints:
            targets = [hop.node_id for hop in route[1:]] + [action.destination]
            for hop, target in zip(route, targets):
                if hop.node_id == self.node_id:
                    continue
                direction = int(bytes.fromhex(hop.node_id) > bytes.fromhex(target))
                self._try_rpc("askrene-create-channel", {
                    "layer": layer, "source": hop.node_id, "destination": target,
                    "short_channel_id": hop.short_channel_id, "capacity_msat": HINT_CAPACITY_MSAT})
                self._try_rpc("askrene-update-channel", {
                    "layer": layer, "short_channel_id_dir": f"{hop.short_channel_id}/{direction}",
                    "enabled": True, "htlc_minimum_msat": 0, "htlc_maximum_msat": HINT_CAPACITY_MSAT,
                    "fee_base_msat": hop.fee_base_msat, "fee_proportional_millionths": hop.fee_ppm,
                    "cltv_expiry_delta": hop.cltv_delta})
        return layer

    def _try_rpc(self, method: str, params: dict) -> bool:
        """A call whose failure only costs a route: log it and go on."""
        try:
            self.rpc.call(method, params)
            return True
        except RpcError as e:
            self.log(f"{method} failed: {rpc_message(e)}", level="debug")
            return False

    def send_attempt(self, action: hold.SendPay) -> List[hold.Action]:
        """Re-check lightningd's own height just before sending, then send with our partid."""
        with self.lock:
            if not self.relay.may_send(action.payment_hash, action.partid):
                return []
        height, in_sync = self.chain_state()
        if not in_sync:
            with self.lock:  # unsynced now: the worker's tick asks again until it caught up
                return (self.relay.send_refused(action.payment_hash, action.partid,
                                                "lightningd is catching up with bitcoind's tip")
                        + self.relay.chain(height, False))
        if height + 1 > action.max_height:
            with self.lock:
                return self.relay.send_refused(
                    action.payment_hash, action.partid,
                    f"at height {height} the route's expiry would pass "
                    f"cltv_expiry - safety (highest safe height {action.max_height - 1})")
        parts = self.rpc.call("listsendpays", {"payment_hash": action.payment_hash})["payments"]
        done = next((p for p in parts if p.get("status") == "complete"
                     and p.get("payment_preimage")), None)
        if done is not None:
            with self.lock:  # paid already, whoever sent it: resolve, never send again
                return self.relay.attempt_succeeded(action.payment_hash, done["payment_preimage"])
        pending = [p.get("partid", 0) for p in parts if p.get("status") == "pending"
                   and p.get("partid", 0) not in action.lost_partids]
        if pending:
            with self.lock:  # one live attempt per hash: settle that one first
                return self.relay.adopt_attempt(action.payment_hash, action.partid, max(pending))
        groupid, free_partid = next_attempt_ids(parts)
        if free_partid > action.partid:
            # Parts of an earlier record for this hash already use our number.
            with self.lock:
                return self.relay.send_refused(action.payment_hash, action.partid,
                                               f"part {action.partid} is taken in lightningd",
                                               used_partid=free_partid - 1)
        try:
            result = self.send_onion(action, height + 1, groupid)
        except RpcError as e:
            # Believe lightningd's records, not the error.
            self.log(f"sendonion for {action.payment_hash} answered: {rpc_message(e)}", level="info")
            return [hold.CheckAttempt(action.payment_hash, action.partid)]
        self.log(f"forwarding held payment {action.payment_hash} (part {action.partid})")
        if result.get("status") == "complete":
            with self.lock:
                return self.relay.attempt_succeeded(action.payment_hash, result["payment_preimage"])
        return []

    def send_onion(self, action: hold.SendPay, base: int, groupid: int) -> dict:
        """Our own onion, sent with ``sendonion``: a next holder (version 2) gets the rest of
        the asyncln onion in its final-hop payload, a recipient its payment data and the
        payer's ``final_tlvs``.

        Never ``sendpay``, and no ``total_amount_msat``: lightningd then takes a new
        part in the group of a part a crash left pending with no HTLC (CLN #3916),
        where ``sendpay`` refuses "Already have X of X payments in progress".
        ``base`` is the height sendonion counts the first hop's delay from
        (lightningd's tip + 1, read just before, as ``max_height`` was checked).
        """
        route, last = list(action.route), action.route[-1]
        if action.onion is None:
            payload = onion.recipient_payload(last["amount_msat"], base + last["delay"],
                                              action.payment_secret, action.total_msat,
                                              action.final_tlvs)
        else:
            payload = onion.final_payload(last["amount_msat"], base + last["delay"],
                                          bytes.fromhex(action.onion))
        made = self.rpc.call("createonion", {"hops": onion.route_hops(route, base, payload),
                                             "assocdata": action.payment_hash})
        # Kept by us, not given to lightningd: it then keeps the reply undecoded, in
        # listsendpays too, and a lost sendpay_failure loses nothing (onion_failure).
        saved = {"partid": action.partid, "shared_secrets": made["shared_secrets"],
                 "destination": last["id"]}
        self.store.put("secrets", action.payment_hash, saved)
        with self.lock:
            self.onion_secrets[action.payment_hash] = saved
        return self.rpc.call("sendonion", {
            "onion": made["onion"], "payment_hash": action.payment_hash,
            "first_hop": {"id": route[0]["id"], "amount_msat": route[0]["amount_msat"],
                          "delay": route[0]["delay"]},
            "partid": action.partid, "groupid": groupid, "label": "asyncln-relay",
            "amount_msat": last["amount_msat"], "destination": last["id"]})

    def check_attempt(self, payment_hash: str, partid: int) -> List[hold.Action]:
        parts = self.rpc.call("listsendpays", {"payment_hash": payment_hash})["payments"]
        htlc_out = payment_hash in outgoing_htlc_hashes(self.rpc.call("listpeerchannels")["channels"])
        outcome = judge_attempt(parts, partid, htlc_out)
        if isinstance(outcome, Failed):
            outcome = self.failure_of(payment_hash, failed_part(parts, partid)) or outcome
        with self.lock:
            return self.relay.attempt_checked(payment_hash, partid, outcome)

    def failure_of(self, payment_hash: str, part: Optional[dict]) -> Optional[Failed]:
        """What lightningd kept of a failed part, for a lost ``sendpay_failure``.

        ``listsendpays`` shows no failure code. An attempt to a next holder
        left its reply there as ``erroronion``, which we decode with our saved
        secrets; for a ``sendpay`` attempt, ``waitsendpay`` on the failed part
        answers at once with the code, erring index and node lightningd stored.
        """
        if part is None:
            return None
        with self.lock:
            saved = self.onion_secrets.get(payment_hash)
        decoded = onion_failure(part, saved)
        if "failcode" in decoded:
            return judge_failure(decoded, "the attempt failed")
        try:
            self.rpc.call("waitsendpay", {"payment_hash": payment_hash, "timeout": 0,
                                          "partid": part.get("partid", 0),
                                          "groupid": part["groupid"]})
        except RpcError as e:
            data = e.error.get("data") if isinstance(e.error, dict) else None
            if isinstance(data, dict) and "failcode" in data:
                return judge_failure(data, rpc_message(e))
        return None

    def answer(self, payment_hash: str, key: str, result: dict, what: str) -> None:
        """Answer the request lightningd named ``key``, then tell the core it was delivered."""
        with self.lock:
            request = self.pending.pop(key, None)
            self.undecided.pop(key, None)
        if request is None:
            self.log(f"HTLC {payment_hash} ({key}) {what}, but lightningd no longer waits on it",
                     level="debug")
        else:
            try:
                request.set_result(result)
            except Exception:
                if waiting(request):  # not delivered: still owed
                    with self.lock:
                        self.pending.setdefault(key, request)
                    raise
            self.log(f"HTLC {payment_hash} ({key}) {what}")
        with self.lock:
            self.relay.answered(payment_hash, key)

    def may_fail(self, htlc: dict, request) -> bool:
        """plugin.py's last resort: only an HTLC with no record and no answer owed may be failed."""
        with self.lock:
            return (htlc.get("payment_hash") not in self.relay.held
                    and not any(r is request for r in self.pending.values()))

    def send(self, peer: str, msg) -> bool:
        """Informative messages: a peer that is gone is not an error."""
        try:
            self.rpc.call("sendcustommsg", {"node_id": peer, "msg": messages.encode(msg)})
            return True
        except RpcError as e:
            self.log(f"could not message {peer}: {rpc_message(e)}", level="debug")
            return False

    # --- events from hooks and notifications (dispatch thread: no I/O) ------

    def htlc_accepted(self, hook_onion: dict, htlc: dict, peer_id: Optional[str], request,
                      refreshed: bool = False) -> None:
        """Decide, or keep owing: an error never fails an HTLC that has a record.

        Only an HTLC with no record, for which nothing was sent, is failed
        (or passed on) when deciding raises; any other stays pending,
        logged at ``broken``, and reconcile decides it again.
        """
        try:
            self._decide(hook_onion, htlc, peer_id, request, refreshed)
        except Exception as e:
            if self._owe(hook_onion, htlc, peer_id, request, e):
                return
            self.log(f"internal error on HTLC {htlc.get('payment_hash')}: {e!r}", level="warn")
            if waiting(request):
                try:
                    # Ours to hold, or our deposited invoice whose commitment went unchecked:
                    # refuse rather than let it pass as a plain payment.
                    ours = carries_record(hook_onion) or htlc.get("payment_hash") in self.rods.amountless
                except Exception:
                    ours = True  # unreadable: refuse rather than let it pass as a plain payment
                request.set_result(FAIL_TEMPORARY if ours else CONTINUE)

    def _owe(self, hook_onion, htlc, peer_id, request, error) -> bool:
        """Keep an HTLC that may have a record waiting, to decide again at reconcile."""
        payment_hash = htlc.get("payment_hash")
        with self.lock:
            held = self.relay.held.get(payment_hash)
            try:
                key = htlc_key(htlc)
                incoming = incoming_from_hook(htlc, hook_onion, peer_id,
                                              self.channels.get(htlc["short_channel_id"]))
            except Exception:  # whatever broke may break this too: it may be its record
                key, incoming = f"unnamed/{id(request)}", None
            mine = held is not None and (incoming is None or held.incoming.key == key
                                         or held.incoming.same_htlc(incoming))
            if not waiting(request) or not mine:
                return False
            self.pending[key] = request
            self.undecided[key] = (hook_onion, htlc, peer_id, request)
        self.log(f"internal error on HTLC {payment_hash} ({key}), which may have a record: "
                 f"{error!r}; its answer stays owed and reconcile decides again", level="broken")
        return True

    def _decide(self, hook_onion: dict, htlc: dict, peer_id: Optional[str], request,
                refreshed: bool) -> None:
        payment_hash = htlc["payment_hash"]
        key = htlc_key(htlc)
        # Replays first, before any parsing or crypto: a dict lookup, no lock for
        # the plain HTLCs that are not ours.
        if payment_hash not in self.relay.held and not carries_record(hook_onion):
            # Not ours to hold: as the recipient, check the payer's amount commitment.
            request.set_result(self.rods.as_recipient(hook_onion, htlc))
            return
        channel_id = self.channels.get(htlc["short_channel_id"])
        if channel_id is None and not refreshed:
            # A channel we have not mapped yet: ask lightningd off the hook path.
            with self.lock:
                self.pending[key] = request
                self.undecided[key] = (hook_onion, htlc, peer_id, request)
            self.submit(self.decide_again, urgent=True)
            return
        incoming = incoming_from_hook(htlc, hook_onion, peer_id, channel_id)
        tip = None
        if "cltv_expiry_relative" in htlc:
            tip = incoming.cltv_expiry - int(htlc["cltv_expiry_relative"])
        decided: List[hold.Action] = []
        try:
            with self.lock:
                replay = self.relay.replay(payment_hash, incoming, tip)
                if replay is not None:
                    verdict, actions = replay
                    decided += actions
                    return self._tell(verdict, payment_hash, key, request)
            self._judge(hook_onion, payment_hash, incoming, tip, request, decided)
        finally:
            self.submit_actions(decided)  # what the core decided is carried out, whatever raised

    def _judge(self, hook_onion: dict, payment_hash: str, incoming: hold.Incoming,
               tip: Optional[int], request, decided: List[hold.Action]) -> None:
        """Not a replay: read the record (peel the onion), and let the core decide."""
        payload = bytes.fromhex(hook_onion["payload"])
        forward_msat = msat(hook_onion.get("forward_msat", 0))
        outgoing_cltv = int(hook_onion.get("outgoing_cltv_value", 0))
        # Version 2: peel our layer (one ECDH, no I/O) before taking the lock.
        peeled = peel.read(payload, payment_hash, self.onion_secret, self.node_id,
                           self.relay.policy, incoming, max(self.relay.height, tip or 0))
        with self.lock:
            if isinstance(peeled, hold.Reject):
                verdict, actions = peeled, []
            elif peeled is not None:
                record, offset, refusal = peeled
                verdict, actions = self.relay.admit(payment_hash, incoming, record, offset,
                                                    forward_msat, outgoing_cltv, tip, refusal)
            else:
                refusal = None if self.relay.policy.accept_clear else hold.Reject(
                    failures.invalid_onion_payload(RECORD_TYPE, 0),
                    "clear records (version 1) are refused: asyncln-accept-clear=false")
                verdict, actions = self.relay.htlc_accepted(
                    payment_hash, incoming, payload, forward_msat, outgoing_cltv, tip, refusal)
            decided += actions
            self._tell(verdict, payment_hash, incoming.key, request)

    def _tell(self, verdict: hold.Verdict, payment_hash: str, key: str, request) -> None:
        """Under the lock: an answer for a held HTLC must find its request in the table."""
        match verdict:
            case hold.Continue():
                request.set_result(CONTINUE)
            case hold.Reject(failure_message=message, reason=reason):
                self.log(f"rejecting asyncln HTLC {payment_hash}: {reason}", level="info")
                request.set_result({"result": "fail", "failure_message": message})
            case hold.Hold():
                self.pending[key] = request
                return
            case _:
                assert_never(verdict)
        if self.pending.get(key) is request:
            del self.pending[key]

    def decide_again(self) -> None:
        """Worker: hook calls that wait for a decision, with lightningd's channels read afresh.

        A failed listpeerchannels only weakens the match on a channel whose
        scid changed (see hold.Incoming.same_htlc); never stalls an HTLC.
        """
        with self.lock:
            if not self.undecided:
                return
        try:
            self.refresh_channels()
        except Exception as e:
            self.log(f"listpeerchannels failed: {e!r}", level="warn")
        with self.lock:
            calls = list(self.undecided.items())
        for key, call in calls:
            with self.lock:
                if self.undecided.get(key) is not call:
                    continue  # decided or answered meanwhile
                del self.undecided[key]
                if self.pending.get(key) is call[3]:
                    del self.pending[key]
            try:
                self.htlc_accepted(*call, refreshed=True)
            except Exception as e:  # not even a failure could be written: try again later
                if waiting(call[3]):
                    with self.lock:
                        self.pending.setdefault(key, call[3])
                        self.undecided.setdefault(key, call)
                self.log(f"could not answer HTLC {key}: {e!r}", level="broken")

    def block(self, height: int) -> None:
        def job():
            self.check_chain(height)
            self.reconcile()
            self.submit(lambda: self.rods.on_block(height))
        self.submit(job, urgent=True)  # deadlines ride on it: ahead of informative work

    def check_chain(self, hint: int = 0) -> None:
        """Feed the relay lightningd's height and sync state, never a stale guess."""
        self._last_chain = time.monotonic()
        height, in_sync = self.chain_state()
        with self.lock:
            actions = self.relay.chain(max(height, hint), in_sync)
        self.run(actions)

    def chain_state(self):
        """(lightningd's tip, whether it is bitcoind's tip): see :func:`synced`.

        ``getchaininfo`` is the Bitcoin backend's method (bcli's), which lightningd
        serves over its RPC; it is asked first, so a block arriving meanwhile can
        only make lightningd look ahead of the header count read. The tip is
        ``waitblockheight 0``'s answer: lightningd's processed height, which its
        expiries count from. getinfo's ``blockheight`` is gossipd's, a little later.
        """
        try:
            chain = self.rpc.call("getchaininfo", {"last_height": 0})
        except RpcError as e:
            self.log(f"getchaininfo failed: {rpc_message(e)}; no attempts until it answers",
                     level="warn")
            chain = None
        tip = int(self.rpc.call("waitblockheight", {"blockheight": 0, "timeout": 0})["blockheight"])
        return tip, synced(tip, chain, self.rpc.getinfo())

    def reconcile(self) -> None:
        """Re-issue what is owed; settle open payments from lightningd's own records."""
        self._last_reconcile = time.monotonic()
        self.decide_again()
        with self.lock:
            actions = self.relay.reconcile()
        self.run(actions)
        self.reconcile_pays()

    def channel_changed(self) -> None:
        """A channel opened, confirmed or was spliced: map its new names before its HTLCs."""
        self.submit(self.refresh_channels)

    def peer_connected(self, peer: str) -> None:
        def job():
            if peer in self.asyncln_peers():
                self.greet(peer)
                self.rods.peer_connected(peer)
        self.submit(job)
        self.wake(peer)

    def wake(self, peer: str) -> None:
        """Deliver to ``peer`` once its channel is usable: at most one wait per peer."""
        with self.lock:
            holding = bool(self.relay.by_node.get(peer))
        if holding:
            with self._cv:
                self._waking.setdefault(peer, time.monotonic() + PEER_READY_SECONDS)
                self._cv.notify()

    def attempt_succeeded(self, payment_hash: str, preimage: str) -> None:
        with self.lock:
            actions = self.relay.attempt_succeeded(payment_hash, preimage)
            pay = self.pays.get(payment_hash)
            updated = pay and payer.on_success(pay, preimage)
        self.submit_actions(actions)
        if updated:
            self.save_pay(updated, durable=False)

    def attempt_failed(self, failure: dict) -> None:
        data = failure.get("data", {})
        payment_hash = data.get("payment_hash")
        if payment_hash is None:
            return
        message = failure.get("message", "payment failed")
        partid, groupid = data.get("partid", 0), data.get("groupid")
        with self.lock:
            saved = self.onion_secrets.get(payment_hash)
        failed = judge_failure(onion_failure(data, saved), message)
        with self.lock:
            actions = self.relay.attempt_failed(payment_hash, partid, failed.reason,
                                                failed.refused_by, failed.holder_failure)
            pay = self.pays.get(payment_hash)
            updated = pay and payer.on_failure(pay, partid, groupid, data.get("failcode"),
                                               data.get("erring_index"), message)
        self.submit_actions(actions)
        if updated:
            self.save_pay(updated, durable=False)

    def custom_message(self, peer: str, payload: str) -> None:
        try:
            msg = messages.decode(payload)
        except DecodeError as e:
            self.log(f"ignoring malformed asyncln message from {peer}: {e}", level="info")
            return
        match msg:
            case None:
                return
            case messages.QueryInfo():
                self.submit_once((peer, "info"), lambda: self.send(peer, self.announced))
            case Policy():
                with self.lock:
                    self.terms[peer] = msg
            case messages.Online():
                self.wake(peer)
            case messages.PaymentStatus():
                with self.lock:
                    pay = self.pays.get(msg.payment_hash)
                    updated = pay and payer.on_status(pay, msg, peer)
                if updated:
                    self.save_pay(updated, durable=False)
                else:
                    self.log(f"ignoring status for {msg.payment_hash} from {peer}", level="info")
            case (messages.Deposit() | messages.PoolStatus() | messages.InvoiceRequest()
                  | messages.InvoiceResponse() | messages.Note() | messages.NoteAck()
                  | messages.CancelRequest() | messages.CancelAnswer() | messages.NoteAnswer()):
                self.rods.on_message(peer, msg)
            case _:
                assert_never(msg)

    def payer_cancelled(self, peer: str, payment_hash: str) -> None:
        """Worker: the payer asks us, its holding node, to fail its HTLC back."""
        try:
            with self.lock:
                actions = self.relay.payer_cancel(payment_hash, peer)
        except AsynclnError as e:
            self.log(f"refusing {peer}'s cancel of {payment_hash}: {e}", level="info")
            self.send(peer, messages.CancelAnswer(payment_hash, False, str(e), int(e.code)))
            return
        self.run(actions)
        # "Accepted" only once the failed record is on disk: a crash before it
        # would reload the hold, and the replayed HTLC could still be delivered.
        saved = self.store.get("held", payment_hash)
        if (saved or {}).get("state") != HoldState.FAILED.value:
            self.send(peer, messages.CancelAnswer(payment_hash, False,
                                                  "the cancel is not saved yet; ask again",
                                                  int(Code.NO_ANSWER)))
            return
        self.log(f"payer {peer} cancelled {payment_hash}")
        self.send(peer, messages.CancelAnswer(payment_hash, True, hold.CANCELLED_BY_PAYER))

    # --- peers -----------------------------------------------------------

    def connected_peers(self) -> set:
        return {p["id"] for p in self.rpc.call("listpeers")["peers"] if p.get("connected")}

    def remember_fetched(self, payment_hash: str, rod: str, note_key: str) -> None:
        with self.lock:
            self.fetched[payment_hash] = rod
            self.commit_keys[payment_hash] = note_key
        self.store.put("fetched", payment_hash, {"fetched_at": int(time.time()), "rod": rod,
                                                 "note_key": note_key})

    def asyncln_peers(self) -> List[str]:
        return [p["id"] for p in self.rpc.call("listpeers")["peers"]
                if p.get("connected") and has_feature(p.get("features", ""))]

    def greet(self, peer: str) -> None:
        """A peer that speaks asyncln connected: learn its terms, say we're back."""
        self.send(peer, messages.QueryInfo())
        self.send(peer, messages.Online())

    def channel_ready(self, peer: str) -> bool:
        channels = self.rpc.call("listpeerchannels", {"id": peer})["channels"]
        return not channels or any(
            c.get("peer_connected") and c.get("state") == "CHANNELD_NORMAL"
            and c.get("reestablished", True) for c in channels)

    def _is_important(self, plugin_paths: Sequence[str]) -> bool:
        """Loaded with important-plugin=, so that lightningd stops rather than fail held HTLCs.

        ``plugin_paths``: plugin.py and what lightningd started (``sys.argv[0]``),
        which is another file when reckless's wrapper runs plugin.py.
        """
        if not plugin_paths:
            return False
        try:
            configs = self.rpc.call("listconfigs", {"config": "important-plugin"})["configs"]
        except (RpcError, KeyError):
            return False
        paths = configs.get("important-plugin", {}).get("values_str", [])
        return not {os.path.realpath(p) for p in plugin_paths}.isdisjoint(os.path.realpath(p) for p in paths)

    # --- the paying side ---------------------------------------------------

    def save_pay(self, pay: payer.Pay, durable: bool = True) -> None:
        """Memory at once; the datastore now (``durable``) or from the worker."""
        with self.lock:
            self.pays[pay.payment_hash] = pay
        if durable:
            self.store.put("pay", pay.payment_hash, pay.to_json())
        else:
            self.submit(lambda: self.store.put("pay", pay.payment_hash,
                                               self.pays[pay.payment_hash].to_json()))

    def reconcile_pays(self) -> None:
        with self.lock:
            open_pays = [p for p in self.pays.values()
                         if p.status in PAY_OPEN and p.payment_hash not in self.paying]
        if not open_pays:
            return
        htlcs = outgoing_htlc_hashes(self.rpc.call("listpeerchannels")["channels"])
        for pay in open_pays:
            parts = self.rpc.call("listsendpays", {"payment_hash": pay.payment_hash})["payments"]
            with self.lock:
                if self.pays.get(pay.payment_hash) is not pay:
                    continue  # a notification moved it meanwhile
                updated = payer.reconcile(pay, parts, pay.payment_hash in htlcs, self.relay.height)
            if updated:
                self.save_pay(updated)

    def pay(self, invstring: str, trampoline: Optional[str], maxfee_msat, max_hold_blocks,
            amount_msat=None, note: Optional[str] = None, clear=False) -> dict:
        """Pay a BOLT11 invoice, or a payment code: fetch an invoice from its Rod, then pay it."""
        amount = None if amount_msat is None else _int(amount_msat, "amount_msat")
        fetched = None
        if invstring.lower().startswith(CODE_PREFIX):
            if amount is None:
                raise AsynclnError("paying a code needs amount_msat", Code.BAD_PARAMETER)
            fetched = self.rods.fetch(invstring, amount, note)
            invstring = fetched.get("bolt11", "")
        elif note is not None:
            raise AsynclnError("a note needs a payment code (it is encrypted to the code's key)",
                               Code.NOTE_REFUSED)
        now = int(time.time())
        offer = None
        if fetched and "offer" in fetched:  # a private code: we never learn the recipient
            offer = payee.PrivateOffer.decode(bytes.fromhex(fetched["offer"]))
            invoice = payer.private_invoice(offer, fetched["payee_key"], amount)
            self.await_terms(fetched["rod"])  # the tail is for the Rod: we need its terms
        else:
            try:
                decoded = self.rpc.call("decode", {"string": invstring})
            except RpcError as e:
                raise AsynclnError(f"cannot decode invstring: {rpc_message(e)}",
                                   Code.INVOICE_UNUSABLE)
            invoice = payer.check_invoice(decoded, now, invstring, amount)
        invoice = payer.committed(invoice, self.commit_keys.get(invoice.payment_hash))
        with self.lock:
            existing = self.pays.get(invoice.payment_hash)
            payer.may_pay_again(existing)
            if invoice.payment_hash in self.paying:
                raise AsynclnError("this invoice is already being paid", Code.PAYMENT_EXISTS)
            self.paying.add(invoice.payment_hash)
            terms = dict(self.terms)
        try:
            result = self._pay(invoice, existing, terms, trampoline, maxfee_msat, max_hold_blocks,
                               now, bool(clear), self.fetched.get(invoice.payment_hash), offer)
            if fetched:
                result.update(rod=fetched["rod"], note_sent=fetched["note_sent"])
            return result
        finally:
            with self.lock:
                self.paying.discard(invoice.payment_hash)

    def _pay(self, invoice, existing, terms, trampoline, maxfee_msat, max_hold_blocks, now,
             clear=False, rod=None, offer=None) -> dict:
        maxfee = payer.default_maxfee(invoice.amount_msat) if maxfee_msat is None else _int(maxfee_msat, "maxfee_msat")
        try:
            trampoline, info = payer.choose_trampoline(
                trampoline, invoice.destination, terms, set(self.asyncln_peers()),
                invoice.amount_msat, maxfee)
        except AsynclnError as e:
            if e.code == Code.TRAMPOLINE_TERMS_UNKNOWN and trampoline:
                self.send(trampoline, messages.QueryInfo())
            raise
        hold_for = payer.hold_blocks(None if max_hold_blocks is None else _int(max_hold_blocks, "max_hold_blocks"),
                                     info, invoice, now)
        final_cltv = payer.final_cltv_to_trampoline(invoice, hold_for, info)
        path = self.route_to(trampoline, invoice.amount_msat + maxfee, maxfee, final_cltv)
        to_trampoline = path[0]["amount_out_msat"] - path[-1]["amount_out_msat"]
        # Reports only reach a connected peer: ask for them only when S is ours.
        report_to = self.node_id if len(path) == 1 else None
        version = 1 if clear or not info.onion_key else 2
        if offer is not None and version != 2:
            raise AsynclnError("a private offer needs a holder that takes asyncln onions",
                               Code.NO_TRAMPOLINE)
        tail = offer.tail if offer is not None else None
        rod_terms = terms.get(rod) if rod and rod != trampoline and version == 2 else None
        if rod_terms is not None and not rod_terms.onion_key and rod in self.rods.rod_keys:
            rod_terms = replace(rod_terms, onion_key=self.rods.rod_keys[rod])  # from its code
        packet = None
        if rod_terms is not None and rod_terms.onion_key and rod_terms.relay:
            # A chain: S (ours) holds for R (the payee's Rod), R holds for the recipient.
            budget = (maxfee - to_trampoline - rod_terms.fee(invoice.amount_msat)
                      - info.fee(invoice.amount_msat + maxfee))
            if budget < 0:
                raise AsynclnError(f"maxfee_msat {maxfee} does not cover both holders' fees",
                                   Code.MAXFEE_TOO_LOW)
            layers, leg = payer.chain_layers(invoice, (trampoline, info), (rod, rod_terms),
                                             hold_for, budget, report_to, tail)
            path = self.route_to(trampoline, leg.amount_in_msat, maxfee, leg.cltv_delta_in)
            packet, _ = onion.build([(info.onion_key, layers[0]), (rod_terms.onion_key, layers[1])],
                                    invoice.payment_hash)
        else:
            amount = payer.trampoline_amount(invoice, maxfee, to_trampoline, info)
            if amount != path[-1]["amount_out_msat"]:
                path = self.route_to(trampoline, amount, maxfee, final_cltv)
            if tail is not None and trampoline != rod:
                raise AsynclnError("pay a private offer through its Rod, or through a holder "
                                   "that knows the Rod's terms", Code.NO_TRAMPOLINE)
            if version == 2:
                last = (payer.final_layer(invoice, hold_for, report_to) if tail is None
                        else payer.tail_layer(invoice, hold_for, tail, report_to))
                packet, _ = onion.build([(info.onion_key, last)], invoice.payment_hash)
        height = self.rpc.getinfo()["blockheight"]
        hops, first_hop, cltv_expiry = payer.plan(invoice, path, height, hold_for, report_to,
                                                 maxfee_msat=maxfee, packet=packet)
        made = self.rpc.call("createonion", {"hops": hops, "assocdata": invoice.payment_hash})
        parts = self.rpc.call("listsendpays", {"payment_hash": invoice.payment_hash})["payments"]
        groupid, partid = next_attempt_ids(parts)
        fields = dict(payment_hash=invoice.payment_hash, bolt11=invoice.bolt11,
                      destination=invoice.destination, trampoline=trampoline,
                      amount_msat=invoice.amount_msat, amount_sent_msat=first_hop["amount_msat"],
                      cltv_expiry=cltv_expiry, max_hold_blocks=hold_for, created_at=now,
                      trampoline_index=len(hops), partid=partid, groupid=groupid,
                      report=report_to is not None, version=version,
                      rod=rod if rod_terms is not None or tail is not None else None,
                      payee_signature=offer.signature if offer is not None else None,
                      offer_expires_at=offer.expires_at if offer is not None else None)
        pay = payer.restart(existing, **fields) if existing else payer.Pay(**fields)
        self.save_pay(pay)
        try:
            # No total_amount_msat: lightningd then lets a retry join the group of
            # a part a crash left pending with no HTLC (CLN-FACTS, #3916).
            named = {} if tail is not None else {  # a private offer names no recipient
                "bolt11": invoice.bolt11, "destination": invoice.destination}
            self.rpc.call("sendonion", {
                "onion": made["onion"], "first_hop": first_hop,
                "payment_hash": invoice.payment_hash, "shared_secrets": made["shared_secrets"],
                "partid": partid, "groupid": groupid, "label": "asyncln-pay",
                "amount_msat": invoice.amount_msat, **named})
        except RpcError as e:
            failed = payer.on_failure(pay, partid, groupid, None, None, rpc_message(e))
            if failed:
                self.save_pay(failed)
            raise AsynclnError(f"sendonion failed: {rpc_message(e)}", Code.SEND_FAILED)
        return pay_json(self.pays[invoice.payment_hash])

    def await_terms(self, peer: str, seconds: float = TERMS_SECONDS) -> None:
        """A peer we just connected to sends its info shortly after: wait for it (RPC thread)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                if peer in self.terms:
                    return
            time.sleep(0.1)

    def route_to(self, trampoline, amount_msat, maxfee_msat, final_cltv) -> List[dict]:
        try:
            return first_route(self.rpc.call("getroutes", {
                "source": self.node_id, "destination": trampoline, "amount_msat": amount_msat,
                "layers": ROUTE_LAYERS, "maxfee_msat": maxfee_msat, "final_cltv": final_cltv,
                "maxparts": 1}))
        except RpcError as e:
            raise AsynclnError(f"no route to the trampoline: {rpc_message(e)}", Code.SEND_FAILED)

    def fetchinvoice(self, code_text: str, amount_msat, note: Optional[str]) -> dict:
        return self.rods.fetch(code_text, _int(amount_msat, "amount_msat"), note)

    def deposit(self, amount_msat, count, my_rod: Optional[str]) -> dict:
        """Deposit now, e.g. fixed-amount invoices, at one Rod (the first by default)."""
        amount = None if amount_msat is None else _int(amount_msat, "amount_msat")
        count = _int(count, "count")
        rods = [r.node_id for r in self.rods.config.rods]
        target = my_rod or (rods[0] if rods else None)
        if target not in rods:
            raise AsynclnError(f"{target} is not one of my Rods (asyncln-rod)", Code.BAD_PARAMETER)
        if not 1 <= count <= messages.MAX_DEPOSIT_BATCH:
            raise AsynclnError(f"count must be 1 to {messages.MAX_DEPOSIT_BATCH}",
                               Code.BAD_PARAMETER)
        return {"rod": target, "deposited": self.rods.deposit(target, amount, count)}

    # --- operator views ----------------------------------------------------

    def listpays(self, payment_hash: Optional[str] = None) -> dict:
        with self.lock:
            pays = [p for p in self.pays.values() if payment_hash in (None, p.payment_hash)]
            return {"pays": [pay_json(p) for p in sorted(pays, key=lambda p: p.created_at)]}

    def listheld(self, payment_hash: Optional[str] = None) -> dict:
        with self.lock:
            held = [h for h in self.relay.held.values() if payment_hash in (None, h.payment_hash)]
            return {"held": [held_json(h) for h in sorted(held, key=lambda h: h.hold_start)]}

    def poll(self, payment_hash: Optional[str] = None) -> dict:
        with self.lock:
            actions = self.relay.poll(payment_hash)
        self.submit_actions(actions)
        return self.listheld(payment_hash)

    def cancel(self, payment_hash: str) -> dict:
        """As the holding node: fail it back. As the payer: ask the holding node to."""
        with self.lock:
            mine = self.pays.get(payment_hash) if payment_hash not in self.relay.held else None
            if mine is None:
                actions = self.relay.cancel(payment_hash)
                entry = held_json(self.relay.held[payment_hash])
        if mine is not None:
            return self.cancel_as_payer(mine)
        self.submit_actions(actions)
        return entry

    def cancel_as_payer(self, pay: payer.Pay) -> dict:
        """Runs on its own thread: waits for the holding node's answer."""
        payer.may_cancel(pay)
        answer = self.rods.ask(pay.trampoline, ("cancel", pay.payment_hash),
                               messages.CancelRequest(pay.payment_hash))
        if not answer.accepted:
            raise AsynclnError(f"the holding node refused: {answer.reason}",
                               peer_code(answer.error_code))
        with self.lock:  # read and write under one lock: a notification may land meanwhile
            updated = payer.cancelled(self.pays[pay.payment_hash])
            if updated:
                self.pays[pay.payment_hash] = updated
        if updated:
            self.submit(lambda: self.store.put("pay", pay.payment_hash,
                                               self.pays[pay.payment_hash].to_json()))
        return pay_json(self.pays[pay.payment_hash])

    def getinfo(self) -> dict:
        with self.lock:
            relay = self.relay
            warnings = []
            if not self.important:
                warnings.append("asyncln is not loaded with important-plugin=: if it dies, "
                                "lightningd fails the HTLCs it holds (see README)")
            if self.refused_options:
                warnings.append(f"options refused ({self.refused_options}): serving open records, "
                                "accepting no new holds")
            if not relay.synced:
                warnings.append("lightningd is catching up with the chain: no new holds or attempts")
            return {
                "version": __version__, "feature_bit": FEATURE_BIT,
                "blockheight": relay.height, "synced": relay.synced,
                "important_plugin": self.important,
                "onion_key": self.announced.onion_key,
                "options": relay.policy.as_json(),
                "held": {s.value: sum(h.state == s for h in relay.held.values()) for s in HoldState},
                "held_msat": relay.active_msat,
                "pays": {s.value: sum(p.status == s for p in self.pays.values()) for s in PayState},
                "trampolines": [{"id": peer, "relay": i.relay, "fee_base_msat": i.fee_base_msat,
                                 "fee_ppm": i.fee_ppm, "max_hold_blocks": i.max_hold_blocks,
                                 "min_held_msat": i.min_held_msat}
                                for peer, i in sorted(self.terms.items())],
                "rods": self.rods.rods_json(),
                "rod_depositors": self.rods.depositors_json(),
                "warnings": warnings,
            }


def _int(value, name: str) -> int:
    try:
        number = msat(value)
    except (TypeError, ValueError):
        raise AsynclnError(f"{name} must be an integer, not {value!r}", Code.BAD_PARAMETER)
    if number < 0:
        raise AsynclnError(f"{name} cannot be negative", Code.BAD_PARAMETER)
    return number


def pay_json(pay: payer.Pay) -> dict:
    return {k: v for k, v in pay.to_json().items() if v is not None}


def held_json(h: hold.HeldPayment) -> dict:
    out = {"payment_hash": h.payment_hash, "state": h.state.value, "next_node": h.record.next_node,
           "incoming_msat": h.incoming.amount_msat, "outgoing_msat": h.record.amount_msat,
           "cltv_expiry": h.incoming.cltv_expiry, "hold_start": h.hold_start,
           "give_up_height": h.give_up_height, "next_poll_height": h.next_poll_height,
           "attempts": h.attempts, "partid": h.partid, "please_poll": h.record.please_poll,
           "channel": h.incoming.channel}
    if h.incoming.peer:
        out["incoming_peer"] = h.incoming.peer
    if h.last_error:
        out["last_error"] = h.last_error
    if h.lost_partids:
        out["lost_partids"] = list(h.lost_partids)
    if h.payer:
        out["payer"] = h.payer
    return out

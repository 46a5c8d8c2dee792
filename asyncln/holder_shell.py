"""The holding node's shell: carries out :class:`hold.Relay`'s actions against lightningd.

htlc_accepted only feeds the core (fast, under ``lock``) and queues the
actions it returns; the worker does the slow I/O (``getroutes``,
``sendonion``, datastore writes, waiting for a reconnected peer's channel)
and feeds each result back, so a plain forward never waits behind a poll
round. An action that raises is reported to the core
(:meth:`hold.Relay.action_failed`) and the rest of the queue goes on.
"""

import gc
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import replace
from typing import List, Optional, assert_never

from pyln.client import RpcError

from . import failures, hold, messages, onion, payer, peel
from .errors import AsynclnError, Code
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
    too_expensive,
)
from .port import CONTINUE, FAIL_TEMPORARY, ROUTE_LAYERS, waiting
from .record import RECORD_TYPE, find_record
from .states import HoldState
from .store import ONION_SAVED
from .wire import DecodeError

# A route hint names no capacity: assume the largest channel before wumbo (0.16 BTC).
PEER_READY_SECONDS = 60    # longest wait for a reconnected peer's channel
# Due payments woken per hold of the lock (bench/bench_core.py: about 10 ms at 100,000 held).
DUE_SLICE = 200


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


def settle_memory() -> None:
    """Keep the cyclic collector off the held records: freeze what lives now.

    The records hold no reference cycles (reference counting frees them), but
    a full collection walks every tracked object: at 100,000 held that was a
    pause of 0.3 to 0.7 s, in the middle of a poll round, for every thread
    (bench/bench_core.py). A round replaces every record it wakes, so the shell
    calls this after recovery and after each slice of a round; a full
    collection first frees the dead cycles (say, an exception's frames)
    instead of freezing them for good. It walks only what the last freeze
    left out (frozen objects are not walked): recovery's records once, then
    what a slice made. The price: a cycle that dies after a freeze is never
    collected (reference counting still frees everything else).
    """
    gc.collect()
    gc.freeze()


@contextmanager
def collector_paused():
    """No cyclic collection while recovery builds records that all live on: its walks
    over them were a third of recovering 100,000 (bench/bench_core.py)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def incoming_from_hook(htlc: dict, onion: dict, peer_id: Optional[str],
                       channel_id: Optional[str]) -> hold.Incoming:
    return hold.Incoming(channel=htlc["short_channel_id"], htlc_id=int(htlc["id"]),
                         amount_msat=msat(htlc["amount_msat"]),
                         cltv_expiry=int(htlc["cltv_expiry"]), peer=peer_id,
                         shared_secret=onion.get("shared_secret"), channel_id=channel_id)


def htlc_key(htlc: dict) -> str:
    """The name lightningd gives the HTLC in this hook call (see hold.Incoming.key)."""
    return f"{htlc['short_channel_id']}/{int(htlc['id'])}"


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


def held_line(h: hold.HeldPayment) -> str:
    """The operator's one line per state change of a held payment (saved, so it happened)."""
    line = (f"held payment {h.payment_hash}: {h.state.value}, {h.incoming.amount_msat} msat in, "
            f"{h.record.amount_msat} msat to {h.record.next_node}, gives up at block {h.give_up_height}")
    return f"{line}, reason: {h.last_error}" if h.last_error else line


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


class HolderShell:
    """The holder's hooks, notifications, actions and views, over the shared :class:`Port`."""

    def _with_channel_id(self, held: hold.HeldPayment) -> hold.HeldPayment:
        """A record stored before channel ids were: its channel's id, if lightningd lists it."""
        channel_id = self.channels.get(held.incoming.channel)
        if held.incoming.channel_id is not None or channel_id is None:
            return held  # unchanged: nothing to write again at startup
        return replace(held, incoming=replace(held.incoming, channel_id=channel_id))

    # --- the worker's side: carrying out the core's actions --------------------

    def submit_actions(self, actions: List[hold.Action]) -> None:
        if actions:
            urgent = any(isinstance(a, (hold.ResolveIncoming, hold.FailIncoming)) for a in actions)
            self.submit(lambda: self.run(actions), urgent)

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
                self.store.put("held", held.payment_hash, self.paged(current))
                with self.lock:  # the state this Persist was for, even if saved later
                    changed = self.logged_states.get(held.payment_hash) != held.state
                    self.logged_states[held.payment_hash] = held.state
                if changed:
                    self.log(held_line(held))
                    if held.state == HoldState.HELD:  # B is away: wake it (bLIP-55 webhooks),
                        # as a job of its own: a failing webhook must not fail this Persist
                        self.submit(lambda peer=held.record.next_node: self.lsps.payment_held(peer))
            case hold.Forget(payment_hash=payment_hash):
                self.store.delete("held", payment_hash)
                with self.lock:
                    had_secrets = self.onion_secrets.pop(payment_hash, None) is not None
                    had_onion = self.onions.pop(payment_hash, None) is not None
                if had_secrets:
                    self.store.delete("secrets", payment_hash)
                if had_onion:
                    self.store.delete("onion", payment_hash)
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

    # --- the holding node's actions --------------------------------------------

    def find_route(self, action: hold.FindRoute) -> List[hold.Action]:
        layer = (self.route_layer(f"asyncln-hints-{action.payment_hash}", action.destination,
                                  action.hints) if action.hints else None)
        try:
            try:
                answer = self.getroutes(action, layer, action.maxfee_msat)
            except RpcError as e:
                if not too_expensive(e):
                    raise
                # A route, only dearer than the payer left us: price it, so that our
                # refusal quotes what it costs (Relay.route_found), and the payer retries.
                answer = self.getroutes(action, layer, action.amount_msat)
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

    def getroutes(self, action: hold.FindRoute, layer: Optional[str], maxfee_msat: int) -> dict:
        return self.rpc.call("getroutes", {
            "source": self.node_id, "destination": action.destination,
            "amount_msat": action.amount_msat, "layers": ROUTE_LAYERS + ([layer] if layer else []),
            "maxfee_msat": maxfee_msat, "final_cltv": action.final_cltv,
            "maxdelay": action.maxdelay, "maxparts": 1})

    def unknown_node(self, node_id: str) -> bool:
        """Neither gossip nor our peers know it: a route to it cannot appear by waiting."""
        if self.rpc.call("listnodes", {"id": node_id}).get("nodes"):
            return False
        return not self.rpc.call("listpeers", {"id": node_id}).get("peers")

    def send_attempt(self, action: hold.SendPay) -> List[hold.Action]:
        """Re-check lightningd's own height just before sending, then send with our partid."""
        with self.lock:
            if not self.relay.may_send(action.payment_hash, action.partid):
                return []
        height, in_sync = self.chain_state()
        if not in_sync:
            with self.lock:  # unsynced now: the worker's tick asks again until it caught up
                actions = (self.relay.send_refused(action.payment_hash, action.partid,
                                                   "lightningd is catching up with bitcoind's tip")
                           + self.relay.chain(height, False, DUE_SLICE))
            self.wake_due()  # the rest of the round in slices, as check_chain's
            return actions
        if action.give_up_height is not None and height >= action.give_up_height:
            with self.lock:  # a block came since the relay planned this: it gives up now
                actions = (self.relay.send_refused(action.payment_hash, action.partid,
                                                   f"at height {height} the give-up height "
                                                   f"{action.give_up_height} has come")
                           + self.relay.chain(height, True, DUE_SLICE))
            self.wake_due()
            return actions
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
        every_pending = [p.get("partid", 0) for p in parts if p.get("status") == "pending"]
        pending = [partid for partid in every_pending if partid not in action.lost_partids]
        if every_pending and not pending and action.payment_hash in outgoing_htlc_hashes(
                self.rpc.call("listpeerchannels")["channels"]):
            pending = every_pending  # a part judged lost has its HTLC after all: never send beside it
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
        self.log(f"forwarding held payment {action.payment_hash} (part {action.partid})", level="debug")
        if result.get("status") == "complete":
            with self.lock:
                return self.relay.attempt_succeeded(action.payment_hash, result["payment_preimage"])
        return []

    def paged(self, held: hold.HeldPayment) -> dict:
        """``held`` as its page keeps it: a version-2 onion goes under its own key, written
        first, and the page says ONION_SAVED. At 100,000 held the onions were 8 times the
        rest, and a restart that listed them took 13.6 s (tests/integration/test_scale.py)."""
        data = held.to_json()
        next_onion = held.record.next_onion
        if next_onion is not None:
            if next_onion != ONION_SAVED and self.onions.get(held.payment_hash) != next_onion:
                self.store.put("onion", held.payment_hash, {"onion": next_onion})
                with self.lock:
                    self.onions[held.payment_hash] = next_onion
            data["record"]["next_onion"] = ONION_SAVED
        return data

    def next_onion(self, action: hold.SendPay) -> bytes:
        """The next holder's onion for ``action``: a restored record's is read from its key."""
        if action.onion != ONION_SAVED:
            return bytes.fromhex(action.onion)
        saved = self.store.get("onion", action.payment_hash)
        if saved is None:  # nothing can be sent; the hold fails back at its give-up height
            raise ValueError(f"the onion of {action.payment_hash} is not in the datastore")
        return bytes.fromhex(saved["onion"])

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
                                          self.next_onion(action))
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

    # --- events from hooks and notifications (dispatch thread: no I/O) ---------

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
        # Its page unreadable: its record could never be saved, so it could never be sent.
        unsaveable = None if self.store.writable("held", payment_hash) else hold.Reject(
            failures.temporary_node_failure(), "its datastore page is unreadable: it cannot be saved")
        with self.lock:
            if isinstance(peeled, hold.Reject):
                verdict, actions = peeled, []
            elif peeled is not None:
                record, offset, refusal = peeled
                verdict, actions = self.relay.admit(payment_hash, incoming, record, offset,
                                                    forward_msat, outgoing_cltv, tip,
                                                    refusal or unsaveable)
            else:
                refusal = unsaveable if self.relay.policy.accept_clear else hold.Reject(
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
            self.submit(lambda: self.lsps.on_block(height))
        self.submit(job, urgent=True)  # deadlines ride on it: ahead of informative work

    def check_chain(self, hint: int = 0) -> None:
        """Feed the relay lightningd's height and sync state, never a stale guess."""
        self._last_chain = time.monotonic()
        height, in_sync = self.chain_state()
        with self.lock:
            actions = self.relay.chain(max(height, hint), in_sync, DUE_SLICE)
        self.run(actions)
        self.wake_due()

    def wake_due(self) -> None:
        """The rest of a poll round, one slice per worker job: the lock is free between
        slices for the hook path, and jobs queued meanwhile (answers, a new block whose
        fail-backs the core puts first) run between them. Each slice's new records are
        frozen (settle_memory) before the next."""
        with self.lock:
            if self._slicing or not self.relay.has_due():
                return
            self._slicing = True

        def next_slice():
            with self.lock:
                self._slicing = False
                actions = self.relay.due_slice(DUE_SLICE)
            self.run(actions)
            settle_memory()
            self.wake_due()
        self.submit(next_slice)

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
        self.lsps.connected(peer)

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
            terms = updated and payer.retry_terms(updated, data.get("erring_index"),
                                                  data.get("raw_message"))
        self.submit_actions(actions)
        if updated:
            self.save_pay(updated, durable=False)
        if terms:
            self.submit(lambda: self.retry_with_terms(updated, terms))

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

    # --- operator views --------------------------------------------------------

    def listheld(self, payment_hash: Optional[str] = None) -> dict:
        with self.lock:
            held = [h for h in self.relay.held.values() if payment_hash in (None, h.payment_hash)]
            return {"held": [held_json(h) for h in sorted(held, key=lambda h: h.hold_start)]}

    def poll(self, payment_hash: Optional[str] = None) -> dict:
        with self.lock:
            actions = self.relay.poll(payment_hash)
        self.submit_actions(actions)
        return self.listheld(payment_hash)

#!/usr/bin/env python3
"""asyncln: Core Lightning plugin entry point (thin glue).

Translates lightningd hooks, notifications and RPC calls into events for
asyncln's pure state machines and carries out the actions they return.
Every node runs the same plugin: as payer, as holding node and as recipient.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pyln.client import Plugin, RpcError, RpcException  # noqa: E402
from pyln.client.plugin import RequestState  # noqa: E402

from asyncln import __version__, failures, hold, messages, payer  # noqa: E402
from asyncln.features import FEATURE_BIT, feature_hex, has_feature  # noqa: E402
from asyncln.policy import Policy  # noqa: E402
from asyncln.record import find_record  # noqa: E402
from asyncln.store import Store  # noqa: E402
from asyncln.wire import DecodeError  # noqa: E402

CONTINUE = {"result": "continue"}
FAIL_TEMPORARY = {"result": "fail", "failure_message": failures.temporary_node_failure()}
ROUTE_LAYERS = ["auto.localchans", "auto.sourcefree"]
# How long to wait for a reconnected peer's channel to be usable.
PEER_READY_SECONDS = 60

# RPC error codes (documented in README.md).
NO_TRAMPOLINE = 2121
TRAMPOLINE_TERMS_UNKNOWN = 2122
INVOICE_UNUSABLE = 2123
PAYMENT_EXISTS = 2124
SEND_FAILED = 2126

# lightningd only lets non-dynamic plugins set feature bits: load asyncln at startup.
plugin = Plugin(dynamic=False, init_features=feature_hex(), node_features=feature_hex(),
                custom_msgs=list(messages.MESSAGE_TYPES))
plugin.add_option("asyncln-poll-blocks", 6, "Re-try a held payment every this many blocks", opt_type="int")
plugin.add_option("asyncln-max-hold-blocks", 1008, "Longest we hold a payment, in blocks", opt_type="int")
plugin.add_option("asyncln-safety-blocks", 144,
                  "Fail a held HTLC back at least this many blocks before it expires", opt_type="int")
plugin.add_option("asyncln-relay", True, "Hold payments for others", opt_type="bool")
plugin.add_option("asyncln-fee-base-msat", 1000, "Base fee for holding a payment", opt_type="int")
plugin.add_option("asyncln-fee-ppm", 1000, "Proportional fee for holding a payment", opt_type="int")
plugin.add_option("asyncln-max-held", 100, "Most payments held at once", opt_type="int")
plugin.add_option("asyncln-max-held-msat", 1_000_000_000, "Most msat held at once", opt_type="int")

LOCK = threading.RLock()


class Node:
    """Everything the shell keeps between calls."""

    def __init__(self, rpc, policy: Policy, node_id: str, height: int):
        self.rpc = rpc
        self.store = Store(rpc)
        self.node_id = node_id
        self.relay = hold.Relay(policy, height, (
            hold.HeldPayment.from_json(v) for v in self.store.load("held").values()))
        self.pays = {k: payer.Pay.from_json(v) for k, v in self.store.load("pay").items()}
        self.terms = {}      # peer id -> the Policy its INFO message announced
        self.pending = {}    # payment hash -> htlc_accepted request awaiting our answer

    # --- carrying out the relay's actions --------------------------------

    def run(self, actions):
        queue = list(actions)
        while queue:
            queue[0:0] = self.execute(queue.pop(0))

    def execute(self, action):
        relay = self.relay
        if isinstance(action, hold.Persist):
            self.store.put("held", action.held.payment_hash, action.held.to_json())
        elif isinstance(action, hold.Forget):
            self.store.delete("held", action.payment_hash)
        elif isinstance(action, hold.FindRoute):
            try:
                route = self.find_route(action)
            except RpcError as e:
                return relay.route_failed(action.payment_hash, _rpc_message(e))
            except (KeyError, IndexError, ValueError) as e:
                return relay.route_failed(action.payment_hash, f"unusable getroutes answer: {e!r}")
            return relay.route_found(action.payment_hash, route)
        elif isinstance(action, hold.SendPay):
            try:
                result = self.rpc.call("sendpay", {
                    "route": list(action.route), "payment_hash": action.payment_hash,
                    "payment_secret": action.payment_secret, "amount_msat": action.total_msat,
                    "label": "asyncln-relay"})
            except Exception as e:
                # Believe lightningd's records, not the error: only when no part
                # of this payment is pending has the attempt really failed.
                message = _rpc_message(e) if isinstance(e, RpcError) else repr(e)
                return self.check_attempt(action.payment_hash, message)
            if result.get("status") == "complete":
                return relay.attempt_succeeded(action.payment_hash, result["payment_preimage"])
            plugin.log(f"forwarding held payment {action.payment_hash}")
        elif isinstance(action, hold.CheckAttempt):
            return self.check_attempt(action.payment_hash, "no attempt survived the restart")
        elif isinstance(action, hold.ResolveIncoming):
            self.answer(action.payment_hash, {"result": "resolve", "payment_key": action.preimage},
                        "resolved with the preimage")
        elif isinstance(action, hold.FailIncoming):
            self.answer(action.payment_hash,
                        {"result": "fail", "failure_message": action.failure_message},
                        f"failed back: {action.reason}")
        elif isinstance(action, hold.NotifyPayer):
            self.send(action.payer, messages.PaymentStatus(
                action.payment_hash, action.state, action.give_up_height,
                action.next_poll_height, action.attempts, action.reason))
        return []

    def find_route(self, action: hold.FindRoute):
        found = self.rpc.call("getroutes", {
            "source": self.node_id, "destination": action.destination,
            "amount_msat": action.amount_msat, "layers": ROUTE_LAYERS,
            "maxfee_msat": action.maxfee_msat, "final_cltv": action.final_cltv,
            "maxdelay": action.maxdelay, "maxparts": 1})
        return [{"id": hop["node_id_out"], "channel": hop["short_channel_id_dir"].split("/")[0],
                 "direction": int(hop["short_channel_id_dir"].split("/")[1]),
                 "amount_msat": hop["amount_out_msat"], "delay": hop["cltv_out"]}
                for hop in found["routes"][0]["path"]]

    def check_attempt(self, payment_hash: str, error: str):
        """Settle an attempt from lightningd's own payment records."""
        parts = self.rpc.call("listsendpays", {"payment_hash": payment_hash})["payments"]
        for part in parts:
            if part["status"] == "complete":
                return self.relay.attempt_succeeded(payment_hash, part["payment_preimage"])
        if any(part["status"] == "pending" for part in parts):
            return []
        return self.relay.attempt_failed(payment_hash, error)

    def answer(self, payment_hash: str, result: dict, what: str):
        request = self.pending.pop(payment_hash, None)
        if request is None:
            plugin.log(f"HTLC {payment_hash} {what}, but lightningd no longer waits on it")
            return
        plugin.log(f"HTLC {payment_hash} {what}")
        request.set_result(result)

    def send(self, peer: str, msg) -> bool:
        try:
            self.rpc.call("sendcustommsg", {"node_id": peer, "msg": messages.encode(msg)})
            return True
        except RpcError as e:
            plugin.log(f"could not message {peer}: {_rpc_message(e)}", level="debug")
            return False

    # --- peers -----------------------------------------------------------

    def asyncln_peers(self):
        return [p["id"] for p in self.rpc.call("listpeers")["peers"]
                if p.get("connected") and has_feature(p.get("features", ""))]

    def greet(self, peer: str):
        """A peer that speaks asyncln connected: learn its terms, say we're back."""
        self.send(peer, messages.QueryInfo())
        self.send(peer, messages.Online())

    def peer_is_back(self, peer: str):
        """Deliver to ``peer`` once its channel with us is usable again."""
        def wait_then_poll():
            deadline = time.monotonic() + PEER_READY_SECONDS
            while time.monotonic() < deadline and not self.channel_ready(peer):
                time.sleep(0.2)
            with LOCK:
                self.run(self.relay.peer_online(peer))
        if any(h.record.next_node == peer and h.state == hold.HELD
               for h in self.relay.held.values()):
            threading.Thread(target=wait_then_poll, daemon=True).start()

    def channel_ready(self, peer: str) -> bool:
        channels = self.rpc.call("listpeerchannels", {"id": peer})["channels"]
        return not channels or any(
            c.get("peer_connected") and c.get("state") == "CHANNELD_NORMAL"
            and c.get("reestablished", True) for c in channels)

    # --- the paying side ---------------------------------------------------

    def save_pay(self, pay: payer.Pay):
        self.pays[pay.payment_hash] = pay
        self.store.put("pay", pay.payment_hash, pay.to_json())

    def reconcile_pays(self):
        """After a restart: settle open payments from lightningd's own records."""
        for pay in list(self.pays.values()):
            if pay.status not in payer.OPEN:
                continue
            parts = self.rpc.call("listsendpays", {"payment_hash": pay.payment_hash})["payments"]
            done = next((p for p in parts if p["status"] == "complete"), None)
            if done:
                self.save_pay(payer.on_success(pay, done["payment_preimage"]))
            elif not any(p["status"] == "pending" for p in parts):
                self.save_pay(payer.on_failure(pay, None, None, "no attempt survived the restart"))

    def choose_trampoline(self, requested, destination):
        if requested:
            if requested == destination:
                raise RpcException("the trampoline is the recipient: pay it directly", NO_TRAMPOLINE)
            info = self.terms.get(requested)
            if info is None:
                if requested in self.asyncln_peers():
                    self.send(requested, messages.QueryInfo())
                    raise RpcException(f"{requested} has not told us its terms yet; asked, retry shortly",
                                       TRAMPOLINE_TERMS_UNKNOWN)
                raise RpcException(f"{requested} is not a connected peer that supports asyncln",
                                   NO_TRAMPOLINE)
            if not info.relay:
                raise RpcException(f"{requested} does not hold payments for others", NO_TRAMPOLINE)
            return requested, info
        connected = set(self.asyncln_peers())
        for peer, info in sorted(self.terms.items()):
            if info.relay and peer in connected and peer != destination:
                return peer, info
        raise RpcException("no connected peer offers asyncln holding; name one with trampoline=",
                           NO_TRAMPOLINE)

    def route_to(self, trampoline, amount_msat, maxfee_msat, final_cltv):
        try:
            found = self.rpc.call("getroutes", {
                "source": self.node_id, "destination": trampoline, "amount_msat": amount_msat,
                "layers": ROUTE_LAYERS, "maxfee_msat": maxfee_msat, "final_cltv": final_cltv,
                "maxparts": 1})
        except RpcError as e:
            raise RpcException(f"no route to the trampoline: {_rpc_message(e)}", SEND_FAILED)
        return found["routes"][0]["path"]


NODE = None


def _rpc_message(e: RpcError) -> str:
    return e.error.get("message", str(e)) if isinstance(e.error, dict) else str(e)


def _payload(kwargs, name):
    """Notification fields, whether lightningd wraps them in their topic or not."""
    return kwargs.get(name) or kwargs


def _msat(value) -> int:
    return int(str(value).removesuffix("msat"))


def _policy(options) -> Policy:
    policy = Policy(
        poll_blocks=int(options["asyncln-poll-blocks"]),
        max_hold_blocks=int(options["asyncln-max-hold-blocks"]),
        safety_blocks=int(options["asyncln-safety-blocks"]),
        relay=bool(options["asyncln-relay"]),
        fee_base_msat=int(options["asyncln-fee-base-msat"]),
        fee_ppm=int(options["asyncln-fee-ppm"]),
        max_held=int(options["asyncln-max-held"]),
        max_held_msat=int(options["asyncln-max-held-msat"]))
    for name in ("poll_blocks", "max_hold_blocks", "safety_blocks"):
        if getattr(policy, name) < 1:
            raise ValueError(f"asyncln-{name.replace('_', '-')} must be at least 1")
    for name in ("fee_base_msat", "fee_ppm", "max_held", "max_held_msat"):
        if getattr(policy, name) < 0:
            raise ValueError(f"asyncln-{name.replace('_', '-')} cannot be negative")
    return policy


@plugin.init()
def init(options, configuration, plugin, **kwargs):
    global NODE
    try:
        policy = _policy(options)
    except ValueError as e:
        return {"disable": str(e)}
    info = plugin.rpc.getinfo()
    with LOCK:
        NODE = Node(plugin.rpc, policy, info["id"], info["blockheight"])
        NODE.reconcile_pays()
        for peer in NODE.asyncln_peers():
            NODE.greet(peer)
    plugin.log(f"asyncln {__version__}: {len(NODE.relay.held)} held, "
               f"{sum(p.status in payer.OPEN for p in NODE.pays.values())} open payments")


# --- hooks ------------------------------------------------------------------

@plugin.async_hook("htlc_accepted")
def on_htlc_accepted(onion, htlc, request, plugin, peer_id=None, **kwargs):
    if "short_channel_id" in onion or "next_node_id" in onion:
        request.set_result(CONTINUE)  # a forward: our record only rides final-hop payloads
        return
    payment_hash = htlc.get("payment_hash")
    try:
        with LOCK:
            decide_htlc(onion, htlc, request, peer_id)
    except Exception as e:
        # lightningd treats an error answer to this hook as fatal: always answer.
        plugin.log(f"internal error on HTLC {payment_hash}: {e!r}", level="warn")
        if request.state == RequestState.PENDING and NODE.pending.get(payment_hash) is not request:
            request.set_result(FAIL_TEMPORARY if _carries_record(onion) else CONTINUE)


def decide_htlc(onion, htlc, request, peer_id):
    incoming = hold.Incoming(channel=htlc["short_channel_id"], htlc_id=int(htlc["id"]),
                             amount_msat=_msat(htlc["amount_msat"]),
                             cltv_expiry=int(htlc["cltv_expiry"]))
    verdict, actions = NODE.relay.htlc_accepted(
        htlc["payment_hash"], incoming, bytes.fromhex(onion["payload"]),
        _msat(onion.get("forward_msat", 0)), int(onion.get("outgoing_cltv_value", 0)), peer_id)
    if isinstance(verdict, hold.Continue):
        request.set_result(CONTINUE)
    elif isinstance(verdict, hold.Reject):
        plugin.log(f"rejecting asyncln HTLC {htlc['payment_hash']}: {verdict.reason}", level="info")
        request.set_result({"result": "fail", "failure_message": verdict.failure_message})
    else:
        NODE.pending[htlc["payment_hash"]] = request
        NODE.run(actions)


def _carries_record(onion) -> bool:
    try:
        return find_record(bytes.fromhex(onion["payload"])) is not None
    except (DecodeError, KeyError, ValueError):
        return False


@plugin.hook("custommsg")
def on_custommsg(peer_id, payload, plugin, **kwargs):
    try:
        handle_custommsg(peer_id, payload)
    except Exception as e:
        # As for htlc_accepted, an error answer would stop lightningd.
        plugin.log(f"internal error on a message from {peer_id}: {e!r}", level="warn")
    return CONTINUE


def handle_custommsg(peer_id, payload):
    try:
        msg = messages.decode(payload)
    except DecodeError as e:
        plugin.log(f"ignoring malformed asyncln message from {peer_id}: {e}", level="info")
        return
    with LOCK:
        if isinstance(msg, messages.QueryInfo):
            NODE.send(peer_id, NODE.relay.policy)
        elif isinstance(msg, Policy):
            NODE.terms[peer_id] = msg
        elif isinstance(msg, messages.Online):
            NODE.peer_is_back(peer_id)
        elif isinstance(msg, messages.PaymentStatus):
            pay = NODE.pays.get(msg.payment_hash)
            updated = pay and payer.on_status(pay, msg, peer_id)
            if updated:
                NODE.save_pay(updated)
            else:
                plugin.log(f"ignoring status for {msg.payment_hash} from {peer_id}", level="info")


# --- notifications ------------------------------------------------------------

@plugin.subscribe("block_added")
def on_block_added(plugin, **kwargs):
    block = kwargs.get("block_added") or kwargs.get("block") or {}
    with LOCK:
        NODE.run(NODE.relay.block(int(block["height"])))


@plugin.subscribe("connect")
def on_connect(plugin, **kwargs):
    peer = _payload(kwargs, "connect")["id"]
    with LOCK:
        if peer in NODE.asyncln_peers():
            NODE.greet(peer)
        NODE.peer_is_back(peer)


@plugin.subscribe("sendpay_success")
def on_sendpay_success(plugin, **kwargs):
    done = _payload(kwargs, "sendpay_success")
    payment_hash, preimage = done["payment_hash"], done["payment_preimage"]
    with LOCK:
        NODE.run(NODE.relay.attempt_succeeded(payment_hash, preimage))
        pay = NODE.pays.get(payment_hash)
        updated = pay and payer.on_success(pay, preimage)
        if updated:
            NODE.save_pay(updated)


@plugin.subscribe("sendpay_failure")
def on_sendpay_failure(plugin, **kwargs):
    failure = _payload(kwargs, "sendpay_failure")
    data = failure.get("data", {})
    payment_hash = data.get("payment_hash")
    message = failure.get("message", "payment failed")
    permanent = data.get("failcode", 0) & failures.PERM
    with LOCK:
        NODE.run(NODE.relay.attempt_failed(payment_hash, message,
                                           data.get("erring_node") if permanent else None))
        pay = NODE.pays.get(payment_hash)
        updated = pay and payer.on_failure(pay, data.get("failcode"), data.get("erring_index"), message)
        if updated:
            NODE.save_pay(updated)


# --- RPC ----------------------------------------------------------------------

@plugin.method("asyncln-pay")
def asyncln_pay(plugin, invstring, trampoline=None, maxfee_msat=None, max_hold_blocks=None):
    """Pay a BOLT11 invoice through a holding node that waits for an offline recipient.

    Returns at once with status `pending`; follow it with asyncln-listpays.
    """
    with LOCK:
        try:
            decoded = NODE.rpc.call("decode", {"string": invstring})
        except RpcError as e:
            raise RpcException(f"cannot decode invstring: {_rpc_message(e)}", INVOICE_UNUSABLE)
        if decoded.get("type") != "bolt11 invoice" or not decoded.get("valid", False):
            raise RpcException("invstring is not a valid BOLT11 invoice", INVOICE_UNUSABLE)
        if "amount_msat" not in decoded or "payment_secret" not in decoded:
            raise RpcException("the invoice needs an amount and a payment secret", INVOICE_UNUSABLE)
        if decoded.get("expiry") is not None and decoded["created_at"] + decoded["expiry"] < time.time():
            raise RpcException("the invoice has expired", INVOICE_UNUSABLE)
        invoice = payer.Invoice(invstring, decoded["payment_hash"], decoded["payment_secret"],
                                decoded["payee"], _msat(decoded["amount_msat"]),
                                int(decoded.get("min_final_cltv_expiry", 18)))
        existing = NODE.pays.get(invoice.payment_hash)
        if existing and existing.status != payer.FAILED:
            raise RpcException(f"this invoice is already {existing.status}", PAYMENT_EXISTS)
        trampoline, info = NODE.choose_trampoline(trampoline, invoice.destination)
        try:
            hold_for = payer.hold_blocks(None if max_hold_blocks is None else int(max_hold_blocks), info)
            maxfee = (payer.default_maxfee(invoice.amount_msat, info) if maxfee_msat is None
                      else _msat(maxfee_msat))
            final_cltv = payer.final_cltv_to_trampoline(invoice, hold_for, info)
            path = NODE.route_to(trampoline, invoice.amount_msat + maxfee, maxfee, final_cltv)
            to_trampoline = path[0]["amount_out_msat"] - path[-1]["amount_out_msat"]
            amount = payer.trampoline_amount(invoice, maxfee, to_trampoline, info)
            if amount != path[-1]["amount_out_msat"]:
                path = NODE.route_to(trampoline, amount, maxfee, final_cltv)
            height = NODE.rpc.getinfo()["blockheight"]
            hops, first_hop, cltv_expiry = payer.plan(invoice, path, height, hold_for)
        except payer.PlanError as e:
            raise RpcException(str(e), e.code)
        onion = NODE.rpc.call("createonion", {"hops": hops, "assocdata": invoice.payment_hash})
        pay = payer.Pay(payment_hash=invoice.payment_hash, bolt11=invstring,
                        destination=invoice.destination, trampoline=trampoline,
                        amount_msat=invoice.amount_msat,
                        amount_sent_msat=first_hop["amount_msat"], cltv_expiry=cltv_expiry,
                        max_hold_blocks=hold_for, created_at=int(time.time()),
                        trampoline_index=len(hops))
        NODE.save_pay(pay)
        try:
            NODE.rpc.call("sendonion", {
                "onion": onion["onion"], "first_hop": first_hop,
                "payment_hash": invoice.payment_hash, "shared_secrets": onion["shared_secrets"],
                "label": "asyncln-pay", "bolt11": invstring,
                "amount_msat": invoice.amount_msat, "destination": invoice.destination})
        except RpcError as e:
            NODE.save_pay(payer.on_failure(pay, None, None, _rpc_message(e)))
            raise RpcException(f"sendonion failed: {_rpc_message(e)}", SEND_FAILED)
        return _pay_json(NODE.pays[invoice.payment_hash])


@plugin.method("asyncln-listpays")
def asyncln_listpays(plugin, payment_hash=None):
    """List payments made with asyncln-pay: pending, held, complete or failed."""
    with LOCK:
        pays = [p for p in NODE.pays.values() if payment_hash in (None, p.payment_hash)]
        return {"pays": [_pay_json(p) for p in sorted(pays, key=lambda p: p.created_at)]}


@plugin.method("asyncln-listheld")
def asyncln_listheld(plugin, payment_hash=None):
    """List HTLCs this node holds (or held) for offline recipients."""
    with LOCK:
        held = [h for h in NODE.relay.held.values() if payment_hash in (None, h.payment_hash)]
        return {"held": [_held_json(h) for h in sorted(held, key=lambda h: h.hold_start)]}


@plugin.method("asyncln-poll")
def asyncln_poll(plugin, payment_hash=None):
    """Re-try delivering one held payment (or all of them) now."""
    with LOCK:
        try:
            NODE.run(NODE.relay.poll(payment_hash))
        except hold.RelayError as e:
            raise RpcException(str(e), e.code)
        return asyncln_listheld(plugin, payment_hash)


@plugin.method("asyncln-cancel")
def asyncln_cancel(plugin, payment_hash):
    """Fail a held payment back to its payer (refused while an attempt is in flight)."""
    with LOCK:
        try:
            NODE.run(NODE.relay.cancel(payment_hash))
        except hold.RelayError as e:
            raise RpcException(str(e), e.code)
        return _held_json(NODE.relay.held[payment_hash])


@plugin.method("asyncln-getinfo")
def asyncln_getinfo(plugin):
    """Show asyncln's version, feature bit, options in force and counters."""
    with LOCK:
        p = NODE.relay.policy
        held_states = [h.state for h in NODE.relay.held.values()]
        pay_states = [pay.status for pay in NODE.pays.values()]
        return {
            "version": __version__, "feature_bit": FEATURE_BIT,
            "blockheight": NODE.relay.height,
            "options": {"poll_blocks": p.poll_blocks, "max_hold_blocks": p.max_hold_blocks,
                        "safety_blocks": p.safety_blocks, "relay": p.relay,
                        "fee_base_msat": p.fee_base_msat, "fee_ppm": p.fee_ppm,
                        "max_held": p.max_held, "max_held_msat": p.max_held_msat},
            "held": {s: held_states.count(s) for s in (hold.HELD, hold.FORWARDING, hold.COMPLETE, hold.FAILED)},
            "pays": {s: pay_states.count(s) for s in (payer.PENDING, payer.HELD, payer.COMPLETE, payer.FAILED)},
            "trampolines": [{"id": peer, "relay": i.relay, "fee_base_msat": i.fee_base_msat,
                             "fee_ppm": i.fee_ppm, "max_hold_blocks": i.max_hold_blocks}
                            for peer, i in sorted(NODE.terms.items())],
        }


def _pay_json(pay: payer.Pay) -> dict:
    return {k: v for k, v in pay.to_json().items() if v is not None}


def _held_json(h: hold.HeldPayment) -> dict:
    out = {"payment_hash": h.payment_hash, "state": h.state, "next_node": h.record.next_node,
           "incoming_msat": h.incoming.amount_msat, "outgoing_msat": h.record.amount_msat,
           "cltv_expiry": h.incoming.cltv_expiry, "hold_start": h.hold_start,
           "give_up_height": h.give_up_height, "next_poll_height": h.next_poll_height,
           "attempts": h.attempts, "please_poll": h.record.please_poll}
    if h.last_error:
        out["last_error"] = h.last_error
    if h.payer:
        out["payer"] = h.payer
    return out


if __name__ == "__main__":
    plugin.run()

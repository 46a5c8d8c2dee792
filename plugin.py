#!/usr/bin/env python3
"""asyncln: Core Lightning plugin entry point (registration and translation only).

Hooks, notifications and RPC calls are handed to ``asyncln.node.Node``,
which feeds the pure state machines and carries out their actions on a
worker thread. Every node runs the same plugin: as payer, as holding node
and as recipient.
"""

import functools
import inspect
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pyln.client import Plugin, RpcException  # noqa: E402
from pyln.client.plugin import RequestState  # noqa: E402

from asyncln import __version__, failures, messages, recipient, rod  # noqa: E402
from asyncln.errors import AsynclnError  # noqa: E402
from asyncln.features import feature_hex  # noqa: E402
from asyncln.node import CONTINUE, Node, carries_record  # noqa: E402
from asyncln.policy import DEFAULTS, OPTIONS, Policy  # noqa: E402
from asyncln.states import PAY_OPEN  # noqa: E402

FAIL_TEMPORARY = {"result": "fail", "failure_message": failures.temporary_node_failure()}
OPTION_HELP = {
    "asyncln-poll-blocks": "Re-try a held payment every this many blocks",
    "asyncln-max-hold-blocks": "Longest we hold a payment, in blocks",
    "asyncln-safety-blocks": "Fail a held HTLC back at least this many blocks before it expires",
    "asyncln-spare-blocks": "CLTV blocks given to the next node above its final CLTV, "
                            "when the incoming HTLC leaves room",
    "asyncln-fee-base-msat": "Base fee for holding a payment",
    "asyncln-fee-ppm": "Proportional fee for holding a payment",
    "asyncln-max-held": "Most payments held at once",
    "asyncln-max-held-msat": "Most msat held at once",
    "asyncln-min-held-msat": "Least amount we hold for a recipient",
    "asyncln-max-held-per-peer": "Most payments held at once for one incoming peer",
    "asyncln-max-held-msat-per-peer": "Most msat held at once for one incoming peer",
    "asyncln-rod-max-invoices": "As a Rod: most invoices kept for one depositor",
    "asyncln-rod-max-bytes": "As a Rod: most bytes of invoices kept for one depositor",
    "asyncln-rod-min-expiry": "As a Rod: least seconds a deposited invoice must stay valid",
    "asyncln-rod-fetches-per-hour": "As a Rod: most invoice requests per requester per hour",
    "asyncln-rod-max-notes": "As a Rod: most notes waiting for one recipient",
    "asyncln-rod-pool": "Presigned invoices to keep deposited at each of my Rods",
    "asyncln-rod-invoice-expiry": "Seconds each presigned invoice I deposit stays valid",
}

# lightningd only lets non-dynamic plugins set feature bits: load asyncln at startup.
plugin = Plugin(dynamic=False, init_features=feature_hex(), node_features=feature_hex(),
                custom_msgs=list(messages.MESSAGE_TYPES))
for _name, (_field, _) in OPTIONS.items():
    plugin.add_option(_name, getattr(DEFAULTS, _field), OPTION_HELP[_name], opt_type="int")
plugin.add_option("asyncln-relay", True, "Hold payments for others", opt_type="bool")
plugin.add_option("asyncln-accept-clear", True,
                  "Hold payments whose record is in clear (version 1), not in an asyncln onion",
                  opt_type="bool")
_LIMITS = rod.RodLimits()
for _name, (_field, _) in rod.OPTIONS.items():
    plugin.add_option(_name, getattr(_LIMITS, _field), OPTION_HELP[_name], opt_type="int")
plugin.add_option(rod.DEPOSITORS_OPTION, _LIMITS.depositors,
                  "As a Rod: who may deposit: peers, any, none, or comma-separated node ids")
_RECIPIENT = recipient.RecipientConfig()
plugin.add_option("asyncln-rod", "", "My Rods, which serve my invoices while I am offline: "
                  "comma-separated node_id[@host:port]")
for _name, (_field, _) in recipient.OPTIONS.items():
    plugin.add_option(_name, getattr(_RECIPIENT, _field), OPTION_HELP[_name], opt_type="int")

NODE: Node = None


@plugin.init()
def init(options, configuration, plugin, **kwargs):
    global NODE
    try:
        policy, refused = Policy.from_options(options), None
        limits = rod.RodLimits.from_options(options)
        config = recipient.RecipientConfig.from_options(options)
    except ValueError as e:
        policy, limits, config, refused = DEFAULTS, _LIMITS, _RECIPIENT, str(e)
    node = Node(plugin.rpc, plugin.log, policy, refused, os.path.abspath(__file__),
                limits, config)
    if refused and not node.has_open_records():
        return {"disable": refused}
    if refused:
        # Never disable with open records: lightningd would fail the held HTLCs.
        plugin.log(f"options refused ({refused}); serving open records only", level="warn")
    NODE = node
    node.start()
    plugin.log(f"asyncln {__version__}: {len(node.relay.held)} held, "
               f"{sum(p.status in PAY_OPEN for p in node.pays.values())} open payments")


# --- hooks (lightningd treats an error answer to either as fatal: always answer) ---

@plugin.async_hook("htlc_accepted")
def on_htlc_accepted(onion, htlc, request, plugin, peer_id=None, **kwargs):
    if "short_channel_id" in onion or "next_node_id" in onion:
        request.set_result(CONTINUE)  # a forward: our record only rides final-hop payloads
        return
    try:
        NODE.htlc_accepted(onion, htlc, peer_id, request)
    except Exception as e:
        plugin.log(f"internal error on HTLC {htlc.get('payment_hash')}: {e!r}", level="warn")
        if request.state == RequestState.PENDING and not NODE.is_pending(request):
            request.set_result(FAIL_TEMPORARY if carries_record(onion) else CONTINUE)


@plugin.hook("custommsg", filters=list(messages.MESSAGE_TYPES))
def on_custommsg(peer_id, payload, plugin, **kwargs):
    try:
        NODE.custom_message(peer_id, payload)
    except Exception as e:
        plugin.log(f"internal error on a message from {peer_id}: {e!r}", level="warn")
    return CONTINUE


# --- notifications --------------------------------------------------------------

def _payload(kwargs, name):
    """Notification fields, whether lightningd wraps them in their topic or not."""
    return kwargs.get(name) or kwargs


@plugin.subscribe("block_added")
def on_block_added(plugin, **kwargs):
    NODE.block(int(_payload(kwargs, "block_added").get("height") or kwargs["block"]["height"]))


@plugin.subscribe("connect")
def on_connect(plugin, **kwargs):
    NODE.peer_connected(_payload(kwargs, "connect")["id"])


@plugin.subscribe("sendpay_success")
def on_sendpay_success(plugin, **kwargs):
    done = _payload(kwargs, "sendpay_success")
    NODE.attempt_succeeded(done["payment_hash"], done["payment_preimage"])


@plugin.subscribe("sendpay_failure")
def on_sendpay_failure(plugin, **kwargs):
    NODE.attempt_failed(_payload(kwargs, "sendpay_failure"))


# --- RPC --------------------------------------------------------------------------

def rpc(name, waits=False):
    """Register an RPC method; AsynclnError becomes an RPC error with its code.

    A method that ``waits`` for a peer's answer runs on its own thread, so
    that lightningd's hooks (and that very answer) are never kept waiting.
    """
    def register(f):
        def call(args, kwargs):
            try:
                return f(*args, **kwargs)
            except AsynclnError as e:
                raise RpcException(str(e), int(e.code))

        if waits:
            def method(plugin, request, *args, **kwargs):
                def work():
                    try:
                        request.set_result(call((plugin,) + args, kwargs))
                    except Exception as e:
                        request.set_exception(e)
                threading.Thread(target=work, name=name, daemon=True).start()
        else:
            def method(*args, **kwargs):
                return call(args, kwargs)
        functools.update_wrapper(method, f)
        params = list(inspect.signature(f).parameters.values())
        if waits:  # pyln hands background methods their request after `plugin`
            params.insert(1, inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD))
        method.__signature__ = inspect.Signature(params)  # pyln builds `usage` from it
        plugin.add_method(name, method, background=waits, description=f.__doc__)
        return f
    return register


@rpc("asyncln-pay", waits=True)
def asyncln_pay(plugin, invstring, trampoline=None, maxfee_msat=None, max_hold_blocks=None,
                amount_msat=None, note=None, clear=False):
    """Pay a BOLT11 invoice or a payment code through a holding node that waits for an offline recipient.

    A code (aln1...) needs amount_msat: an invoice is fetched from the code's Rod
    first, and an optional note is encrypted to the recipient. Returns once the
    HTLC is sent, with status `pending`; follow it with asyncln-listpays. The
    instructions travel in an asyncln onion when the holder announced a key;
    clear=true sends them as a clear record (version 1) instead.
    """
    return NODE.pay(invstring, trampoline, maxfee_msat, max_hold_blocks, amount_msat, note, clear)


@rpc("asyncln-fetchinvoice", waits=True)
def asyncln_fetchinvoice(plugin, code, amount_msat, note=None):
    """Fetch one presigned invoice of an offline recipient from the Rod its payment code names."""
    return NODE.fetchinvoice(code, amount_msat, note)


@rpc("asyncln-code")
def asyncln_code(plugin, private=False):
    """My payment code: my node id (or, private=true, only a payee key), my Rods and my note key, signed."""
    return NODE.rods.code(str(private).lower() in ("true", "1"))


@rpc("asyncln-deposit", waits=True)
def asyncln_deposit(plugin, amount_msat=None, count=1, rod=None):
    """Deposit presigned invoices at my Rod now (fixed-amount with amount_msat)."""
    return NODE.deposit(amount_msat, count, rod)


@rpc("asyncln-listnotes")
def asyncln_listnotes(plugin):
    """Notes payers left for me at my Rod, decrypted, with their payment hash."""
    return NODE.rods.listnotes()


@rpc("asyncln-listpays")
def asyncln_listpays(plugin, payment_hash=None):
    """List payments made with asyncln-pay: pending, held, complete or failed."""
    return NODE.listpays(payment_hash)


@rpc("asyncln-listheld")
def asyncln_listheld(plugin, payment_hash=None):
    """List HTLCs this node holds (or held) for offline recipients."""
    return NODE.listheld(payment_hash)


@rpc("asyncln-poll")
def asyncln_poll(plugin, payment_hash=None):
    """Re-try delivering one held payment (or all of them) now."""
    return NODE.poll(payment_hash)


@rpc("asyncln-cancel", waits=True)
def asyncln_cancel(plugin, payment_hash):
    """Fail a held payment back (holding node), or ask our holding node to (payer).

    Refused while an outgoing attempt is in flight.
    """
    return NODE.cancel(payment_hash)


@rpc("asyncln-getinfo")
def asyncln_getinfo(plugin):
    """Show asyncln's version, feature bit, options in force, counters and warnings."""
    return NODE.getinfo()


if __name__ == "__main__":
    plugin.run()

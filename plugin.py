#!/usr/bin/env python3
"""asyncln: Core Lightning plugin entry point (registration and translation only).

Hooks, notifications and RPC calls are handed to ``asyncln.node.Node``,
which feeds the pure state machines and carries out their actions on a
worker thread. Every node runs the same plugin: as payer, as holding node
and as recipient.
"""

import inspect
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pyln.client import Plugin  # noqa: E402
from pyln.client.plugin import Method, RequestState  # noqa: E402

from asyncln import __version__, lsps0, lsps5, messages, params, recipient, rod  # noqa: E402
from asyncln.errors import AsynclnError, Code  # noqa: E402
from asyncln.features import feature_hex  # noqa: E402
from asyncln.lsps_shell import WebhookConfig  # noqa: E402
from asyncln.node import Node  # noqa: E402
from asyncln.policy import DEFAULTS, OPTIONS, Policy  # noqa: E402
from asyncln.port import CONTINUE, FAIL_TEMPORARY  # noqa: E402
from asyncln.states import PAY_OPEN  # noqa: E402

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
    "asyncln-rod-max-bytes": "As a Rod: most bytes of one depositor's record (served hashes too)",
    "asyncln-rod-min-expiry": "As a Rod: least seconds a deposited invoice must stay valid",
    "asyncln-rod-max-expiry": "As a Rod: most seconds a deposited invoice may stay valid",
    "asyncln-rod-fetches-per-hour": "As a Rod: most invoice requests per requester per hour",
    "asyncln-rod-max-notes": "As a Rod: most notes waiting for one recipient",
    "asyncln-rod-pool": "Presigned invoices to keep deposited at each of my Rods",
    "asyncln-rod-invoice-expiry": "Seconds each presigned invoice I deposit stays valid",
}

# asyncln's messages, and LSPS0's (bLIP-50), which carry bLIP-55 webhook requests.
CUSTOM_MSGS = list(messages.MESSAGE_TYPES) + [lsps0.MESSAGE_TYPE]
# lightningd only lets non-dynamic plugins set feature bits: load asyncln at startup.
plugin = Plugin(dynamic=False, init_features=feature_hex(), node_features=feature_hex(),
                custom_msgs=CUSTOM_MSGS)
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
plugin.add_option("asyncln-lsps5-service", True,
                  "Serve bLIP-55 (LSPS5) webhook registrations to channel peers, and POST to their "
                  "webhooks while I hold payments for them", opt_type="bool")
plugin.add_option("asyncln-webhook-hsm-secret", False,
                  "Sign webhook notifications with the node key read from lightningd's hsm_secret "
                  "(unencrypted, no passphrase): signmessage's signatures do not verify as bLIP-55 wants",
                  opt_type="bool")
plugin.add_option("asyncln-webhook-allow-http-loopback", False,
                  "Developers only: accept bLIP-55 webhooks on loopback (127.0.0.1, ::1, localhost), "
                  "over http too", opt_type="bool")

NODE: Node = None


def log(message: str, level: str = "info") -> None:
    """lightningd tags lines with the file it started (plugin.py, or reckless's asyncln.py): name asyncln."""
    plugin.log(f"asyncln: {message}", level=level)


def started_as() -> list:
    """plugin.py, and the file lightningd executed (reckless's wrapper runs plugin.py from another)."""
    return [os.path.abspath(__file__)] + [os.path.abspath(a) for a in sys.orig_argv[1:] if os.path.isfile(a)]


def webhook_config(options: dict, configuration: dict) -> WebhookConfig:
    """configuration's lightning-dir is the network's directory, where hsm_secret is."""
    hsm_secret = (os.path.join(configuration["lightning-dir"], "hsm_secret")
                  if options.get("asyncln-webhook-hsm-secret") else None)
    return WebhookConfig(bool(options.get("asyncln-lsps5-service", True)),
                         bool(options.get("asyncln-webhook-allow-http-loopback")), hsm_secret)


@plugin.init()
def init(options, configuration, plugin, **kwargs):
    global NODE
    try:
        policy, refused = Policy.from_options(options), None
        limits = rod.RodLimits.from_options(options)
        config = recipient.RecipientConfig.from_options(options)
    except ValueError as e:
        policy, limits, config, refused = DEFAULTS, _LIMITS, _RECIPIENT, str(e)
    node = Node(plugin.rpc, log, policy, refused, started_as(),
                limits, config, webhook_config(options, configuration))
    if refused and not node.has_open_records():
        return {"disable": refused}
    if refused:
        # Never disable with open records: lightningd would fail the held HTLCs.
        log(f"options refused ({refused}); serving open records only", level="warn")
    NODE = node
    node.start()
    log(f"version {__version__} started: {len(node.relay.held)} held, "
        f"{sum(p.status in PAY_OPEN for p in node.pays.values())} open payments")


# --- hooks (lightningd treats an error answer to either as fatal: always answer) ---

@plugin.async_hook("htlc_accepted")
def on_htlc_accepted(onion, htlc, request, plugin, peer_id=None, **kwargs):
    if "short_channel_id" in onion or "next_node_id" in onion:
        request.set_result(CONTINUE)  # a forward: our record only rides final-hop payloads
        return
    try:
        NODE.htlc_accepted(onion, htlc, peer_id, request)  # owes or fails on its own errors
    except Exception as e:  # the last resort: only an HTLC with no record may be failed
        log(f"internal error on HTLC {htlc.get('payment_hash')}: {e!r}", level="broken")
        if request.state == RequestState.PENDING and NODE.may_fail(htlc, request):
            request.set_result(FAIL_TEMPORARY)


@plugin.hook("custommsg", filters=CUSTOM_MSGS)
def on_custommsg(peer_id, payload, plugin, **kwargs):
    """Always ``continue``: another plugin (e.g. CLN's LSPS plugin) may want the same message."""
    try:
        NODE.custom_message(peer_id, payload)
    except Exception as e:
        log(f"internal error on a message from {peer_id}: {e!r}", level="warn")
    return CONTINUE


# --- notifications --------------------------------------------------------------

def _payload(kwargs, name):
    """Notification fields, whether lightningd wraps them in their topic or not."""
    return kwargs.get(name) or kwargs


@plugin.subscribe("block_added")
def on_block_added(plugin, **kwargs):
    NODE.block(int(_payload(kwargs, "block_added").get("height") or kwargs["block"]["height"]))


@plugin.subscribe("channel_state_changed")
def on_channel_state_changed(plugin, **kwargs):
    changed = _payload(kwargs, "channel_state_changed")
    NODE.channel_changed()
    NODE.rods.channel_changed(changed.get("peer_id", ""), changed.get("new_state", ""))


@plugin.subscribe("connect")
def on_connect(plugin, **kwargs):
    NODE.peer_connected(_payload(kwargs, "connect")["id"])


@plugin.subscribe("disconnect")
def on_disconnect(plugin, **kwargs):
    NODE.lsps.disconnected(_payload(kwargs, "disconnect")["id"])


@plugin.subscribe("sendpay_success")
def on_sendpay_success(plugin, **kwargs):
    done = _payload(kwargs, "sendpay_success")
    NODE.attempt_succeeded(done["payment_hash"], done["payment_preimage"])


@plugin.subscribe("sendpay_failure")
def on_sendpay_failure(plugin, **kwargs):
    NODE.attempt_failed(_payload(kwargs, "sendpay_failure"))


# --- RPC --------------------------------------------------------------------------

def rpc(name, waits=False, **kinds):
    """Register an RPC method whose parameters are checked for form (asyncln.params) first.

    ``kinds`` names each parameter's checker. An AsynclnError becomes an RPC
    error with its code and message and no traceback (pyln would attach and
    log one): a user's mistake is not a crash. A method that ``waits`` for a
    peer's answer runs on its own thread, so that lightningd's hooks (and
    that very answer) are never kept waiting.
    """
    def register(f):
        signature = inspect.signature(f)

        def answer(request, args, kwargs):
            try:
                bound = signature.bind(*args, **kwargs).arguments
                checked = params.check(kinds, {k: v for k, v in bound.items() if k != "plugin"})
                request.set_result(f(bound["plugin"], **checked))
            except TypeError as e:   # a missing or unknown parameter, as bind() says
                refuse(request, AsynclnError(str(e), Code.INVALID_PARAMS))
            except AsynclnError as e:
                refuse(request, e)
            except Exception as e:
                log(f"internal error in {name}: {e!r}", level="broken")
                refuse(request, AsynclnError(f"internal error: {e!r}", Code.INTERNAL))

        def method(plugin, request, *args, **kwargs):
            if waits:
                threading.Thread(target=answer, args=(request, (plugin,) + args, kwargs),
                                 name=name, daemon=True).start()
            else:
                answer(request, (plugin,) + args, kwargs)
        # pyln binds parameters to ``method``'s signature and answers a mismatch itself,
        # with -32600 and a traceback: take them all, bind in ``answer``, and show f's usage.
        plugin.add_method(name, method, background=True, description=f.__doc__)
        usage = Method(name, f, description=f.__doc__).get_usage()
        plugin.methods[name].get_usage = lambda: usage
        return f
    return register


def refuse(request, error: AsynclnError) -> None:
    """An error answer with code and message only: pyln's set_exception adds a ~30-line traceback."""
    request._write_result({"jsonrpc": "2.0", "id": request.id,
                           "error": {"code": int(error.code), "message": str(error)}})
    request.state = RequestState.FAILED


@rpc("asyncln-pay", waits=True, invstring=params.text, trampoline=params.node_id,
     maxfee_msat=params.amount, max_hold_blocks=params.integer, amount_msat=params.amount,
     note=params.text, clear=params.boolean)
def asyncln_pay(plugin, invstring, trampoline=None, maxfee_msat=None, max_hold_blocks=None,
                amount_msat=None, note=None, clear=False):
    """Pay a BOLT11 invoice or a payment code through a holding node that waits for an offline recipient.

    A code (aln1...) needs amount_msat: an invoice is fetched from the code's Rod
    first, and an optional note is encrypted to the recipient. Returns once the
    HTLC is sent, with status `pending`; follow it with asyncln-listpays. The
    instructions travel in an asyncln onion when the holder announced a key;
    clear=true sends them as a clear record (version 1) instead. The holder gets
    its announced fee and an estimate of its route's fee plus a small margin;
    maxfee_msat (default 5000msat or 1%) only caps the total. A holder's refusal
    with new terms (NODE|26) is paid again by itself, within maxfee_msat.
    """
    return NODE.pay(invstring, trampoline, maxfee_msat, max_hold_blocks, amount_msat, note, clear)


@rpc("asyncln-fetchinvoice", waits=True, code=params.text, amount_msat=params.amount, note=params.text)
def asyncln_fetchinvoice(plugin, code, amount_msat, note=None):
    """Fetch one presigned invoice of an offline recipient from the Rod its payment code names."""
    return NODE.fetchinvoice(code, amount_msat, note)


@rpc("asyncln-code", private=params.boolean)
def asyncln_code(plugin, private=False):
    """My payment code: my node id (or, private=true, only a payee key), my Rods and my note key, signed."""
    return NODE.rods.code(private)


@rpc("asyncln-deposit", waits=True, amount_msat=params.amount, count=params.integer, rod=params.node_id)
def asyncln_deposit(plugin, amount_msat=None, count=1, rod=None):
    """Deposit presigned invoices at my Rod now (fixed-amount with amount_msat)."""
    return NODE.deposit(amount_msat, count, rod)


@rpc("asyncln-listnotes")
def asyncln_listnotes(plugin):
    """Notes payers left for me at my Rod, decrypted, with their payment hash."""
    return NODE.rods.listnotes()


@rpc("asyncln-listpays", payment_hash=params.payment_hash)
def asyncln_listpays(plugin, payment_hash=None):
    """List payments made with asyncln-pay: pending, held, complete or failed."""
    return NODE.listpays(payment_hash)


@rpc("asyncln-listheld", payment_hash=params.payment_hash)
def asyncln_listheld(plugin, payment_hash=None):
    """List HTLCs this node holds (or held) for offline recipients."""
    return NODE.listheld(payment_hash)


@rpc("asyncln-poll", payment_hash=params.payment_hash)
def asyncln_poll(plugin, payment_hash=None):
    """Re-try delivering one held payment (or all of them) now."""
    return NODE.poll(payment_hash)


@rpc("asyncln-cancel", waits=True, payment_hash=params.payment_hash)
def asyncln_cancel(plugin, payment_hash):
    """Fail a held payment back (holding node), or ask our holding node to (payer).

    Refused while an outgoing attempt is in flight.
    """
    return NODE.cancel(payment_hash)


@rpc("asyncln-webhook", waits=True, peer=params.node_id, url=params.text, app_name=params.text)
def asyncln_webhook(plugin, peer, url, app_name="asyncln"):
    """Register (or replace) a bLIP-55 webhook at my LSP ``peer``: it POSTs there to wake me.

    Sends lsps5.set_webhook and waits for the answer: num_webhooks, max_webhooks,
    no_change. The LSP's refusal (e.g. 502: not https) is error 2141.
    """
    return NODE.lsps.call(peer, lsps5.SET_WEBHOOK, {"app_name": app_name, "webhook": url})


@rpc("asyncln-listwebhooks", waits=True, peer=params.node_id)
def asyncln_listwebhooks(plugin, peer):
    """The app names of my webhooks at my LSP ``peer`` (bLIP-55 lsps5.list_webhooks)."""
    return NODE.lsps.call(peer, lsps5.LIST_WEBHOOKS, {})


@rpc("asyncln-delwebhook", waits=True, peer=params.node_id, app_name=params.text)
def asyncln_delwebhook(plugin, peer, app_name):
    """Remove my webhook ``app_name`` at my LSP ``peer`` (bLIP-55 lsps5.remove_webhook)."""
    return NODE.lsps.call(peer, lsps5.REMOVE_WEBHOOK, {"app_name": app_name})


@rpc("asyncln-getinfo")
def asyncln_getinfo(plugin):
    """Show asyncln's version, feature bit, options in force, counters and warnings."""
    return NODE.getinfo()


if __name__ == "__main__":
    plugin.run()

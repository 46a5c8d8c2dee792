#!/usr/bin/env python3
"""Test helper for a dishonest holder: deliver less to the recipient than the payer asked.

Through lightningd's ``rpc_command`` hook it rewrites the holder's own
delivery, whichever way asyncln sends it: ``sendpay`` (its route's
amounts and the total), or ``createonion`` (the recipient's final payload:
``amt_to_forward`` and ``payment_data``'s total, and every forwarding
hop's amount) followed by ``sendonion`` (the first hop's amount). The onion
stays consistent, so only the recipient's own check can notice. The
holder keeps what it shaved. ``shave-set msat=N`` sets the amount (0: honest).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))

from pyln.client import Plugin  # noqa: E402

from asyncln.lightningd import msat  # noqa: E402
from asyncln.wire import (  # noqa: E402
    decode_bigsize,
    decode_tlv_stream,
    decode_tu,
    encode_bigsize,
    encode_tlv_stream,
    encode_tu,
)

plugin = Plugin()
state = {"shave": 0, "shaved": set()}
PAYMENT_DATA, HOLDER_TLVS = 8, (66101, 66103)


@plugin.method("shave-set")
def shave_set(plugin, msat):
    """Shave this many msat off every delivery to a recipient from now on (0: honest)."""
    state["shave"] = int(msat)
    return {"shave": state["shave"]}


@plugin.method("shave-count")
def shave_count(plugin):
    """How many deliveries were shaved."""
    return {"shaved": len(state["shaved"])}


def _fields(payload_hex):
    raw = bytes.fromhex(payload_hex)
    length, offset = decode_bigsize(raw, 0)
    return decode_tlv_stream(raw[offset:offset + length], range(0, 2 ** 20, 2))


def _payload(fields):
    stream = encode_tlv_stream(fields)
    return (encode_bigsize(len(stream)) + stream).hex()


def _less(fields, tlv, shave, prefix=b""):
    value = fields[tlv][len(prefix):]
    fields[tlv] = prefix + encode_tu(decode_tu(value, 8) - shave)


def _createonion(params, shave):
    hops = params["hops"]
    last = _fields(hops[-1]["payload"])
    if PAYMENT_DATA not in last or any(t in last for t in HOLDER_TLVS):
        return False  # not a delivery to a recipient
    for hop in hops:
        fields = _fields(hop["payload"])
        _less(fields, 2, shave)
        if PAYMENT_DATA in fields:
            _less(fields, PAYMENT_DATA, shave, fields[PAYMENT_DATA][:32])
        hop["payload"] = _payload(fields)
    state["shaved"].add(params["assocdata"])
    return True


@plugin.hook("rpc_command", filters=["sendpay", "createonion", "sendonion"])
def on_rpc_command(plugin, rpc_command, **kwargs):
    shave, params = state["shave"], rpc_command.get("params")
    if not shave or not isinstance(params, dict):
        return {"result": "continue"}
    method = rpc_command["method"]
    if method == "sendpay" and params.get("label") == "asyncln-relay":
        for hop in params["route"]:
            hop["amount_msat"] = msat(hop["amount_msat"]) - shave
        params["amount_msat"] = msat(params["amount_msat"]) - shave
        state["shaved"].add(params["payment_hash"])
    elif method == "createonion":
        if not _createonion(params, shave):
            return {"result": "continue"}
    elif method == "sendonion" and params.get("payment_hash") in state["shaved"]:
        params["first_hop"]["amount_msat"] = msat(params["first_hop"]["amount_msat"]) - shave
        if "amount_msat" in params:
            params["amount_msat"] = msat(params["amount_msat"]) - shave
    else:
        return {"result": "continue"}
    plugin.log(f"shaved {shave}msat off {method}")
    return {"replace": {"jsonrpc": "2.0", "id": rpc_command["id"], "method": method,
                        "params": params}}


plugin.run()

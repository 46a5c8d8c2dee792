"""Building blocks for the integration scenarios."""

import hashlib
import json
from pathlib import Path

import pytest
from pyln.client import RpcError
from pyln.testing.utils import wait_for

HOLD_OPTS = {"asyncln-poll-blocks": 6, "asyncln-safety-blocks": 6,
             "asyncln-max-hold-blocks": 30, "may_reconnect": True}


def say(text):
    """Narrate a step; `make demo` shows these lines (pytest -s)."""
    print(f"[asyncln demo] {text}", flush=True)


def opts(plugin_path, **extra):
    return {**HOLD_OPTS, "plugin": plugin_path, **extra}


def call(node, method, **params):
    return node.rpc.call(method, params)


def wait_for_terms(payer, trampoline):
    wait_for(lambda: any(t["id"] == trampoline.info["id"]
                         for t in call(payer, "asyncln-getinfo")["trampolines"]))


def pay_status(node, payment_hash):
    return call(node, "asyncln-listpays", payment_hash=payment_hash)["pays"][0]


def held(node, payment_hash):
    found = call(node, "asyncln-listheld", payment_hash=payment_hash)["held"]
    return found[0] if found else None


def wait_status(node, payment_hash, status):
    wait_for(lambda: pay_status(node, payment_hash)["status"] == status)
    return pay_status(node, payment_hash)


def assert_proof_of_payment(pay):
    assert hashlib.sha256(bytes.fromhex(pay["payment_preimage"])).hexdigest() == pay["payment_hash"]


def held_for_payer(payer, trampoline, recipient, amount_msat=100_000, label="held", **pay_args):
    """Recipient goes offline, payer pays through the trampoline, wait until held."""
    inv = recipient.rpc.invoice(amount_msat, label, "asyncln test")
    wait_for_terms(payer, trampoline)
    recipient.stop()
    call(payer, "asyncln-pay", invstring=inv["bolt11"], trampoline=trampoline.info["id"], **pay_args)
    wait_for(lambda: (held(trampoline, inv["payment_hash"]) or {}).get("state") == "held")
    wait_status(payer, inv["payment_hash"], "held")
    return inv


def channel_with(node, peer):
    return node.rpc.listpeerchannels(peer.info["id"])["channels"][0]


def send_failing(a, s, payload_hex, amount_msat, delay, payment_hash, meanwhile=lambda: None):
    """One HTLC to S with a hand-made final payload, which S must refuse: (failcode, raw_message)."""
    onion = a.rpc.createonion(hops=[{"pubkey": s.info["id"], "payload": payload_hex}],
                              assocdata=payment_hash)
    a.rpc.sendonion(onion=onion["onion"], payment_hash=payment_hash,
                    first_hop={"id": s.info["id"], "amount_msat": amount_msat, "delay": delay},
                    shared_secrets=onion["shared_secrets"])
    meanwhile()
    with pytest.raises(RpcError) as failed:
        a.rpc.waitsendpay(payment_hash, timeout=30)
    return failed.value.error["data"]["failcode"], failed.value.error["data"].get("raw_message")


def drop_torn_plugin_io(node):
    """pyln-testing saves every hook and notification lightningd exchanges with a plugin
    (``plugin-io``) and parses them all at teardown; a kill -9 can leave the file being
    written empty. That is the kill's doing, not a plugin's malformed JSON."""
    for f in (Path(node.daemon.lightning_dir) / "plugin-io").glob("*"):
        try:
            json.loads(f.read_text())
        except ValueError:
            f.unlink()

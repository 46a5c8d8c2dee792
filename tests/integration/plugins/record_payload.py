#!/usr/bin/env python3
"""Test helper for the recipient: remember every final-hop payload that reaches the hook."""

from pyln.client import Plugin

plugin = Plugin()
payloads = []


@plugin.hook("htlc_accepted")
def on_htlc_accepted(onion, htlc, plugin, **kwargs):
    payloads.append({"payment_hash": htlc["payment_hash"], "payload": onion["payload"]})
    return {"result": "continue"}


@plugin.method("recorded-payloads")
def recorded(plugin):
    """Every payload seen, oldest first."""
    return {"payloads": payloads}


plugin.run()

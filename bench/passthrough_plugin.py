#!/usr/bin/env python3
"""The baseline for `make bench`: a pyln plugin whose htlc_accepted hook only continues."""

from pyln.client import Plugin

plugin = Plugin()


@plugin.hook("htlc_accepted")
def on_htlc_accepted(onion, htlc, plugin, **kwargs):
    return {"result": "continue"}


plugin.run()

#!/usr/bin/env python3
"""Test helper for the holding node: accept every incoming channel as zero-conf.

With it a payer's channel to S is usable before it confirms, so S first
sees the payer's HTLC under the channel's alias and, after confirmation,
under its real scid.
"""

from pyln.client import Plugin

plugin = Plugin()


@plugin.hook("openchannel")
def on_openchannel(openchannel, plugin, **kwargs):
    return {"result": "continue", "mindepth": 0}


plugin.run()

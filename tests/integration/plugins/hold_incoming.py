#!/usr/bin/env python3
"""Test helper for the recipient: hold every incoming HTLC until `release` is called.

It keeps an outgoing attempt in flight at the trampoline for as long as a
test needs, for example across a kill -9 of the trampoline.
"""

from pyln.client import Plugin

plugin = Plugin()
waiting = []


@plugin.async_hook("htlc_accepted")
def on_htlc_accepted(onion, htlc, request, plugin, **kwargs):
    waiting.append(request)


@plugin.method("hold-incoming-count")
def count(plugin):
    """How many HTLCs are held."""
    return {"held": len(waiting)}


@plugin.method("hold-incoming-release")
def release(plugin):
    """Let every held HTLC continue."""
    for request in waiting:
        request.set_result({"result": "continue"})
    released = len(waiting)
    waiting.clear()
    return {"released": released}


plugin.run()

"""The one port to lightningd that every role's shell shares.

Holds the RPC client, the lock, the store, the channel mapping, the worker
thread (hooks and notifications queue jobs; one thread does the slow I/O and
ticks), sending custom messages, and the answer table: the htlc_accepted
requests still owed an answer (``pending``/``undecided``), answered only
through :meth:`Port.answer`, bound to the HTLC lightningd named.
"""

import os
import time
from typing import Callable, Dict, List, Optional, Sequence

from pyln.client import RpcError
from pyln.client.plugin import RequestState

from . import failures, lsps0, messages
from .errors import AsynclnError, Code
from .features import has_feature
from .lightningd import msat, rpc_message

ROUTE_LAYERS = ["auto.localchans", "auto.sourcefree"]
TICK_SECONDS = 0.2         # how often the worker looks at waking peers
CHAIN_SECONDS = 1.0        # how often it asks again whether lightningd reached bitcoind's tip
RECONCILE_SECONDS = 30     # re-issue what is owed even without a new block
QUEUED_PER_PEER = 4        # a peer's requests of one kind waiting for the worker
HINT_CAPACITY_MSAT = 16_777_215_000  # a hinted channel's capacity is unknown: assume the largest

CONTINUE = {"result": "continue"}
FAIL_TEMPORARY = {"result": "fail", "failure_message": failures.temporary_node_failure()}


def channel_names(channels: List[dict]) -> Dict[str, str]:
    """lightningd's own mapping (listpeerchannels): each scid and local alias -> channel id.

    The hook names a channel by its scid, or by its local alias until it has
    one; the peer's alias (alias.remote) is the peer's choice, never ours.
    """
    names = {}
    for channel in channels:
        channel_id = channel.get("channel_id")
        for name in (channel.get("short_channel_id"), (channel.get("alias") or {}).get("local")):
            if channel_id and name:
                names[name] = channel_id
    return names


def waiting(request) -> bool:
    return request.state == RequestState.PENDING


def int_param(value, name: str) -> int:
    try:
        number = msat(value)
    except (TypeError, ValueError):
        raise AsynclnError(f"{name} must be an integer, not {value!r}", Code.BAD_PARAMETER)
    if number < 0:
        raise AsynclnError(f"{name} cannot be negative", Code.BAD_PARAMETER)
    return number


class Port:
    """The shared state and I/O; :class:`asyncln.node.Node` sets it up."""

    def _load(self, kind: str, parse) -> dict:
        """One unreadable record must not keep the others (and the plugin) from loading."""
        loaded = {}
        for key, value in self.store.records(kind):
            try:
                loaded[key] = parse(value)
            except (KeyError, TypeError, ValueError) as e:
                self.log(f"skipping unreadable {kind} record {key}: {e!r}", level="warn")
        for (of, page), why in self.store.unreadable.items():
            if of == kind:  # kept as it is: nothing is written over it
                self.log(f"skipping unreadable page {page} of {kind} records: {why}; its records "
                         "are not restored and new HTLCs in it are refused", level="broken")
        return loaded

    def refresh_channels(self) -> None:
        names = channel_names(self.rpc.call("listpeerchannels")["channels"])
        with self.lock:
            self.channels.update(names)

    # --- the worker ------------------------------------------------------------

    def submit(self, job: Callable[[], None], urgent: bool = False) -> None:
        with self._cv:
            (self._jobs.appendleft if urgent else self._jobs.append)(job)
            self._cv.notify()

    def submit_once(self, key: tuple, job: Callable[[], None]) -> None:
        """A peer's request: at most QUEUED_PER_PEER queued per (peer, kind), however many it sends.

        A flood then costs a few jobs, not a queue that delays held payments;
        an honest peer's few concurrent requests all get through.
        """
        with self._cv:
            if self._queued.get(key, 0) >= QUEUED_PER_PEER:
                self.log(f"dropping a {key[1]} request from {key[0]}: too many queued",
                         level="info")
                return
            self._queued[key] = self._queued.get(key, 0) + 1

        def once():
            with self._cv:
                self._queued[key] -= 1
                if not self._queued[key]:
                    del self._queued[key]
            job()
        self.submit(once)

    def _work(self) -> None:
        while True:
            with self._cv:
                if not self._jobs:
                    self._cv.wait(TICK_SECONDS)
                job = self._jobs.popleft() if self._jobs else None
            for step in ([job] if job else []) + [self._tick]:
                try:
                    step()
                except Exception as e:  # the worker must outlive any one job
                    self.log(f"internal error in the worker: {e!r}", level="warn")

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick < TICK_SECONDS:
            return
        self._last_tick = now
        for peer, deadline in list(self._waking.items()):
            if now > deadline or self.channel_ready(peer):
                with self._cv:
                    self._waking.pop(peer, None)
                with self.lock:
                    actions = self.relay.peer_online(peer)
                self.run(actions)
        if not self.relay.synced and now - self._last_chain >= CHAIN_SECONDS:
            self.check_chain()
        if now - self._last_reconcile >= RECONCILE_SECONDS:
            self.reconcile()

    # --- the answer table and messages -----------------------------------------

    def answer(self, payment_hash: str, key: str, result: dict, what: str) -> None:
        """Answer the request lightningd named ``key``, then tell the core it was delivered."""
        with self.lock:
            request = self.pending.pop(key, None)
            self.undecided.pop(key, None)
        if request is None:
            self.log(f"HTLC {payment_hash} ({key}) {what}, but lightningd no longer waits on it",
                     level="debug")
        else:
            try:
                request.set_result(result)
            except Exception:
                if waiting(request):  # not delivered: still owed
                    with self.lock:
                        self.pending.setdefault(key, request)
                    raise
            self.log(f"HTLC {payment_hash} ({key}) {what}")
        with self.lock:
            self.relay.answered(payment_hash, key)

    def may_fail(self, htlc: dict, request) -> bool:
        """plugin.py's last resort: only an HTLC with no record and no answer owed may be failed."""
        with self.lock:
            return (htlc.get("payment_hash") not in self.relay.held
                    and not any(r is request for r in self.pending.values()))

    def send(self, peer: str, msg) -> bool:
        """An asyncln or LSPS0 message; a peer that is gone is not an error."""
        payload = lsps0.encode(msg) if isinstance(msg, lsps0.Message) else messages.encode(msg)
        try:
            self.rpc.call("sendcustommsg", {"node_id": peer, "msg": payload})
            return True
        except RpcError as e:
            self.log(f"could not message {peer}: {rpc_message(e)}", level="debug")
            return False

    def route_layer(self, layer: str, destination: str, hints: Sequence[Sequence] = (),
                    enable: Sequence[str] = ()) -> Optional[str]:
        """An askrene layer for one search: the invoice's hinted channels, which gossip does
        not show, and the channels ``enable`` names (short_channel_id_dir), which gossip shows
        disabled while their node is offline. None if askrene refused the layer.

        Our own channels are left out: ``auto.localchans`` knows them better. A
        hinted channel that gossip shows is only enabled: its fees in gossip are
        the current ones, the invoice's may be stale (a route at stale fees fails).
        The caller removes the layer when the search is done.
        """
        self._try_rpc("askrene-remove-layer", {"layer": layer})  # a crash may have left it
        if not self._try_rpc("askrene-create-layer", {"layer": layer, "persistent": False}):
            return None
        enable = list(enable)
        for route in hints:
            targets = [hop.node_id for hop in route[1:]] + [destination]
            for hop, target in zip(route, targets):
                if hop.node_id == self.node_id:
                    continue
                direction = int(bytes.fromhex(hop.node_id) > bytes.fromhex(target))
                if self._in_gossip(hop.short_channel_id):
                    enable.append(f"{hop.short_channel_id}/{direction}")
                    continue
                self._try_rpc("askrene-create-channel", {
                    "layer": layer, "source": hop.node_id, "destination": target,
                    "short_channel_id": hop.short_channel_id, "capacity_msat": HINT_CAPACITY_MSAT})
                self._try_rpc("askrene-update-channel", {
                    "layer": layer, "short_channel_id_dir": f"{hop.short_channel_id}/{direction}",
                    "enabled": True, "htlc_minimum_msat": 0, "htlc_maximum_msat": HINT_CAPACITY_MSAT,
                    "fee_base_msat": hop.fee_base_msat, "fee_proportional_millionths": hop.fee_ppm,
                    "cltv_expiry_delta": hop.cltv_delta})
        for scidd in enable:
            self._try_rpc("askrene-update-channel", {"layer": layer, "short_channel_id_dir": scidd,
                                                     "enabled": True})
        return layer

    def _in_gossip(self, scid: str) -> bool:
        try:
            return bool(self.rpc.call("listchannels", {"short_channel_id": scid}).get("channels"))
        except RpcError:
            return False

    def _try_rpc(self, method: str, params: dict) -> bool:
        """A call whose failure only costs a route: log it and go on."""
        try:
            self.rpc.call(method, params)
            return True
        except RpcError as e:
            self.log(f"{method} failed: {rpc_message(e)}", level="debug")
            return False

    # --- peers -----------------------------------------------------------------

    def connected_peers(self) -> set:
        return {p["id"] for p in self.rpc.call("listpeers")["peers"] if p.get("connected")}

    def asyncln_peers(self) -> List[str]:
        return [p["id"] for p in self.rpc.call("listpeers")["peers"]
                if p.get("connected") and has_feature(p.get("features", ""))]

    def greet(self, peer: str) -> None:
        """A peer that speaks asyncln connected: learn its terms, say we're back."""
        self.send(peer, messages.QueryInfo())
        self.send(peer, messages.Online())

    def channel_ready(self, peer: str) -> bool:
        channels = self.rpc.call("listpeerchannels", {"id": peer})["channels"]
        return not channels or any(
            c.get("peer_connected") and c.get("state") == "CHANNELD_NORMAL"
            and c.get("reestablished", True) for c in channels)

    def _is_important(self, plugin_paths: Sequence[str]) -> bool:
        """Loaded with important-plugin=, so that lightningd stops rather than fail held HTLCs.

        ``plugin_paths``: plugin.py and what lightningd started (``sys.argv[0]``),
        which is another file when reckless's wrapper runs plugin.py.
        """
        if not plugin_paths:
            return False
        try:
            configs = self.rpc.call("listconfigs", {"config": "important-plugin"})["configs"]
        except (RpcError, KeyError):
            return False
        paths = configs.get("important-plugin", {}).get("values_str", [])
        return not {os.path.realpath(p) for p in plugin_paths}.isdisjoint(os.path.realpath(p) for p in paths)

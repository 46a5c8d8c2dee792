"""bLIP-55 (LSPS5) webhooks over LSPS0 (bLIP-50, message 37913): S's side and B's side.

As the LSP (S, or a Rod): a peer's ``lsps5.*`` and ``lsps0.list_protocols``
requests go to the pure core (asyncln/lsps5.py) on the worker thread; a
changed registry is written to the datastore (``["asyncln","lsps5",client]``)
before the answer is sent. Requests for other methods, notifications and
responses not ours are left alone: another LSPS plugin (CLN's lsps-plugin)
may see the same message, and the custommsg hook always returns
``continue``. Only a channel peer may register a webhook: S holds for and
delivers to its channel peers, and a stranger must not make S store URLs
(the Rod's ``peers`` rule, for the same reason). While S holds a payment for
an offline client, it POSTs ``lsps5.payment_incoming`` (at hold, then at each
block, within the core's cooldown) and ``lsps5.expiry_soon`` (24 blocks
before the give-up height) to the client's webhooks, through
asyncln/webhook.py: a webhook never delays or changes a held payment. As a
Rod, ``asyncln.pool_low`` when serving an invoice leaves a depositor few.

As the client (B): ``asyncln-webhook`` and friends send a request and wait,
on the RPC's own thread, for the response with the same random id.
"""

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from coincurve import PrivateKey
from pyln.client import RpcError

from . import lsps0, lsps5, webhook
from .errors import AsynclnError, Code
from .lightningd import rpc_message

KIND = "lsps5"                # datastore: ["asyncln", "lsps5", client node id]
ANSWER_SECONDS = 30           # B's longest wait for its LSP's answer
POOL_LOW_INVOICES = 5         # as a Rod: tell a depositor when serving leaves this few
PRUNE_SECONDS = 86400         # forget long-idle clients' webhooks once a day
LIVE_CHANNEL = ("CHANNELD_AWAITING_LOCKIN", "DUALOPEND_AWAITING_LOCKIN", "CHANNELD_NORMAL",
                "CHANNELD_AWAITING_SPLICE")


def ours(method: str) -> bool:
    return method == lsps5.LIST_PROTOCOLS or method.startswith("lsps5.")


@dataclass(frozen=True)
class WebhookConfig:
    """The LSP side's options (plugin.py)."""

    service: bool = True                  # answer lsps5.* and lsps0.list_protocols at all
    allow_http_loopback: bool = False     # developers: webhooks on loopback, http too
    hsm_secret: Optional[str] = None      # lightningd's hsm_secret file, if we may sign with it


class LspsShell:
    def __init__(self, node, config: WebhookConfig = WebhookConfig()):
        self.node = node
        self.config = config
        self.allow_http_loopback = config.allow_http_loopback
        self.registry = lsps5.Registry()
        for client, record in node.store.load(KIND).items():
            try:
                self.registry.load(client, record, self.allow_http_loopback)
            except ValueError as e:
                node.log(f"skipping unreadable {KIND} record {client}: {e}", level="warn")
        self.sender = webhook.Sender(node.log, allow_loopback=self.allow_http_loopback)
        self.node_key, self.key_problem = self._node_key(config.hsm_secret)
        if self.key_problem:
            node.log(self.key_problem, level="warn")
        self._pruned_at = 0.0

    def _node_key(self, path: Optional[str]) -> Tuple[Optional[bytes], Optional[str]]:
        """The node key, to sign notifications as bLIP-55 says (lightningd's signmessage signs
        the JSON-escaped text, which no bLIP-55 verifier accepts): only when the operator
        allows reading hsm_secret, and only if it is this node's key."""
        if path is None:
            return None, None
        try:
            with open(path, "rb") as f:
                secret = lsps5.node_secret(f.read())
            if PrivateKey(secret).public_key.format().hex() != self.node.node_id:
                raise ValueError("its key is not this node's id")
            return secret, None
        except (OSError, ValueError) as e:
            return None, f"cannot sign webhooks with {path}: {e}; signing with signmessage"

    # --- hook thread: no I/O, hand work to the worker ----------------------------

    def on_message(self, peer: str, payload: str) -> None:
        try:
            msg = lsps0.decode(payload)
        except lsps0.Lsps0Error as e:
            # bLIP-50: the LSP answers a bad message with an error; a client's answer to
            # it (a response) is ignored by any LSP, so this cannot ping-pong.
            self.node.log(f"bad LSPS0 message from {peer}: {e}", level="info")
            reply = lsps0.error(e.request_id, e.code, str(e))
            self.node.submit_once((peer, "lsps"), lambda: self.node.send(peer, reply))
            return
        match msg:
            case lsps0.Request(method=method) if ours(method) and self.config.service:
                self.node.submit_once((peer, "lsps"), lambda: self.serve(peer, msg))
            case lsps0.Response(id=request_id) if request_id is not None:
                self.node.rods.answered(("lsps", request_id), peer, msg, unasked_level="debug")
            case _:
                return  # another LSPS plugin's request or response, or a notification

    def connected(self, peer: str) -> None:
        with self.node.lock:
            self.registry.connected(peer, time.time())

    def disconnected(self, peer: str) -> None:
        with self.node.lock:
            self.registry.disconnected(peer, time.time())

    # --- the worker: the LSP ------------------------------------------------------

    def startup(self) -> None:
        now = time.time()
        peers = self.node.connected_peers()
        with self.node.lock:
            for peer in peers:
                self.registry.connected(peer, now)

    def is_client(self, peer: str) -> bool:
        """A peer with a live channel: S may hold for it and deliver to it."""
        return any(c.get("state") in LIVE_CHANNEL for c in self.node.rpc.call(
            "listpeerchannels", {"id": peer})["channels"])

    def serve(self, peer: str, request: lsps0.Request) -> None:
        """One request: the core answers; a change is on disk before the answer goes."""
        known = request.method != lsps5.SET_WEBHOOK or self.is_client(peer)
        with self.node.lock:
            reply = lsps5.handle_request(self.registry, peer, request.method, request.params,
                                         time.time(), self.allow_http_loopback, known)
            record = self.registry.record(peer) if reply is not None and reply.changed else None
        if reply is None:
            return
        if reply.changed:
            try:
                self.save(peer, record)
            except Exception as e:  # not saved: the client must not believe it is
                self.node.log(f"could not save {peer}'s webhooks: {e!r}", level="broken")
                self.reload(peer)
                self.node.send(peer, lsps0.error(request.id, lsps0.INTERNAL_ERROR,
                                                 "could not store the webhook"))
                return
            self.node.log(f"{request.method} from {peer}: {len(self.registry.app_names(peer))} "
                          "webhooks now")
        self.node.send(peer, lsps0.Response(request.id, error=reply.error) if reply.error
                       else lsps0.Response(request.id, result=reply.result))
        self.post(reply.notifications)

    def save(self, peer: str, record: Optional[dict]) -> None:
        if record is None:
            self.node.store.delete(KIND, peer)
        else:
            self.node.store.put(KIND, peer, record)

    def reload(self, peer: str) -> None:
        """After a failed write: the registry goes back to what the datastore has."""
        try:
            stored = self.node.store.get(KIND, peer)
            with self.node.lock:
                self.registry.clients.pop(peer, None)
                if stored is not None:
                    self.registry.load(peer, stored, self.allow_http_loopback)
        except Exception as e:
            self.node.log(f"could not reload {peer}'s webhooks: {e!r}", level="broken")

    # --- events -----------------------------------------------------------------

    def payment_held(self, client: str) -> None:
        """A held payment for ``client`` (its next node) just went ``held``."""
        self.notify(client, lsps5.PaymentIncoming())

    def on_block(self, height: int) -> None:
        """Worker, each block, level-triggered (the core's cooldown decides whether a POST goes):
        every away client we still hold a payment for, up to its give-up height; every away
        client with an HTLC we offered it whose expiry lightningd would close the channel for."""
        with self.node.lock:
            holding = sorted(self.node.relay.by_node)
            away = [c for c, entry in self.registry.clients.items()
                    if entry.webhooks and c not in self.registry.online]
        for client in holding:
            self.notify(client, lsps5.PaymentIncoming())
        if away:
            for client, timeout in sorted(offered_timeouts(
                    self.node.rpc.call("listpeerchannels")["channels"], set(away)).items()):
                self.notify(client, lsps5.ExpirySoon(timeout, height))
        if time.time() - self._pruned_at >= PRUNE_SECONDS:
            self.prune()

    def pool_served(self, depositor: str, remaining: int) -> None:
        """As a Rod: serving left ``depositor`` (offline, or it would top up) few invoices."""
        if remaining <= POOL_LOW_INVOICES:
            self.notify(depositor, lsps5.PoolLow(remaining))

    def prune(self) -> None:
        self._pruned_at = time.time()
        with_channels = {c["peer_id"] for c in self.node.rpc.call("listpeerchannels")["channels"]
                         if c.get("state") in LIVE_CHANNEL}
        with self.node.lock:
            gone = self.registry.prune(time.time(), sorted(with_channels))
        for client in gone:
            self.node.store.delete(KIND, client)

    def notify(self, client: str, event: lsps5.Event) -> None:
        with self.node.lock:
            due = lsps5.notifications_for(event, self.registry, client, time.time())
        self.post(due)

    def post(self, notifications) -> None:
        """Queue each POST; it is signed on a sender thread, just before it goes."""
        for n in notifications:
            self.node.log(f"webhook {n.method.value} for {n.client_id} ({n.app_name!r})")
            self.sender.submit(f"{n.method.value} for {n.client_id}", n.url,
                               lambda n=n: self._prepare(n))

    def _prepare(self, n: lsps5.Notification):
        stamp = lsps5.timestamp(time.time())
        body = lsps5.body_bytes(n)
        if self.node_key is not None:
            return body, lsps5.headers(stamp, lsps5.sign(self.node_key, stamp, body))
        signed = self.node.rpc.call("signmessage", {"message": lsps5.message_to_sign(stamp, body)})
        return body, lsps5.headers(stamp, signed["zbase"])

    def getinfo(self) -> dict:
        with self.node.lock:
            clients = sum(bool(c.webhooks) for c in self.registry.clients.values())
        return {"service": self.config.service, "clients": clients,
                "signer": "hsm_secret" if self.node_key is not None else "signmessage",
                **self.sender.counts}

    def warnings(self) -> List[str]:
        with self.node.lock:
            clients = any(c.webhooks for c in self.registry.clients.values())
        if self.key_problem:
            return [self.key_problem]
        if clients and self.node_key is None:
            return ["webhook notifications are signed with signmessage, which signs escaped JSON: "
                    "bLIP-55 delivery services refuse them (see asyncln-webhook-hsm-secret)"]
        return []

    # --- B: the client, on an RPC's own thread ----------------------------------------

    def call(self, peer: str, method: str, params: dict) -> dict:
        """Ask ``peer`` (our LSP) and wait for its response; its refusal becomes an error."""
        request = lsps0.Request(lsps0.new_id(), method, params)
        try:
            answer = self.node.rods.ask(peer, ("lsps", request.id), request, ANSWER_SECONDS)
        except RpcError as e:
            raise AsynclnError(f"cannot ask {peer}: {rpc_message(e)}", Code.NO_ANSWER)
        if answer.error is not None:
            raise AsynclnError(f"{peer} refused {method}: {lsps_error(answer.error)}",
                               Code.LSP_REFUSED)
        return answer.result


def offered_timeouts(channels: List[dict], clients: set) -> Dict[str, int]:
    """Client -> the first height at which lightningd would close a channel with it to enforce
    an HTLC we offered it (``cltv_expiry + 1``, lsps5.ExpirySoon)."""
    first: Dict[str, int] = {}
    for channel in channels:
        peer = channel.get("peer_id")
        if peer not in clients:
            continue
        for htlc in channel.get("htlcs", []):
            if htlc.get("direction") == "out" and "expiry" in htlc:
                timeout = int(htlc["expiry"]) + 1
                first[peer] = min(first.get(peer, timeout), timeout)
    return first


def lsps_error(error: dict) -> str:
    """A peer's error for our RPC's message: code, printable message, data (bLIP-50 wants it
    filtered: a peer's text goes into a terminal)."""
    text = "".join(ch for ch in str(error.get("message", ""))[:200] if ch.isprintable())
    data = error.get("data")
    return f"error {error.get('code')} {text!r}" + (f" {data}" if data else "")


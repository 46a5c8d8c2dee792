"""One plugin process's shell: the holder's, the payer's and the Rod's, over one port.

plugin.py hands every hook, notification and RPC call to one :class:`Node`.
It is the holder shell (holder_shell.py), the payer shell (payer_shell.py)
and the shared port to lightningd (port.py) in one object, and owns the Rod
shell (rod_shell.py) as ``rods``; it sets up their state and dispatches what
belongs to several roles (peer messages, ``cancel``, ``getinfo``).
"""

import threading
import time
from collections import deque
from dataclasses import replace
from typing import Callable, Dict, Optional, Sequence, assert_never

from . import __version__, counters, hold, lsps0, messages, onion, payer, rod
from .errors import AsynclnError, Code
from .features import FEATURE_BIT
from .holder_shell import DUE_SLICE, HolderShell, collector_paused, held_json, settle_memory
from .lsps_shell import LspsShell, WebhookConfig
from .payer_shell import PayerShell
from .policy import Policy
from .port import Port, int_param
from .recipient import RecipientConfig
from .rod_shell import RodShell
from .states import PAY_OPEN, HoldState, PayState
from .store import ONION_SAVED, Store, page_secret
from .wire import DecodeError


class Node(HolderShell, PayerShell, Port):
    """Everything the shell keeps between calls; one per plugin process."""

    def __init__(self, rpc, log: Callable[..., None], policy: Policy,
                 refused_options: Optional[str] = None, plugin_paths: Sequence[str] = (),
                 rod_limits: rod.RodLimits = rod.RodLimits(),
                 recipient: RecipientConfig = RecipientConfig(),
                 webhooks: WebhookConfig = WebhookConfig()):
        started = time.monotonic()
        self.rpc = rpc
        self.log = log
        self.lock = threading.RLock()
        self.store = Store(rpc, secret=page_secret(rpc))
        self.node_id = rpc.getinfo()["id"]
        height, in_sync = self.chain_state()
        self.refused_options = refused_options
        self.important = self._is_important(plugin_paths)
        # scid or local alias -> channel id, from listpeerchannels; names are only
        # added (a spliced channel's old scid still names it for a replay).
        self.channels: Dict[str, str] = {}
        try:
            self.refresh_channels()
        except Exception as e:  # never keep the plugin (and its held HTLCs) from starting
            self.log(f"listpeerchannels failed at startup: {e!r}; unknown channels are "
                     "looked up when their HTLCs arrive", level="broken")
        with collector_paused():
            loaded = self._load("held", hold.HeldPayment.from_json).values()
            held = [self._with_channel_id(h) for h in loaded]
            self.relay = hold.Relay(policy, height, held, synced=in_sync,
                                    accept_new=refused_options is None)
            # Records that just learnt their channel id: startup's reconcile writes them.
            self.relay.unsaved.update(h.payment_hash for h, old in zip(held, loaded) if h is not old)
        # hash -> the version-2 onion last written under its own key (HolderShell.paged)
        self.onions: Dict[str, str] = {h.payment_hash: ONION_SAVED for h in held
                                       if h.record.next_onion == ONION_SAVED}
        # hash -> the state last logged at info: one line per state change, not per save
        self.logged_states = {h.payment_hash: h.state for h in held}
        self.pays: Dict[str, payer.Pay] = self._load("pay", payer.Pay.from_json)
        self.terms: Dict[str, Policy] = {}   # peer -> the terms its INFO announced
        # Incoming.key (channel/HTLC id, as lightningd named it) -> the htlc_accepted
        # request awaiting our answer. Never payer-chosen data: an HTLC must never
        # take another's answer.
        self.pending: Dict[str, object] = {}
        # Incoming.key -> the hook call (onion, htlc, peer, request) still to decide:
        # its channel was unknown, or deciding raised while it may have a record.
        self.undecided: Dict[str, tuple] = {}
        self.paying: set = set()             # hashes an asyncln-pay call is working on
        self._jobs: deque = deque()
        self._cv = threading.Condition()
        self._waking: Dict[str, float] = {}  # peer -> give up waiting at (monotonic)
        self._queued: Dict[tuple, int] = {}  # (peer, kind) -> jobs queued, at most QUEUED_PER_PEER
        self._slicing = False                # a poll round's next slice is queued (wake_due)
        self._last_tick = self._last_reconcile = self._last_chain = time.monotonic()
        # hash of an invoice a Rod handed us -> that Rod: paying it later holds for the Rod
        fetched = self.store.load("fetched")
        self.fetched = {h: v.get("rod") for h, v in fetched.items()}
        # ...and the recipient's note key from its code: we commit to the amount with it
        self.commit_keys = {h: v["note_key"] for h, v in fetched.items() if v.get("note_key")}
        # hash -> the shared secrets of our attempt's onion to a next holder (onion_failure)
        self.onion_secrets = self.store.load("secrets")
        self.onion_secret, self.announced = self._onion_key(policy)
        self.rods = RodShell(self, rod_limits, recipient)
        self.lsps = LspsShell(self, webhooks)
        # tests/integration/test_scale.py reads this line: recovery at 100,000 held.
        self.log(f"recovered {len(held)} held records in {time.monotonic() - started:.2f} s")

    def _onion_key(self, policy: Policy):
        """Our asyncln key (makesecret) and the terms we announce: the policy, the key, its signature."""
        secret = self.rpc.call("makesecret", {"string": onion.ONION_KEY_LABEL}).get("secret")
        if secret is None:
            return None, policy
        key = onion.public_key(secret)
        signed = self.rpc.call("signmessage", {"message": onion.key_statement(key)})
        return onion.secret_key(secret), replace(policy, onion_key=key,
                                                 onion_key_sig=signed.get("zbase"))

    def has_open_records(self) -> bool:
        """Any held record counts: a complete or failed one may still be replayed."""
        return bool(self.relay.held) or any(p.status in PAY_OPEN for p in self.pays.values())

    def start(self) -> None:
        """Start the worker, then settle what a crash may have left open."""
        threading.Thread(target=self._work, name="asyncln-worker", daemon=True).start()
        if len(self.relay.held) > DUE_SLICE:  # many records: keep the collector's walks short,
            self.submit(settle_memory)          # after init's answer, which lightningd waits for
        self.submit(self._startup)

    def _startup(self) -> None:
        self.lsps.startup()
        self.reconcile()
        for peer in self.asyncln_peers():
            self.greet(peer)
            self.rods.peer_connected(peer)

    def custom_message(self, peer: str, payload: str) -> None:
        if lsps0.is_lsps0(payload):
            self.lsps.on_message(peer, payload)
            return
        try:
            msg = messages.decode(payload)
        except DecodeError as e:
            self.log(f"ignoring malformed asyncln message from {peer}: {e}", level="info")
            return
        match msg:
            case None:
                return
            case messages.QueryInfo():
                self.submit_once((peer, "info"), lambda: self.send(peer, self.announced))
            case Policy():
                with self.lock:
                    self.terms[peer] = msg
            case messages.Online():
                self.wake(peer)
            case messages.PaymentStatus():
                with self.lock:
                    pay = self.pays.get(msg.payment_hash)
                    updated = pay and payer.on_status(pay, msg, peer)
                if updated:
                    self.save_pay(updated, durable=False)
                else:
                    self.log(f"ignoring status for {msg.payment_hash} from {peer}", level="info")
            case (messages.Deposit() | messages.PoolStatus() | messages.InvoiceRequest()
                  | messages.InvoiceResponse() | messages.Note() | messages.NoteAck()
                  | messages.CancelRequest() | messages.CancelAnswer() | messages.NoteAnswer()):
                self.rods.on_message(peer, msg)
            case _:
                assert_never(msg)

    def cancel(self, payment_hash: str) -> dict:
        """As the holding node: fail it back. As the payer: ask the holding node to."""
        with self.lock:
            mine = self.pays.get(payment_hash) if payment_hash not in self.relay.held else None
            if mine is None:
                actions = self.relay.cancel(payment_hash)
                entry = held_json(self.relay.held[payment_hash])
        if mine is not None:
            return self.cancel_as_payer(mine)
        self.submit_actions(actions)
        return entry

    def deposit(self, amount_msat, count, my_rod: Optional[str]) -> dict:
        """Deposit now, e.g. fixed-amount invoices, at one Rod (the first by default)."""
        amount = None if amount_msat is None else int_param(amount_msat, "amount_msat")
        count = int_param(count, "count")
        rods = [r.node_id for r in self.rods.config.rods]
        target = my_rod or (rods[0] if rods else None)
        if target not in rods:
            raise AsynclnError(f"{target} is not one of my Rods (asyncln-rod)", Code.BAD_PARAMETER)
        if not 1 <= count <= messages.MAX_DEPOSIT_BATCH:
            raise AsynclnError(f"count must be 1 to {messages.MAX_DEPOSIT_BATCH}",
                               Code.BAD_PARAMETER)
        return {"rod": target, "deposited": self.rods.deposit(target, amount, count)}

    def getinfo(self) -> dict:
        with self.lock:
            relay = self.relay
            warnings = []
            if not self.important:
                warnings.append("asyncln is not loaded with important-plugin=: if it dies, "
                                "lightningd fails the HTLCs it holds (see README)")
            if self.refused_options:
                warnings.append(f"options refused ({self.refused_options}): serving open records, "
                                "accepting no new holds")
            if not relay.synced:
                warnings.append("lightningd is catching up with the chain: no new holds or attempts")
            warnings += self.lsps.warnings()
            return {
                "version": __version__, "feature_bit": FEATURE_BIT,
                "blockheight": relay.height, "synced": relay.synced,
                "important_plugin": self.important,
                "onion_key": self.announced.onion_key,
                "options": relay.policy.as_json(),
                "held": {s.value: sum(h.state == s for h in relay.held.values()) for s in HoldState},
                "held_msat": relay.active_msat,
                "counters": counters.counters(
                    relay.held.values(),
                    (self.rods.rod.pool(d) for d in self.rods.rod.depositors())),
                "pays": {s.value: sum(p.status == s for p in self.pays.values()) for s in PayState},
                "trampolines": [{"id": peer, "relay": i.relay, "fee_base_msat": i.fee_base_msat,
                                 "fee_ppm": i.fee_ppm, "max_hold_blocks": i.max_hold_blocks,
                                 "min_held_msat": i.min_held_msat}
                                for peer, i in sorted(self.terms.items())],
                "rods": self.rods.rods_json(),
                "rod_depositors": self.rods.depositors_json(),
                "webhooks": self.lsps.getinfo(),
                "warnings": warnings,
            }

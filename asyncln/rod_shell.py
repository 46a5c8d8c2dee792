"""The shell for presigned invoices: the Rod (R), its depositor (B) and the fetching payer (A).

The decisions live in pure cores (rod.Rod, recipient, payer.check_fetched,
code, note); this module only talks to lightningd and to peers. R's work
runs on the Node's worker thread. A's requests (fetch, pay by code, cancel)
wait for a peer's answer, so plugin.py runs each on its own thread, and
the custommsg hook only drops the answer into the waiting slot.
"""

import os
import queue
import threading
import time
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

from pyln.client import RpcError

from . import code as codes
from . import failures, messages, note, onion, payee, payee_check, payer, recipient, rod
from .errors import AsynclnError, Code
from .lightningd import msat, rpc_message
from .recipient import RecipientConfig
from .signature import signed_by
from .wire import DecodeError

ANSWER_SECONDS = 30   # longest wait for a Rod's or trampoline's answer
FETCH_SECONDS = 60    # longest a whole fetch may take, whatever the code lists
NOTE_SECONDS = 10     # longest wait for a Rod's note_answer: the invoice is already fetched
MAX_RODS_TRIED = 3
MAX_ADDRESSES_TRIED = 4
# A Rod's answer that another Rod in the code may not give.
NEXT_ROD_HELPS = (Code.NO_ANSWER, Code.POOL_EMPTY, Code.UNKNOWN_RECIPIENT)
LIVE_CHANNEL = ("CHANNELD_AWAITING_LOCKIN", "DUALOPEND_AWAITING_LOCKIN", "CHANNELD_NORMAL",
                "CHANNELD_AWAITING_SPLICE")
INVOICE_LABEL = "asyncln-rod-"
MINTED = "minted"     # datastore kind: B's recipient.MintBudget per Rod


class RodShell:
    def __init__(self, node, limits: rod.RodLimits, config: RecipientConfig):
        self.node = node
        self.config = config
        self.my_rods = {r.node_id: r for r in config.rods}
        self.rod = rod.Rod(limits, node._load("rod", rod.Pool.from_json))
        self.levels: Dict[str, messages.PoolStatus] = {}  # my Rod -> its last pool_status
        self.asked_at: Dict[str, int] = {}                # my Rod -> height we last asked
        self.asking: set = set()   # my Rods whose answer we await: only an answer tops up
        self.sent: Dict[str, messages.Deposit] = {}      # my Rod -> invoices awaiting its answer
        self.unplaced: Dict[str, messages.Deposit] = {}  # my Rod -> invoices it refused us
        self._slots: Dict[Tuple, Tuple[str, queue.Queue]] = {}  # what we wait for -> (peer, slot)
        self._slots_lock = threading.Lock()
        self._secrets: Dict[str, str] = {}  # makesecret label -> secret
        self.rod_keys: Dict[str, str] = {}  # Rod -> onion key, vouched for by the Rod (from codes)
        # B: hashes of our unpaid deposited amountless invoices (private offers too), and our
        # note key, so that the htlc_accepted hook checks payers' commitments without RPC.
        self.amountless = {i["payment_hash"] for i in node.rpc.call("listinvoices").get(
            "invoices", []) if i.get("label", "").startswith(INVOICE_LABEL)
            and "amount_msat" not in i and i.get("status") == "unpaid"}
        secret = node.rpc.call("makesecret", {"string": note.NOTE_KEY_LABEL}).get("secret")
        if secret is not None:
            self._secrets[note.NOTE_KEY_LABEL] = secret

    # --- B: the recipient's own HTLCs (hook thread: no I/O) ----------------------

    def as_recipient(self, hook_onion: dict, htlc: dict) -> dict:
        """An HTLC for one of our deposited amountless invoices is taken only as its payer
        committed (asyncln/payee_check.py); any other goes on to lightningd's own checks."""
        payment_hash = htlc["payment_hash"]
        if payment_hash not in self.amountless:
            return {"result": "continue"}
        received = msat(htlc["amount_msat"])
        refusal = payee_check.refusal(hook_onion.get("payload", ""), payment_hash, received,
                                      self._secrets.get(note.NOTE_KEY_LABEL))
        if refusal is None:
            return {"result": "continue"}
        self.node.log(f"refusing HTLC {payment_hash} for a deposited invoice: {refusal}",
                      level="warn")
        height = int(htlc["cltv_expiry"]) - int(htlc["cltv_expiry_relative"])
        return {"result": "fail", "failure_message":
                failures.incorrect_or_unknown_payment_details(received, height)}

    # --- messages (hook thread: no I/O here, hand work to the worker) -----------

    def on_message(self, peer: str, msg) -> None:
        match msg:
            case messages.Deposit():
                self.node.submit_once((peer, "deposit"), lambda: self.take_deposit(peer, msg))
            case messages.PoolStatus():
                if peer in self.my_rods:
                    self.node.submit_once((peer, "pool"), lambda: self.top_up(peer, msg))
            case messages.InvoiceRequest():
                self.node.submit_once((peer, "invoice"), lambda: self.serve(peer, msg))
            case messages.InvoiceResponse():
                self.answered(("invoice", msg.request_id), peer, msg)
            case messages.Note() if msg.recipient == self.node.node_id and not msg.private:
                if peer in self.my_rods:
                    self.node.submit(lambda: self.receive_note(peer, msg))  # bounded by R's cap
            case messages.Note():
                self.node.submit_once((peer, "note"), lambda: self.keep_note(peer, msg))
            case messages.NoteAck():
                with self.node.lock:  # only acks for notes we keep: bounded by max_notes
                    waiting = any(h == msg.payment_hash for h, _ in self.rod.notes_for(peer))
                if waiting:
                    self.node.submit(lambda: self.note_acked(peer, msg.payment_hash))
            case messages.CancelRequest():
                self.node.submit_once((peer, "cancel"),
                                      lambda: self.node.payer_cancelled(peer, msg.payment_hash))
            case messages.CancelAnswer():
                self.answered(("cancel", msg.payment_hash), peer, msg)
            case messages.NoteAnswer():
                self.answered(("note", msg.payment_hash), peer, msg)

    def peer_connected(self, peer: str) -> None:
        """Worker: a depositor gets its notes; one of my Rods is asked for its pool level."""
        if self.rod.notes_for(peer):
            self.deliver_notes(peer)
        if peer in self.my_rods:
            self.query(peer)

    def query(self, my_rod: str) -> None:
        """An empty deposit asks a Rod for our pool level; its answer drives the top-up."""
        self.asked_at[my_rod] = self.node.relay.height
        self.asking.add(my_rod)
        self.sent.pop(my_rod, None)  # its answer may be lost: never offer those again
        self.node.send(my_rod, messages.Deposit(()))

    def channel_changed(self, peer: str, state: str) -> None:
        """Hook thread: a channel to one of my Rods became usable; ask it now, not a poll later."""
        if peer in self.my_rods and state == "CHANNELD_NORMAL":
            self.node.submit_once((peer, "channel"), lambda: self._channel_usable(peer))

    def _channel_usable(self, my_rod: str) -> None:
        if (recipient.wants_query_on_channel(self.levels.get(my_rod), self.config.pool)
                and my_rod in self.node.connected_peers()):
            self.query(my_rod)

    def on_block(self, height: int) -> None:
        """Worker: prune as a Rod; as a recipient, ask Rods whose pool is not full."""
        self.prune()
        due = [r for r in self.my_rods if self._due(r, height)]
        if due:
            connected = self.node.connected_peers()
            for my_rod in due:
                if my_rod in connected:
                    self.query(my_rod)

    def _due(self, my_rod: str, height: int) -> bool:
        """A poll, or a Rod that refused us as a depositor retried (the channel asked only then)."""
        status, asked_at = self.levels.get(my_rod), self.asked_at.get(my_rod)
        if recipient.wants_query(status, asked_at, height, self.config.pool,
                                 self.node.relay.policy.poll_blocks):
            return True
        return recipient.refuses_depositor(status) and recipient.wants_retry(
            status, asked_at, height, self._has_usable_channel(my_rod))

    def _has_usable_channel(self, peer: str) -> bool:
        return any(c.get("peer_connected") and c.get("state") == "CHANNELD_NORMAL"
                   for c in self.node.rpc.call("listpeerchannels", {"id": peer})["channels"])

    # --- R: the Rod --------------------------------------------------------------

    def take_deposit(self, depositor: str, msg: messages.Deposit) -> None:
        """``depositor`` is the custommsg hook's peer_id, which BOLT 8 authenticates."""
        is_peer = any(c.get("state") in LIVE_CHANNEL for c in self.node.rpc.call(
            "listpeerchannels", {"id": depositor})["channels"])
        limits = self.rod.limits
        now = int(time.time())
        try:
            with self.node.lock:
                self.rod.may_deposit(depositor, is_peer)
        except AsynclnError as e:
            self.node.log(f"refusing a deposit from {depositor}: {e}", level="info")
            self.node.send(depositor, messages.PoolStatus(0, 0, 0, limits.min_expiry_seconds,
                                                          (str(e),)))
            return
        items: List = []
        for index, bolt11 in enumerate(msg.invoices):
            try:
                decoded = self.node.rpc.call("decode", {"string": bolt11})
                item = rod.check_invoice(depositor, decoded, bolt11, now, limits,
                                         self.node.node_id)
                items.append(with_offer(item, msg.offers[index] if index < len(msg.offers)
                                        else None))
            except RpcError as e:
                items.append(f"cannot decode: {rpc_message(e)}")
            except AsynclnError as e:
                items.append(str(e))
        with self.node.lock:
            result = self.rod.deposit(depositor, is_peer, items, now)
            key_problem, changed = (self.rod.claim_payee_key(
                depositor, msg.payee_key, msg.payee_key_sig, self.node.node_id)
                if msg.payee_key else (None, ()))
            changed = set(changed) | ({depositor} if result.accepted else set())
            pools = {d: self.rod.pool(d) for d in changed}
        refused = ((key_problem,) if key_problem else ()) + result.refused  # first: never clipped
        for changed_depositor, pool in sorted(pools.items()):
            self.save_pool(changed_depositor, pool)
        if refused:
            self.node.log(f"deposit from {depositor}: refused {list(refused)}", level="info")
        self.node.send(depositor, messages.PoolStatus(result.level, result.accepted,
                                                      limits.max_invoices,
                                                      limits.min_expiry_seconds,
                                                      refused[:messages.MAX_DEPOSIT_BATCH]))

    def serve(self, requester: str, request: messages.InvoiceRequest) -> None:
        """Hand out one invoice at most once: it leaves the pool on disk before it is sent."""
        try:
            with self.node.lock:
                invoice = self.rod.fetch(requester, request.recipient, request.amount_msat,
                                         time.time(), request.private)
                depositor = self.rod.depositor_of(request.recipient, request.private)
                pool = self.rod.pool(depositor)
        except AsynclnError as e:
            self.node.log(f"invoice request from {requester} for {request.recipient}: {e}",
                          level="info")
            answer = messages.InvoiceResponse(request.request_id, error_code=int(e.code),
                                              error=str(e))
        else:
            self.save_pool(depositor, pool)
            self.node.log(f"served {'a private offer' if request.private else 'invoice'} "
                          f"{invoice.payment_hash} to {requester}")
            self.node.lsps.pool_served(depositor, len(pool.invoices))
            answer = (messages.InvoiceResponse(request.request_id, offer=invoice.offer)
                      if request.private else
                      messages.InvoiceResponse(request.request_id, bolt11=invoice.bolt11))
        self.node.send(requester, answer)

    def keep_note(self, sender: str, msg: messages.Note) -> None:
        """Store a payer's note, then tell the payer whether it was stored (``note_answer``)."""
        try:
            with self.node.lock:
                depositor = self.rod.store_note(sender, msg.recipient, msg.payment_hash,
                                                bytes.fromhex(msg.sealed), msg.private)
                pool = self.rod.pool(depositor)
        except AsynclnError as e:
            self.node.log(f"refusing a note from {sender}: {e}", level="info")
            self.node.send(sender, messages.NoteAnswer(msg.payment_hash, False, str(e),
                                                       int(e.code)))
            return
        self.save_pool(depositor, pool)
        self.node.send(sender, messages.NoteAnswer(msg.payment_hash, True))
        if depositor in self.node.connected_peers():
            self.deliver_notes(depositor)

    def deliver_notes(self, depositor: str) -> None:
        with self.node.lock:
            waiting = self.rod.notes_for(depositor)
        for payment_hash, sealed in waiting:
            self.node.send(depositor, messages.Note(depositor, payment_hash, sealed.hex()))

    def note_acked(self, depositor: str, payment_hash: str) -> None:
        with self.node.lock:
            removed = self.rod.note_delivered(depositor, payment_hash)
            pool = self.rod.pool(depositor)
        if removed:
            self.save_pool(depositor, pool)

    def save_pool(self, depositor: str, pool: rod.Pool) -> None:
        """The datastore follows the core: an empty pool's record goes."""
        if pool.is_empty:
            self.node.store.delete("rod", depositor)
        else:
            self.node.store.put("rod", depositor, pool.to_json())

    def prune(self) -> None:
        """Every block: expired invoices and served hashes whose invoice expired go."""
        with self.node.lock:
            changed = self.rod.prune(int(time.time()))
            pools = {d: self.rod.pool(d) for d in changed}
        for depositor, pool in pools.items():
            self.save_pool(depositor, pool)

    # --- B: the recipient ----------------------------------------------------------

    def top_up(self, my_rod: str, status: messages.PoolStatus) -> None:
        """Only in answer to our query or deposit: an unasked status makes no invoices."""
        self.levels[my_rod] = status
        if my_rod not in self.asking:
            return
        self.asking.discard(my_rod)
        answered = self.sent.pop(my_rod, None)
        if recipient.refuses_depositor(status):
            self.node.log(f"Rod {my_rod} keeps no invoices for me yet ({status.refused[0]}): "
                          "asking again once my channel to it is usable", level="info")
            if answered is not None:  # minted and counted already: offered again, not re-minted
                self.unplaced[my_rod] = answered
            return
        if status.refused:
            self.node.log(f"Rod {my_rod} refused {len(status.refused)} invoices: "
                          f"{list(status.refused)[:3]}", level="warn")
        unplaced = self.unplaced.pop(my_rod, None)
        if unplaced is not None:
            again = recipient.invoices_needed(self.config.pool, status, messages.MAX_DEPOSIT_BATCH,
                                              len(unplaced.invoices))
            if again:
                self._send_deposit(my_rod, replace(unplaced, invoices=unplaced.invoices[:again],
                                                   offers=unplaced.offers[:again]))
                self.node.log(f"deposited again {again} invoices Rod {my_rod} had refused me")
                return
        height, every = self.node.relay.height, self.node.relay.policy.poll_blocks
        budget = self._budget(my_rod)
        count = recipient.invoices_needed(self.config.pool, status, messages.MAX_DEPOSIT_BATCH,
                                          budget.allowance(height, self.config.pool, every))
        if count:  # counted before minting: a crash in between only mints less
            self.node.store.put(MINTED, my_rod, budget.minted(height, count, every).to_json())
            self.deposit(my_rod, None, count)
        elif status.level < min(self.config.pool, status.max_invoices) and not status.refused:
            self.node.log(f"Rod {my_rod} reports {status.level} invoices, but I minted "
                          f"{budget.count} for it since block {budget.start}: waiting for "
                          "the next window (asyncln-poll-blocks)", level="info")

    def _budget(self, my_rod: str) -> recipient.MintBudget:
        saved = self.node.store.get(MINTED, my_rod)
        return recipient.MintBudget() if saved is None else recipient.MintBudget.from_json(saved)

    def deposit(self, my_rod: str, amount_msat: Optional[int], count: int) -> int:
        """Make ``count`` invoices (amountless without ``amount_msat``) and send them to a Rod."""
        made = [self.node.rpc.call("invoice", {
            "amount_msat": "any" if amount_msat is None else amount_msat,
            "label": INVOICE_LABEL + os.urandom(8).hex(),
            "description": codes.deposit_description(my_rod),
            "expiry": self.config.invoice_expiry}) for _ in range(count)]
        invoices = tuple(m["bolt11"] for m in made)
        if amount_msat is None:  # before a payer can fetch one: our hook checks commitments
            self.amountless.update(m["payment_hash"] for m in made)
        offers, payee_key, payee_key_sig = (), None, None
        with self.node.lock:
            rod_key = getattr(self.node.terms.get(my_rod), "onion_key", None)
        if amount_msat is None and rod_key:  # amountless ones also serve private payers
            offers = tuple(self._offer(m, my_rod, rod_key).encode().hex() for m in made)
            payee_key = payee.public_key(self.payee_secret())
            payee_key_sig = payee.sign(self.payee_secret(),
                                       payee.owner_statement(self.node.node_id, my_rod))
        self._send_deposit(my_rod, messages.Deposit(invoices, offers, payee_key, payee_key_sig))
        self.node.log(f"deposited {count} invoices at Rod {my_rod}")
        return count

    def _send_deposit(self, my_rod: str, deposit: messages.Deposit) -> None:
        """Kept until the Rod answers: a refusal of us as depositor keeps them for the retry."""
        self.asking.add(my_rod)
        self.sent[my_rod] = deposit
        if not self.node.send(my_rod, deposit):
            self.asking.discard(my_rod)
            self.sent.pop(my_rod, None)
            raise AsynclnError(f"cannot reach the Rod {my_rod}", Code.NO_ANSWER)

    def _offer(self, made: dict, my_rod: str, rod_key: str) -> payee.PrivateOffer:
        """A private offer for an invoice we just made: a tail for the Rod, and our statement."""
        decoded = self.node.rpc.call("decode", {"string": made["bolt11"]})
        cltv = int(decoded.get("min_final_cltv_expiry", payer.DEFAULT_FINAL_CLTV))
        expires_at = int(decoded["created_at"]) + int(decoded["expiry"])
        payment_hash = decoded["payment_hash"]
        tail = payee.tail(rod_key, self.node.node_id, payment_hash, decoded["payment_secret"],
                          cltv, payer.route_hints(decoded.get("routes", []))[:1])
        signature = payee.sign(self.payee_secret(),
                               payee.statement(payment_hash, expires_at, my_rod))
        return payee.PrivateOffer(payment_hash, expires_at, cltv, tail, signature)

    def payee_secret(self) -> str:
        return self._secret(payee.PAYEE_KEY_LABEL)

    def note_secret(self) -> str:
        return self._secret(note.NOTE_KEY_LABEL)

    def _secret(self, label: str) -> str:
        """makesecret's answer for ``label``, asked once: a top-up signs up to 32 offers."""
        if label not in self._secrets:
            self._secrets[label] = self.node.rpc.call("makesecret", {"string": label})["secret"]
        return self._secrets[label]

    def receive_note(self, my_rod: str, msg: messages.Note) -> None:
        """Store what opens; acknowledge either way, so that the Rod drops a bad note too.

        Only for our own deposited invoices, and only the first note per
        payment: a note is sealed to a public key, so whoever knows the hash
        (the Rod, the payer) could write one; a later one must not replace it.
        """
        problem = None
        found = self.node.rpc.call("listinvoices", {"payment_hash": msg.payment_hash})["invoices"]
        if not any(i.get("label", "").startswith(INVOICE_LABEL) for i in found):
            problem = "not one of our deposited invoices"
        elif self.node.store.get("note", msg.payment_hash) is not None:
            problem = "we already keep a note for this payment"
        else:
            try:
                text = note.open_note(bytes.fromhex(msg.sealed), self.note_secret(),
                                      msg.payment_hash)
            except note.NoteError as e:
                problem = str(e)
        if problem:
            self.node.log(f"refusing the note for {msg.payment_hash} from Rod {my_rod}: {problem}",
                          level="warn")
        else:
            self.node.store.put("note", msg.payment_hash, {
                "payment_hash": msg.payment_hash, "note": text, "rod": my_rod,
                "received_at": int(time.time())})
            self.node.log(f"note received for payment {msg.payment_hash}")
        self.node.send(my_rod, messages.NoteAck(msg.payment_hash))

    def listnotes(self) -> dict:
        notes = sorted(self.node.store.load("note").values(), key=lambda n: n["received_at"])
        for entry in notes:
            found = self.node.rpc.call("listinvoices",
                                       {"payment_hash": entry["payment_hash"]})["invoices"]
            entry["invoice_status"] = found[0]["status"] if found else "unknown"
        return {"notes": notes}

    def code(self, private: bool = False) -> dict:
        if not self.my_rods:
            raise AsynclnError("no Rod configured: set asyncln-rod=<node id>[@host:port]",
                               Code.BAD_PARAMETER)
        with self.node.lock:
            terms = dict(self.node.terms)
        rods = tuple(self._vouched_key(replace(
            r, addresses=r.addresses or self._announced(r.node_id),
            onion_key=terms[r.node_id].onion_key if r.node_id in terms else None,
            onion_key_sig=terms[r.node_id].onion_key_sig if r.node_id in terms else None))
            for r in self.config.rods)
        if private:  # no node id, not even in the Rods' addresses' gossip: only a payee key
            unsigned = codes.PaymentCode(None, rods, note.note_public_key(self.note_secret()),
                                         payee_key=payee.public_key(self.payee_secret()))
            signature = payee.sign(self.payee_secret(), unsigned.signed_message().encode())
        else:
            unsigned = codes.PaymentCode(self.node.node_id, rods,
                                         note.note_public_key(self.note_secret()))
            signature = self.node.rpc.call("signmessage",
                                           {"message": unsigned.signed_message()})["zbase"]
        try:
            text = replace(unsigned, signature=signature).encode()
        except ValueError as e:
            raise AsynclnError(f"cannot make a payment code from asyncln-rod: {e}",
                               Code.BAD_PARAMETER)
        return {"code": text, **({"payee_key": unsigned.payee_key} if private
                                 else {"node_id": self.node.node_id}),
                "note_key": unsigned.note_key,
                "rods": [{"id": r.node_id, "addresses": list(r.addresses),
                          **({"onion_key": r.onion_key} if r.onion_key else {})} for r in rods]}

    def _announced(self, node_id: str) -> Tuple[str, ...]:
        nodes = self.node.rpc.call("listnodes", {"id": node_id})["nodes"]
        return tuple((f"[{a['address']}]:{a['port']}" if a.get("type") == "ipv6"
                      else f"{a['address']}:{a['port']}")
                     for n in nodes for a in n.get("addresses", [])
                     if a.get("type") in ("ipv4", "ipv6", "dns", "torv3"))

    def rods_json(self) -> list:
        return [{"id": r, "level": s.level, "max_invoices": s.max_invoices}
                for r, s in sorted(self.levels.items())]

    def depositors_json(self) -> list:
        """As a Rod: what each depositor has here."""
        with self.node.lock:
            return [{"id": d, "level": self.rod.level(d), "notes": len(self.rod.notes_for(d))}
                    for d in self.rod.depositors()]

    # --- A: the payer ------------------------------------------------------------

    def fetch(self, code_text: str, amount_msat: int, note_text: Optional[str]) -> dict:
        """Runs on its own thread: asks the code's Rods in turn for one invoice."""
        paycode = self.verified(code_text)
        if note_text is not None:  # refuse a bad note before a Rod hands out an invoice
            sealed_note(note_text, paycode.note_key, "00" * 32)
        errors, last_code = [], Code.NO_ANSWER
        deadline = time.monotonic() + FETCH_SECONDS
        recipient = paycode.node_id or paycode.payee_key
        for my_rod in paycode.rods[:MAX_RODS_TRIED]:
            if time.monotonic() >= deadline:
                break
            try:
                answer = self._ask_rod(my_rod, recipient, amount_msat, deadline,
                                       private=paycode.payee_key is not None)
            except AsynclnError as e:
                if e.code not in NEXT_ROD_HELPS:
                    raise
                errors.append(str(e))
                last_code = e.code
                continue
            if paycode.payee_key is None:
                invoice = self._check(answer.bolt11, paycode.node_id, amount_msat,
                                      my_rod.node_id)
                out = {"bolt11": answer.bolt11, "payment_hash": invoice.payment_hash,
                       "amount_msat": invoice.amount_msat, "recipient": paycode.node_id}
            else:
                offer = self._check_offer(answer.offer, paycode.payee_key, my_rod.node_id)
                out = {"offer": answer.offer, "payment_hash": offer.payment_hash,
                       "amount_msat": amount_msat, "payee_key": paycode.payee_key}
            out.update(rod=my_rod.node_id, note_sent=False)
            self.node.remember_fetched(out["payment_hash"], my_rod.node_id, paycode.note_key)
            if note_text is not None:
                sealed = sealed_note(note_text, paycode.note_key, out["payment_hash"])
                out.update(self._leave_note(my_rod.node_id, messages.Note(
                    recipient, out["payment_hash"], sealed.hex(), paycode.payee_key is not None)))
            return out
        raise AsynclnError(f"no Rod could serve: {'; '.join(errors)}", last_code)

    def _leave_note(self, my_rod: str, msg: messages.Note) -> dict:
        """``note_sent`` true only when the Rod answers that it stored the note."""
        try:
            answer = self.ask(my_rod, ("note", msg.payment_hash), msg, NOTE_SECONDS)
        except AsynclnError as e:
            return {"note_sent": False, "note_error": str(e)}
        if not answer.stored:
            return {"note_sent": False, "note_error": f"the Rod refused the note: {answer.reason}"}
        return {"note_sent": True}

    def verified(self, code_text: str) -> codes.PaymentCode:
        try:
            paycode = codes.PaymentCode.decode(code_text)
        except ValueError as e:
            raise AsynclnError(f"not a payment code: {e}", Code.BAD_CODE)
        if paycode.payee_key is not None:
            if not payee.verify(paycode.payee_key, paycode.signature,
                                paycode.signed_message().encode()):
                raise AsynclnError("the code is not signed by the payee key it names",
                                   Code.BAD_CODE)
            return self._keep_rod_keys(paycode)
        # Checked here, never by checkmessage: a crafted signature aborts lightningd (signature.py).
        if not signed_by(paycode.signed_message(), paycode.signature, paycode.node_id):
            raise AsynclnError("the code is not signed by the node it names", Code.BAD_CODE)
        return self._keep_rod_keys(paycode)

    def _keep_rod_keys(self, paycode: codes.PaymentCode) -> codes.PaymentCode:
        for rod_named in paycode.rods:
            if rod_named.onion_key and self._vouched(rod_named):
                with self.node.lock:
                    self.rod_keys[rod_named.node_id] = rod_named.onion_key
        return paycode

    def _vouched_key(self, rod_named: codes.Rod) -> codes.Rod:
        """A Rod's onion key goes in our code only with the Rod's valid signature over it:
        payers would ignore it anyway, and an older payer would hand the signature to
        checkmessage."""
        if rod_named.onion_key and self._vouched(rod_named):
            return rod_named
        return replace(rod_named, onion_key=None, onion_key_sig=None)

    def _vouched(self, rod_named: codes.Rod) -> bool:
        """The Rod's own node key signed its onion key: B's signature alone is not enough."""
        return signed_by(onion.key_statement(rod_named.onion_key),
                         rod_named.onion_key_sig or "", rod_named.node_id)

    def _ask_rod(self, my_rod: codes.Rod, recipient_id: str, amount_msat: int,
                 deadline: float, private: bool = False) -> messages.InvoiceResponse:
        self.reach(my_rod)
        request_id = os.urandom(8).hex()
        answer = self.ask(my_rod.node_id, ("invoice", request_id), messages.InvoiceRequest(
            request_id, recipient_id, amount_msat, private), deadline - time.monotonic())
        if answer.error_code is not None:
            raise AsynclnError(f"the Rod refused: {answer.error}", peer_code(answer.error_code))
        if (answer.offer is not None) != private:
            raise AsynclnError("the Rod answered with the wrong kind of offer",
                               Code.INVOICE_MISMATCH)
        return answer

    def _used(self, payment_hash: str) -> set:
        """Hashes we fetched or paid before, and this one if lightningd ever sent to it."""
        with self.node.lock:
            used = set(self.node.pays) | set(self.node.fetched)
        if self.node.rpc.call("listsendpays", {"payment_hash": payment_hash})["payments"]:
            used.add(payment_hash)
        return used

    def _check_offer(self, raw: str, payee_key: str, rod_id: str) -> payee.PrivateOffer:
        """Signed by the code's payee key for this Rod, unexpired, and a hash never used."""
        try:
            offer = payee.PrivateOffer.decode(bytes.fromhex(raw))
        except (ValueError, DecodeError) as e:
            raise AsynclnError(f"the Rod's private offer is unreadable: {e}",
                               Code.INVOICE_MISMATCH)
        problem = payee.check_offer(offer, payee_key, rod_id, int(time.time()),
                                    self._used(offer.payment_hash))
        if problem:
            raise AsynclnError(f"the Rod's private offer is refused: {problem}",
                               Code.HASH_REUSED if "reuses" in problem else Code.INVOICE_MISMATCH)
        return offer

    def reach(self, my_rod: codes.Rod) -> None:
        """Connect to a Rod that is not our peer, by the code's addresses, then by gossip."""
        if my_rod.node_id in self.node.connected_peers():
            return
        errors = []
        addresses = my_rod.addresses[:MAX_ADDRESSES_TRIED]
        for target in [f"{my_rod.node_id}@{a}" for a in addresses] + [my_rod.node_id]:
            try:
                self.node.rpc.call("connect", {"id": target})
                return
            except RpcError as e:
                errors.append(rpc_message(e))
        raise AsynclnError(f"cannot reach the Rod {my_rod.node_id}: {errors[-1]}", Code.NO_ANSWER)

    def _check(self, bolt11: str, recipient_id: str, amount_msat: int,
               rod_id: str) -> payer.Invoice:
        try:
            decoded = self.node.rpc.call("decode", {"string": bolt11})
        except RpcError as e:
            raise AsynclnError(f"the Rod's invoice does not decode: {rpc_message(e)}",
                               Code.INVOICE_MISMATCH)
        invoice = payer.check_fetched(decoded, recipient_id, amount_msat, int(time.time()),
                                      bolt11, self._used(decoded.get("payment_hash", "")),
                                      rod_id=rod_id)
        return invoice

    def ask(self, peer: str, key: Tuple, msg, timeout: float = ANSWER_SECONDS) -> object:
        """Send ``msg`` and wait for the answer filed under ``key`` from that same peer."""
        timeout = max(0.0, min(timeout, ANSWER_SECONDS))
        slot: queue.Queue = queue.Queue(1)
        with self._slots_lock:
            if key in self._slots:
                raise AsynclnError("already waiting for an answer to the same request",
                                   Code.BAD_PARAMETER)
            self._slots[key] = (peer, slot)
        try:
            if not self.node.send(peer, msg):
                raise AsynclnError(f"cannot send to {peer}", Code.NO_ANSWER)
            return slot.get(timeout=timeout)
        except queue.Empty:
            raise AsynclnError(f"{peer} did not answer within {timeout:.0f}s", Code.NO_ANSWER)
        finally:
            with self._slots_lock:
                self._slots.pop(key, None)

    def answered(self, key: Tuple, peer: str, answer, unasked_level: str = "info") -> None:
        """File ``answer`` for whoever waits on ``key`` from ``peer``; log anything else at
        ``unasked_level`` (debug for LSPS responses: another LSPS plugin may have asked)."""
        with self._slots_lock:
            waiting = self._slots.get(key)
        if waiting is None or waiting[0] != peer:
            self.node.log(f"ignoring an unasked-for answer from {peer}", level=unasked_level)
            return
        try:
            waiting[1].put_nowait(answer)
        except queue.Full:
            pass  # a duplicate answer


def peer_code(number: Optional[int]) -> Code:
    """A peer's refusal keeps its asyncln code; one we do not know becomes NO_ANSWER."""
    return Code(number) if number in {int(c) for c in Code} else Code.NO_ANSWER


def sealed_note(text: str, note_key: str, payment_hash: str) -> bytes:
    try:
        return note.seal(text, note_key, payment_hash)
    except note.NoteError as e:
        raise AsynclnError(f"cannot send this note: {e}", Code.NOTE_REFUSED)


def with_offer(item: rod.Deposited, offer_hex: Optional[str]):
    """A deposited invoice with its private offer, if the offer is for that very payment."""
    if offer_hex is None:
        return item
    try:
        offer = payee.PrivateOffer.decode(bytes.fromhex(offer_hex))
    except (ValueError, DecodeError) as e:
        return f"{item.payment_hash[:16]}: unreadable private offer: {e}"
    if (offer.payment_hash, offer.expires_at) != (item.payment_hash, item.expires_at) \
            or item.amount_msat is not None:
        return f"{item.payment_hash[:16]}: the private offer is not for this amountless invoice"
    return replace(item, offer=offer_hex)

"""The payer's shell: pays through a holding node with :mod:`payer`'s decisions.

Builds and sends the payment's onion (``getroutes``, ``createonion``,
``sendonion``), keeps each ``Pay`` in memory and the datastore, settles open
payments from lightningd's own records, and asks the holding node to cancel.
"""

import time
from dataclasses import replace
from typing import List, Optional, Tuple

from pyln.client import RpcError

from . import messages, onion, payee, payer
from .code import CODE_PREFIX
from .errors import AsynclnError, Code
from .lightningd import first_route, next_attempt_ids, outgoing_htlc_hashes, rpc_message
from .port import ROUTE_LAYERS, int_param
from .rod_shell import peer_code
from .states import PAY_OPEN

TERMS_SECONDS = 10         # longest an RPC waits for a just-connected peer's info


def pay_json(pay: payer.Pay) -> dict:
    return {k: v for k, v in pay.to_json().items() if v is not None}


class PayerShell:
    """The payer's RPCs and bookkeeping, over the shared :class:`Port`."""

    def save_pay(self, pay: payer.Pay, durable: bool = True) -> None:
        """Memory at once; the datastore now (``durable``) or from the worker."""
        with self.lock:
            before = self.pays.get(pay.payment_hash)
            self.pays[pay.payment_hash] = pay
        if before is None or before.status != pay.status:
            reason = f", reason: {pay.reason}" if pay.reason else ""
            self.log(f"payment {pay.payment_hash}: {pay.status.value}, {pay.amount_msat} msat "
                     f"through {pay.trampoline}{reason}")
        if durable:
            self.store.put("pay", pay.payment_hash, pay.to_json())
        else:
            self.submit(lambda: self.store.put("pay", pay.payment_hash,
                                               self.pays[pay.payment_hash].to_json()))

    def reconcile_pays(self) -> None:
        with self.lock:
            open_pays = [p for p in self.pays.values()
                         if p.status in PAY_OPEN and p.payment_hash not in self.paying]
        if not open_pays:
            return
        htlcs = outgoing_htlc_hashes(self.rpc.call("listpeerchannels")["channels"])
        for pay in open_pays:
            parts = self.rpc.call("listsendpays", {"payment_hash": pay.payment_hash})["payments"]
            with self.lock:
                if self.pays.get(pay.payment_hash) is not pay:
                    continue  # a notification moved it meanwhile
                updated = payer.reconcile(pay, parts, pay.payment_hash in htlcs, self.relay.height)
            if updated:
                self.save_pay(updated)

    def pay(self, invstring: str, trampoline: Optional[str], maxfee_msat, max_hold_blocks,
            amount_msat=None, note: Optional[str] = None, clear=False,
            holder_terms: Optional[Tuple[int, int, int]] = None) -> dict:
        """Pay a BOLT11 invoice, or a payment code: fetch an invoice from its Rod, then pay it.

        ``holder_terms``: the terms a holder's refusal asked for (retry_with_terms).
        """
        amount = None if amount_msat is None else int_param(amount_msat, "amount_msat")
        fetched = None
        if invstring.lower().startswith(CODE_PREFIX):
            if amount is None:
                raise AsynclnError("paying a code needs amount_msat", Code.BAD_PARAMETER)
            fetched = self.rods.fetch(invstring, amount, note)
            invstring = fetched.get("bolt11", "")
        elif note is not None:
            raise AsynclnError("a note needs a payment code (it is encrypted to the code's key)",
                               Code.NOTE_REFUSED)
        now = int(time.time())
        offer = None
        if fetched and "offer" in fetched:  # a private code: we never learn the recipient
            offer = payee.PrivateOffer.decode(bytes.fromhex(fetched["offer"]))
            invoice = payer.private_invoice(offer, fetched["payee_key"], amount)
            self.await_terms(fetched["rod"])  # the tail is for the Rod: we need its terms
        else:
            try:
                decoded = self.rpc.call("decode", {"string": invstring})
            except RpcError as e:
                raise AsynclnError(f"cannot decode invstring: {rpc_message(e)}",
                                   Code.INVOICE_UNUSABLE)
            invoice = payer.check_invoice(decoded, now, invstring, amount)
        invoice = payer.committed(invoice, self.commit_keys.get(invoice.payment_hash))
        with self.lock:
            existing = self.pays.get(invoice.payment_hash)
            payer.may_pay_again(existing)
            if invoice.payment_hash in self.paying:
                raise AsynclnError("this invoice is already being paid", Code.PAYMENT_EXISTS)
            self.paying.add(invoice.payment_hash)
            terms = dict(self.terms)
        try:
            result = self._pay(invoice, existing, terms, trampoline, maxfee_msat, max_hold_blocks,
                               now, bool(clear), self.fetched.get(invoice.payment_hash), offer,
                               holder_terms)
            if fetched:
                result.update(rod=fetched["rod"], note_sent=fetched["note_sent"])
            return result
        finally:
            with self.lock:
                self.paying.discard(invoice.payment_hash)

    def _pay(self, invoice, existing, terms, trampoline, maxfee_msat, max_hold_blocks, now,
             clear=False, rod=None, offer=None, holder_terms=None) -> dict:
        maxfee = payer.default_maxfee(invoice.amount_msat) if maxfee_msat is None else int_param(maxfee_msat, "maxfee_msat")
        try:
            trampoline, info = payer.choose_trampoline(
                trampoline, invoice.destination, terms, set(self.asyncln_peers()),
                invoice.amount_msat, maxfee)
        except AsynclnError as e:
            if e.code == Code.TRAMPOLINE_TERMS_UNKNOWN and trampoline:
                self.send(trampoline, messages.QueryInfo())
            raise
        if holder_terms is not None:
            info = payer.with_terms(info, holder_terms)
        hold_for = payer.hold_blocks(None if max_hold_blocks is None else int_param(max_hold_blocks, "max_hold_blocks"),
                                     info, invoice, now)
        final_cltv = payer.final_cltv_to_trampoline(invoice, hold_for, info, holder_terms)
        path = self.route_to(trampoline, invoice.amount_msat + maxfee, maxfee, final_cltv)
        to_trampoline = path[0]["amount_out_msat"] - path[-1]["amount_out_msat"]
        # Reports only reach a connected peer: ask for them only when S is ours.
        report_to = self.node_id if len(path) == 1 else None
        version = 1 if clear or not info.onion_key else 2
        if offer is not None and version != 2:
            raise AsynclnError("a private offer needs a holder that takes asyncln onions",
                               Code.NO_TRAMPOLINE)
        tail = offer.tail if offer is not None else None
        rod_terms = terms.get(rod) if rod and rod != trampoline and version == 2 else None
        if rod_terms is not None and not rod_terms.onion_key and rod in self.rods.rod_keys:
            rod_terms = replace(rod_terms, onion_key=self.rods.rod_keys[rod])  # from its code
        packet = None
        if rod_terms is not None and rod_terms.onion_key and rod_terms.relay:
            # A chain: S (ours) holds for R (the payee's Rod), R holds for the recipient.
            budget = (maxfee - to_trampoline - rod_terms.fee(invoice.amount_msat)
                      - info.fee(invoice.amount_msat + maxfee))
            if budget < 0:
                raise AsynclnError(f"maxfee_msat {maxfee} does not cover both holders' fees",
                                   Code.MAXFEE_TOO_LOW)
            layers, leg = payer.chain_layers(invoice, (trampoline, info), (rod, rod_terms),
                                             hold_for, budget, report_to, tail)
            path = self.route_to(trampoline, leg.amount_in_msat, maxfee, leg.cltv_delta_in)
            packet, _ = onion.build([(info.onion_key, layers[0]), (rod_terms.onion_key, layers[1])],
                                    invoice.payment_hash)
        else:
            # A private offer names no recipient to estimate a route to, and its payment is
            # not retried with new terms: its Rod gets what the cap leaves, as before.
            budget = (maxfee if offer is not None else payer.routing_budget(
                self.estimate_route(trampoline, invoice, maxfee), invoice.amount_msat))
            amount = payer.trampoline_amount(invoice, maxfee, to_trampoline, info, budget)
            if amount != path[-1]["amount_out_msat"]:
                path = self.route_to(trampoline, amount, maxfee, final_cltv)
            if tail is not None and trampoline != rod:
                raise AsynclnError("pay a private offer through its Rod, or through a holder "
                                   "that knows the Rod's terms", Code.NO_TRAMPOLINE)
            if version == 2:
                last = (payer.final_layer(invoice, hold_for, report_to) if tail is None
                        else payer.tail_layer(invoice, hold_for, tail, report_to))
                packet, _ = onion.build([(info.onion_key, last)], invoice.payment_hash)
        height = self.rpc.getinfo()["blockheight"]
        hops, first_hop, cltv_expiry = payer.plan(invoice, path, height, hold_for, report_to,
                                                 maxfee_msat=maxfee, packet=packet)
        made = self.rpc.call("createonion", {"hops": hops, "assocdata": invoice.payment_hash})
        parts = self.rpc.call("listsendpays", {"payment_hash": invoice.payment_hash})["payments"]
        groupid, partid = next_attempt_ids(parts)
        fields = dict(payment_hash=invoice.payment_hash, bolt11=invoice.bolt11,
                      destination=invoice.destination, trampoline=trampoline,
                      amount_msat=invoice.amount_msat, amount_sent_msat=first_hop["amount_msat"],
                      cltv_expiry=cltv_expiry, max_hold_blocks=hold_for, created_at=now,
                      trampoline_index=len(hops), partid=partid, groupid=groupid,
                      report=report_to is not None, version=version,
                      rod=rod if rod_terms is not None or tail is not None else None,
                      payee_signature=offer.signature if offer is not None else None,
                      offer_expires_at=offer.expires_at if offer is not None else None,
                      maxfee_msat=maxfee, retried_terms=holder_terms,
                      terms_retries=(existing.terms_retries + 1 if existing and holder_terms
                                     else 0))
        pay = payer.restart(existing, **fields) if existing else payer.Pay(**fields)
        self.save_pay(pay)
        try:
            # No total_amount_msat: lightningd then lets a retry join the group of
            # a part a crash left pending with no HTLC (CLN-FACTS, #3916).
            named = {} if tail is not None else {  # a private offer names no recipient
                "bolt11": invoice.bolt11, "destination": invoice.destination}
            self.rpc.call("sendonion", {
                "onion": made["onion"], "first_hop": first_hop,
                "payment_hash": invoice.payment_hash, "shared_secrets": made["shared_secrets"],
                "partid": partid, "groupid": groupid, "label": "asyncln-pay",
                "amount_msat": invoice.amount_msat, **named})
        except RpcError as e:
            failed = payer.on_failure(pay, partid, groupid, None, None, rpc_message(e))
            if failed:
                self.save_pay(failed)
            raise AsynclnError(f"sendonion failed: {rpc_message(e)}", Code.SEND_FAILED)
        return pay_json(self.pays[invoice.payment_hash])

    def await_terms(self, peer: str, seconds: float = TERMS_SECONDS) -> None:
        """A peer we just connected to sends its info shortly after: wait for it (RPC thread)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                if peer in self.terms:
                    return
            time.sleep(0.1)

    def estimate_route(self, trampoline: str, invoice, maxfee_msat: int) -> Optional[int]:
        """The fee of the holder's route to the recipient as our own gossip shows it, or None.

        The recipient is likely offline, and gossip then shows its channels
        disabled: a layer enables them, and adds the invoice's route hints for
        a recipient with private channels. The holder's own channels are free
        (``auto.sourcefree``), as they are when it pays.
        """
        try:
            ends = self.rpc.call("listchannels", {"destination": invoice.destination})["channels"]
        except RpcError:
            ends = []
        enable = [f"{c['short_channel_id']}/{c['direction']}" for c in ends
                  if "short_channel_id" in c and "direction" in c]
        layer = self.route_layer(f"asyncln-estimate-{invoice.payment_hash}", invoice.destination,
                                 invoice.route_hints, enable)
        try:
            answer = self.rpc.call("getroutes", {
                "source": trampoline, "destination": invoice.destination,
                "amount_msat": invoice.amount_msat,
                "layers": ROUTE_LAYERS + ([layer] if layer else []),
                "maxfee_msat": maxfee_msat, "final_cltv": invoice.min_final_cltv_expiry,
                "maxparts": 1})
        except RpcError as e:
            self.log(f"no estimate of {trampoline}'s route to {invoice.destination}: "
                     f"{rpc_message(e)}; a default routing budget", level="debug")
            return None
        finally:
            if layer:
                self._try_rpc("askrene-remove-layer", {"layer": layer})
        return payer.route_estimate(answer, invoice.amount_msat)

    def retry_with_terms(self, pay: payer.Pay, terms: Tuple[int, int, int]) -> None:
        """Worker: pay again, by itself, after the holder refused with new terms (#836).

        Within the payment's own cap; an expired invoice or a cap the terms
        exceed leaves the payment failed, with the refusal's reason.
        """
        self.log(f"payment {pay.payment_hash}: {pay.trampoline} asks fee_base_msat={terms[0]} "
                 f"fee_ppm={terms[1]} cltv_expiry_delta={terms[2]}; paying again with them")
        try:
            self.pay(pay.bolt11, pay.trampoline, pay.maxfee_msat, pay.max_hold_blocks,
                     amount_msat=pay.amount_msat, clear=pay.version == 1, holder_terms=terms)
        except AsynclnError as e:
            self.log(f"payment {pay.payment_hash}: not paid again with the new terms: {e}",
                     level="info")

    def route_to(self, trampoline, amount_msat, maxfee_msat, final_cltv) -> List[dict]:
        try:
            return first_route(self.rpc.call("getroutes", {
                "source": self.node_id, "destination": trampoline, "amount_msat": amount_msat,
                "layers": ROUTE_LAYERS, "maxfee_msat": maxfee_msat, "final_cltv": final_cltv,
                "maxparts": 1}))
        except RpcError as e:
            raise AsynclnError(f"no route to the trampoline: {rpc_message(e)}", Code.SEND_FAILED)

    def fetchinvoice(self, code_text: str, amount_msat, note: Optional[str]) -> dict:
        return self.rods.fetch(code_text, int_param(amount_msat, "amount_msat"), note)

    def listpays(self, payment_hash: Optional[str] = None) -> dict:
        with self.lock:
            pays = [p for p in self.pays.values() if payment_hash in (None, p.payment_hash)]
            return {"pays": [pay_json(p) for p in sorted(pays, key=lambda p: p.created_at)]}

    def cancel_as_payer(self, pay: payer.Pay) -> dict:
        """Runs on its own thread: waits for the holding node's answer."""
        payer.may_cancel(pay)
        answer = self.rods.ask(pay.trampoline, ("cancel", pay.payment_hash),
                               messages.CancelRequest(pay.payment_hash))
        if not answer.accepted:
            raise AsynclnError(f"the holding node refused: {answer.reason}",
                               peer_code(answer.error_code))
        with self.lock:  # read and write under one lock: a notification may land meanwhile
            updated = payer.cancelled(self.pays[pay.payment_hash])
            if updated:
                self.pays[pay.payment_hash] = updated
        if updated:
            self.submit(lambda: self.store.put("pay", pay.payment_hash,
                                               self.pays[pay.payment_hash].to_json()))
        return pay_json(self.pays[pay.payment_hash])

    def remember_fetched(self, payment_hash: str, rod: str, note_key: str) -> None:
        with self.lock:
            self.fetched[payment_hash] = rod
            self.commit_keys[payment_hash] = note_key
        self.store.put("fetched", payment_hash, {"fetched_at": int(time.time()), "rod": rod,
                                                 "note_key": note_key})

"""Shared builders for tests: valid records, incoming HTLCs and payloads."""

import hashlib

from coincurve import PrivateKey
from pyln.client.plugin import RequestState

from asyncln import signature
from asyncln.hold import Incoming
from asyncln.record import FinalPayload, TrampolineRecord
from asyncln.store import PAGED, decode_page


def node_id(n: int) -> str:
    """A real secp256k1 point: records refuse keys that are not on the curve."""
    return PrivateKey(bytes([n]) * 32).public_key.format().hex()


def signmessage(node: str, message: str) -> str:
    """What ``signmessage``'s ``zbase`` is at the node ``node_id(n)``: a real signature."""
    n = next(n for n in range(1, 256) if node_id(n) == node)
    return signature.sign(bytes([n]) * 32, message)


PAYER = node_id(1)
RECIPIENT = node_id(2)
OTHER = node_id(3)
PREIMAGE = "11" * 32
PAYMENT_HASH = hashlib.sha256(bytes.fromhex(PREIMAGE)).hexdigest()


def record(amount=100_000, final_cltv=18, please_poll=True, max_hold=None, node=RECIPIENT,
           report_to=PAYER):
    return TrampolineRecord(next_node=node, amount_msat=amount, final_cltv_delta=final_cltv,
                            payment_secret="22" * 32, total_msat=amount,
                            please_poll=please_poll, max_hold_blocks=max_hold, report_to=report_to)


CHANNEL_ID = "cc" * 32


def incoming(amount=110_000, cltv_expiry=1500, htlc_id=0, channel="103x1x0", peer=PAYER,
             secret="33" * 32, channel_id=CHANNEL_ID):
    """By default on one channel, whatever scid or alias lightningd names it by."""
    return Incoming(channel=channel, htlc_id=htlc_id, amount_msat=amount, cltv_expiry=cltv_expiry,
                    peer=peer, shared_secret=secret, channel_id=channel_id)


def payload(rec, amount=110_000, cltv_expiry=1500) -> bytes:
    return FinalPayload(amount, cltv_expiry, rec).encode()


def direct_route(rec, delay=None):
    """A one-hop sendpay route straight to the recipient."""
    return [{"id": rec.next_node, "channel": "105x1x0", "direction": 0,
             "amount_msat": rec.amount_msat,
             "delay": rec.final_cltv_delta if delay is None else delay}]


class Request:
    """An htlc_accepted request lightningd waits on; like pyln's, it takes one answer only."""

    def __init__(self):
        self.results = []
        self.state = RequestState.PENDING

    @property
    def result(self):
        return self.results[-1] if self.results else None

    def set_result(self, result):
        if self.state != RequestState.PENDING:
            raise ValueError("Cannot set the result of a request that is not pending")
        self.results.append(result)
        self.state = RequestState.FINISHED


def channel(channel_id=CHANNEL_ID, scid="103x1x0", alias="1x0x0"):
    """A listpeerchannels entry: the names lightningd gives one channel."""
    return {"channel_id": channel_id, "short_channel_id": scid, "alias": {"local": alias}}


def stored_held(strings, payment_hash: str):
    """The held record of ``payment_hash`` in a stand-in's datastore ({key tuple: string}),
    where asyncln.store keeps it: in one of its pages (named with the node's secret)."""
    pages = (decode_page(text) for key, text in list(strings.items()) if key[:2] == ("asyncln", PAGED["held"]))
    return next((page[payment_hash] for page in pages if payment_hash in page), None)


def written_held(calls, payment_hash: str):
    """Each version of ``payment_hash``'s held record a RecordingRpc saw written, in order."""
    pages = (decode_page(p["string"]) for m, p in calls
             if m == "datastore" and p["key"][1] == PAGED["held"])
    return [page[payment_hash] for page in pages if payment_hash in page]

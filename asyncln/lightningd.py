"""Judging lightningd's answers: one adapter shared by the payer and the holding node.

Pure functions over the JSON that ``getroutes``, ``listsendpays`` and
``listpeerchannels`` return, so both roles read lightningd the same way and
tests can feed them recorded answers.
"""

from dataclasses import dataclass
from typing import Iterable, List, Optional, Set, Tuple, Union

from . import failures, sphinx
from .wire import DecodeError


@dataclass(frozen=True)
class Succeeded:
    preimage: str


@dataclass(frozen=True)
class Failed:
    reason: str
    refused_by: Optional[str] = None  # the node that sent a permanent failure
    # (erring_index, failure message) of a #836 failure, which an asyncln holder sends
    holder_failure: Optional[Tuple[int, str]] = None


@dataclass(frozen=True)
class InFlight:
    """Our part is pending and an HTLC with its hash sits in one of our channels."""


@dataclass(frozen=True)
class Lost:
    """lightningd says pending, but no channel holds the HTLC (CLN #3916 after a crash)."""


Outcome = Union[Succeeded, Failed, InFlight, Lost]


def judge_attempt(parts: Iterable[dict], partid: Optional[int], htlc_out: bool) -> Outcome:
    """What became of attempt ``partid`` (None: any part, for records from before partids).

    A complete part of any attempt wins: a preimage is proof whoever got it.
    """
    parts = list(parts)
    for part in parts:
        if part.get("status") == "complete" and part.get("payment_preimage"):
            return Succeeded(part["payment_preimage"])
    ours = [p for p in parts if partid is None or p.get("partid", 0) == partid]
    if any(p.get("status") == "pending" for p in ours):
        return InFlight() if htlc_out else Lost()
    if ours:
        return Failed("the attempt failed")
    return Failed("lightningd has no record of the attempt")


def judge_failure(data: dict, message: str) -> Failed:
    """A failed part's details, as ``sendpay_failure`` gives them, or ``waitsendpay`` on a part
    that already failed (a lost notification): one reading for both."""
    failcode = data.get("failcode")
    failcode = failcode if isinstance(failcode, int) else 0
    refused_by = data.get("erring_node") if failcode & failures.PERM else None
    if failcode in failures.TRAMPOLINE_FAILURES:
        # lightningd keeps no raw_message for a part that failed earlier: then the code alone.
        return Failed(failures.TRAMPOLINE_FAILURES[failcode], refused_by,
                      (data.get("erring_index"), data.get("raw_message") or f"{failcode:04x}"))
    return Failed(message, refused_by)


def onion_failure(data: dict, saved: Optional[dict]) -> dict:
    """``data`` completed from the error onion lightningd kept, decoded with our secrets.

    S sends to a next holder with ``sendonion`` and keeps the onion's shared
    secrets itself (``saved``: partid, shared_secrets, destination), so
    lightningd keeps the reply undecoded: ``onionreply`` in
    ``sendpay_failure``, ``erroronion`` in ``listsendpays``, which outlives a
    lost notification. Decoded, it gives what lightningd would have:
    failcode, erring_index, raw_message, and erring_node at the destination.
    Anything else (no reply, another part, a reply no hop signed) is left as it was.
    """
    reply = data.get("onionreply") or data.get("erroronion")
    if (not isinstance(reply, str) or saved is None or "failcode" in data
            or (data.get("partid") or 0) != saved.get("partid")):
        return data
    try:
        secrets = [bytes.fromhex(s) for s in saved["shared_secrets"]]
        index, message = sphinx.decode_error(secrets, bytes.fromhex(reply))
    except (ValueError, TypeError, KeyError, DecodeError):
        return data
    if len(message) < 2:
        return data
    filled = {**data, "failcode": int.from_bytes(message[:2], "big"), "erring_index": index + 1,
              "raw_message": message.hex()}
    if index + 1 == len(secrets) and saved.get("destination"):
        filled["erring_node"] = saved["destination"]
    return filled


def failed_part(parts: Iterable[dict], partid: int) -> Optional[dict]:
    """Part ``partid`` if lightningd marked it failed."""
    return next((p for p in parts if p.get("partid", 0) == partid
                 and p.get("status") == "failed"), None)


def next_attempt_ids(parts: Iterable[dict], partid: Optional[int] = None) -> Tuple[int, int]:
    """(groupid, partid) for a new attempt that lightningd will accept.

    lightningd allows one pending group per hash: a part still pending (one
    we judged Lost) forces its group. The partid must be new within it.
    """
    parts = list(parts)
    pending = [p["groupid"] for p in parts if p.get("status") == "pending"]
    groupid = pending[0] if pending else max((p.get("groupid", 0) for p in parts), default=0) + 1
    used = max((p.get("partid", 0) for p in parts), default=0)
    return groupid, max(used + 1, partid or 1)


def outgoing_htlc_hashes(channels: Iterable[dict]) -> Set[str]:
    """Payment hashes of every HTLC we offered, in ``listpeerchannels`` channels."""
    return {h["payment_hash"] for c in channels for h in c.get("htlcs", ())
            if h.get("direction") == "out"}


def first_route(answer: dict) -> List[dict]:
    """The path of ``getroutes``'s first route; KeyError/IndexError if there is none."""
    return answer["routes"][0]["path"]


def sendpay_route(path: List[dict]) -> List[dict]:
    """A ``getroutes`` path as the hop list ``sendpay`` takes."""
    route = []
    for hop in path:
        scid, direction = hop["short_channel_id_dir"].split("/")
        route.append({"id": hop["node_id_out"], "channel": scid, "direction": int(direction),
                      "amount_msat": hop["amount_out_msat"], "delay": hop["cltv_out"]})
    return route


def msat(value) -> int:
    """An msat amount as lightningd prints it (int, or the older "123msat")."""
    return int(str(value).removesuffix("msat"))


# lightningd's PAY_ROUTE_TOO_EXPENSIVE: askrene says it for too much fee and too much delay.
ROUTE_TOO_EXPENSIVE = 206


def too_expensive(error) -> bool:
    """getroutes found routes, but none within maxfee_msat (not: none within maxdelay)."""
    payload = getattr(error, "error", None)
    return (isinstance(payload, dict) and payload.get("code") == ROUTE_TOO_EXPENSIVE
            and "cost" in str(payload.get("message", "")))


def rpc_message(error) -> str:
    """The human part of an RpcError (pyln), whatever shape its payload has."""
    payload = getattr(error, "error", None)
    if isinstance(payload, dict):
        return payload.get("message", str(error))
    return str(error)

"""bLIP-55 (LSPS5) webhooks, the LSP side: requests in, replies and notifications out, no I/O.

A phone wallet B cannot keep a connection to its LSP S. It registers webhooks
(HTTPS URLs of its notification delivery service) with ``lsps5.set_webhook``
over LSPS0 (bLIP-50: BOLT 8 message 37913, JSON-RPC 2.0). While B is offline
and S holds a payment for it, S POSTs a signed JSON-RPC notification to every
webhook, which ends as a push that wakes B. Specs: lightning/blips@ba7a34b
blip-0055.md and blip-0050.md; reference implementation: rust-lightning's
lightning-liquidity/src/lsps5 (cfee4b7).

Interface for the shell (asyncln/lsps0.py and plugin.py), kept stable:

* :func:`handle_request` takes one decoded request (``method``, ``params``)
  from client node ``client_id`` and returns a :class:`Reply`, or None for a
  method asyncln does not own (another plugin may answer it). The shell MUST:
  if ``reply.changed``, write :meth:`Registry.record` for the client to the
  datastore key ``["asyncln","lsps5",client_id]`` (None: delete the key), and
  only then send ``reply.result`` or ``reply.error`` with the request's id;
  then sign and POST ``reply.notifications``.
* :func:`notifications_for` turns an event (:class:`PaymentIncoming`,
  :class:`ExpirySoon`, :class:`PoolLow`) into the POSTs to make now, applying
  bLIP-55's per-method cooldown; the shell tells the registry about
  connections with :meth:`Registry.connected` / :meth:`Registry.disconnected`.
* To send a :class:`Notification` at time ``now``: ``ts = timestamp(now)``,
  ``body = body_bytes(n)``, ``sig`` = the node key's LSPS0 signature of
  ``message_to_sign(ts, body)``, then POST ``body`` to ``n.url`` with
  :func:`headers` ``(ts, sig)``, no redirects, and ignore the answer (bLIP-55:
  anything but 200 is merely unusual). Send the notifications of one client
  through one FIFO, in the order returned: bLIP-55 wants ``webhook_registered``
  to reach a webhook before anything else does.
* lightningd v26.06.6's ``signmessage`` cannot make ``sig``: it signs the raw
  JSON text of its parameter, escapes kept (``param_string``), so the body's
  ``"`` are signed as ``\\"`` and :func:`verify` (any bLIP-55 verifier) refuses
  the result. Checked on a real lightningd; see tests/vectors/lsps5-signatures.json
  and docs/PROTOCOL.md, "LSPS5 webhooks", "Signing". :func:`node_secret` (from
  the ``hsm_secret`` file, if the operator allows it) and :func:`sign` make a
  conformant one.
* At startup, :meth:`Registry.load` each stored record, passing the same
  ``allow_http_loopback`` as to :func:`handle_request` (a ValueError means a
  corrupt record, or a loopback webhook the configuration no longer allows:
  log it and skip it). Once a day, :meth:`Registry.prune`.
* A webhook's host name is checked here; the address it resolves to is the
  sender's to check with :func:`public_address` (a client must not make S
  POST into S's own network).
"""

import hashlib
import hmac
import ipaddress
import json
import math
import re
import string
import time
import unicodedata
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union, assert_never
from urllib.parse import urlsplit

from . import signature

PROTOCOL = 5                      # what lsps0.list_protocols lists
MAX_APP_NAME_BYTES = 64           # bLIP-55: app_name, UTF-8, escapes count as written
MAX_URL_CHARS = 1024              # bLIP-55: webhook, ASCII characters
DEFAULT_MAX_WEBHOOKS = 10         # per client: lightning-liquidity's default
COOLDOWN_SECONDS = 60.0           # same method, same client, client still away (as lightning-liquidity)
MIN_RESEND_SECONDS = 10.0         # never the same method sooner, even after a reconnect
REGISTERED_LIMIT = 10             # webhook_registered POSTs per client ...
REGISTERED_WINDOW_SECONDS = 3600.0  # ... per this window (each set_webhook of a new URL makes one)
RETENTION_SECONDS = 30 * 86400.0  # bLIP-55 wants >= 7 days after the last channel closed
EXPIRY_SOON_BLOCKS = 24           # bLIP-55: expiry_soon within 24 blocks of the timeout

SIGNED_PREFIX = "LSPS5: DO NOT SIGN THIS MESSAGE MANUALLY: LSP: At "


class ErrorCode(IntEnum):
    """JSON-RPC error codes on the LSPS0 wire (to the peer, not asyncln's RPC codes in errors.py)."""

    METHOD_NOT_FOUND = -32601       # an lsps5.* method asyncln does not know (LSPS0)
    INVALID_PARAMS = -32602         # LSPS0: data.unrecognized lists unknown parameter names
    TOO_LONG = 500                  # bLIP-55: app_name or webhook too long
    URL_PARSE_ERROR = 501           # bLIP-55: webhook is not a URL
    UNSUPPORTED_PROTOCOL = 502      # bLIP-55: not https (or, here, not a public host)
    TOO_MANY_WEBHOOKS = 503         # bLIP-55: data.max_webhooks
    SLOW_DOWN = 1002                # lightning-liquidity's code: too many new webhooks too fast
    NO_PRIOR_ACTIVITY = 1003        # lightning-liquidity's code: not a client of this LSP
    APP_NAME_NOT_FOUND = 1010       # bLIP-55: remove_webhook of an unknown app_name


class Method(str, Enum):
    """Webhook notification methods asyncln sends (bLIP-55, and one asyncln extension)."""

    WEBHOOK_REGISTERED = "lsps5.webhook_registered"
    PAYMENT_INCOMING = "lsps5.payment_incoming"
    EXPIRY_SOON = "lsps5.expiry_soon"
    POOL_LOW = "asyncln.pool_low"   # bLIP-55: other notifications must not use the lsps5. prefix


SET_WEBHOOK = "lsps5.set_webhook"
LIST_WEBHOOKS = "lsps5.list_webhooks"
REMOVE_WEBHOOK = "lsps5.remove_webhook"
LIST_PROTOCOLS = "lsps0.list_protocols"


# ---------------------------------------------------------------- state

@dataclass(frozen=True)
class Webhook:
    url: str
    created_at: float   # when this URL was set under its app_name (unix seconds)


@dataclass
class Client:
    """One client's webhooks (persisted) and its notification bookkeeping (memory only).

    Cooldowns are not persisted: after a restart a method may repeat once,
    which is cheaper than a datastore write on every notification.
    """

    webhooks: Dict[str, Webhook] = field(default_factory=dict)   # app_name -> webhook, in order
    last_active: float = 0.0                  # last change, connection or channel seen
    sent: Dict[str, float] = field(default_factory=dict)         # method -> sent, since the reset
    last_sent: Dict[str, float] = field(default_factory=dict)    # method -> sent, ever
    registered: List[float] = field(default_factory=list)        # webhook_registered times


class Registry:
    """Every client's webhooks, keyed by client node id (lower-case hex)."""

    def __init__(self, max_webhooks: int = DEFAULT_MAX_WEBHOOKS,
                 cooldown_seconds: float = COOLDOWN_SECONDS):
        if max_webhooks < 1:
            raise ValueError("max_webhooks must be at least 1")
        self.max_webhooks = max_webhooks
        self.cooldown_seconds = cooldown_seconds
        self.clients: Dict[str, Client] = {}
        self.online: Set[str] = set()

    def app_names(self, client_id: str) -> List[str]:
        client = self.clients.get(client_id)
        return list(client.webhooks) if client else []

    def record(self, client_id: str) -> Optional[dict]:
        """The datastore value for ``client_id``; None when nothing is left to keep (delete it)."""
        client = self.clients.get(client_id)
        if client is None or not client.webhooks:
            return None
        return {"webhooks": [{"app_name": name, "url": hook.url, "created_at": hook.created_at}
                             for name, hook in client.webhooks.items()],
                "last_active": client.last_active}

    def load(self, client_id: str, record: object, allow_http_loopback: bool = False) -> None:
        """Restore a record written by :meth:`record`; ValueError (nothing loaded) if corrupt.

        A webhook the running configuration would refuse (a loopback URL kept
        from a dev run) makes the record corrupt too.
        """
        if not isinstance(record, dict) or not isinstance(record.get("webhooks"), list):
            raise ValueError(f"lsps5 record for {client_id}: not an object with webhooks")
        last_active = _number(record.get("last_active"), "last_active")
        webhooks: Dict[str, Webhook] = {}
        for entry in record["webhooks"]:
            if not isinstance(entry, dict):
                raise ValueError(f"lsps5 record for {client_id}: webhook entry is not an object")
            name, url = entry.get("app_name"), entry.get("url")
            if _app_name_problem(name) or _url_problem(url, allow_http_loopback):
                raise ValueError(f"lsps5 record for {client_id}: bad webhook {name!r}: {url!r}")
            if name in webhooks:
                raise ValueError(f"lsps5 record for {client_id}: {name!r} twice")
            webhooks[name] = Webhook(url, _number(entry.get("created_at"), "created_at"))
        self.clients[client_id] = Client(webhooks=webhooks, last_active=last_active)

    def connected(self, client_id: str, now: float) -> None:
        """The client has a BOLT 8 connection: no notifications, and cooldowns start over.

        bLIP-55: the cooldown "should be reset once the client comes online
        and then goes offline".
        """
        self.online.add(client_id)
        self._reset(client_id, now)

    def disconnected(self, client_id: str, now: float) -> None:
        self.online.discard(client_id)
        self._reset(client_id, now)

    def _reset(self, client_id: str, now: float) -> None:
        client = self.clients.get(client_id)
        if client is not None:
            client.sent.clear()
            client.last_active = max(client.last_active, now)

    def prune(self, now: float, with_channels: Sequence[str]) -> List[str]:
        """Forget clients idle for :data:`RETENTION_SECONDS` with no channel; the keys to delete.

        A client with a channel counts as active now, so called daily this
        keeps webhooks for at least RETENTION - 1 day after the last channel
        closed (bLIP-55 wants 7 days). A client without webhooks (it removed
        them all) is kept only as long as its new-webhook rate limit matters.
        Returns the ids whose stored record the shell must delete.
        """
        for client_id in with_channels:
            if client_id in self.clients:
                self.clients[client_id].last_active = now
        stored = []
        for client_id, client in list(self.clients.items()):
            keep = RETENTION_SECONDS if client.webhooks else REGISTERED_WINDOW_SECONDS
            if client_id not in self.online and now - client.last_active > keep:
                del self.clients[client_id]
                if client.webhooks:
                    stored.append(client_id)
        return stored


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"lsps5 record: {name} is not a non-negative number")
    return float(value)


# ---------------------------------------------------------------- requests

@dataclass(frozen=True)
class Notification:
    """One POST to make: a JSON-RPC notification to ``url``."""

    client_id: str
    app_name: str
    url: str
    method: Method
    params: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """The answer to one request: exactly one of ``result`` and ``error`` is set.

    ``changed``: the client's stored record must be written before the answer
    is sent (bLIP-55: persist before responding). ``notifications`` go out
    after the answer.
    """

    result: Optional[dict] = None
    error: Optional[dict] = None
    changed: bool = False
    notifications: Tuple[Notification, ...] = ()


class _Refused(Exception):
    def __init__(self, code: ErrorCode, message: str, data: Optional[dict] = None):
        super().__init__(message)
        self.error = {"code": int(code), "message": message}
        if data is not None:
            self.error["data"] = data


def _invalid(message: str, unrecognized: Sequence[str] = ()) -> _Refused:
    return _Refused(ErrorCode.INVALID_PARAMS, f"Invalid params: {message}",
                    {"unrecognized": sorted(unrecognized)})


def handle_request(registry: Registry, client_id: str, method: str, params: object, now: float,
                   allow_http_loopback: bool = False, known_client: bool = True) -> Optional[Reply]:
    """Answer one request, or None when ``method`` is not asyncln's to answer.

    asyncln owns every ``lsps5.*`` method (an unknown one gets -32601) and
    ``lsps0.list_protocols`` (the shell calls this only when asyncln is the
    LSPS5 service). ``params`` is the request's ``params`` (None if absent).
    ``allow_http_loopback`` (a dev option) also accepts http:// and https://
    URLs on 127.0.0.0/8, ::1 and localhost. ``known_client``: the shell's
    judgement that the peer is a client (it has a channel with S); a stranger
    cannot make S store webhooks. A refused request changes nothing.
    """
    if not isinstance(method, str) or (method != LIST_PROTOCOLS and not method.startswith("lsps5.")):
        return None
    try:
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise _invalid("params must be an object (by name)")
        if method == LIST_PROTOCOLS:
            _names(params, set())
            return Reply(result={"protocols": [PROTOCOL]})
        if method == LIST_WEBHOOKS:
            _names(params, set())
            return Reply(result={"app_names": registry.app_names(client_id),
                                 "max_webhooks": registry.max_webhooks})
        if method == REMOVE_WEBHOOK:
            return _remove(registry, client_id, params, now)
        if method == SET_WEBHOOK:
            return _set(registry, client_id, params, now, allow_http_loopback, known_client)
        raise _Refused(ErrorCode.METHOD_NOT_FOUND, "Method not found")
    except _Refused as refused:
        return Reply(error=refused.error)


def _names(params: dict, known: Set[str], required: Sequence[str] = ()) -> None:
    unknown = [name for name in params if name not in known]
    if unknown:
        raise _invalid("unrecognized parameter(s)", unknown)
    missing = [name for name in required if name not in params]
    if missing:
        raise _invalid(f"missing {', '.join(missing)}")


def _string(params: dict, name: str) -> str:
    value = params[name]
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \\ud800 escape
        raise _invalid(f"{name} is not valid Unicode") from None
    return value


def _set(registry: Registry, client_id: str, params: dict, now: float,
         allow_http_loopback: bool, known_client: bool) -> Reply:
    _names(params, {"app_name", "webhook"}, ("app_name", "webhook"))
    app_name, url = _string(params, "app_name"), _string(params, "webhook")
    for problem in (_app_name_problem(app_name), _url_problem(url, allow_http_loopback)):
        if problem is not None:
            raise _Refused(*problem)
    client = registry.clients.get(client_id)
    existing = client.webhooks.get(app_name) if client else None
    if existing is not None and existing.url == url:
        return Reply(result={"num_webhooks": len(client.webhooks),
                             "max_webhooks": registry.max_webhooks, "no_change": True})
    if not known_client:
        raise _Refused(ErrorCode.NO_PRIOR_ACTIVITY,
                       "Request rejected: open a channel with this LSP first")
    count = len(client.webhooks) if client else 0
    if existing is None and count >= registry.max_webhooks:
        raise _Refused(ErrorCode.TOO_MANY_WEBHOOKS,
                       f"Too many webhooks: at most {registry.max_webhooks}",
                       {"max_webhooks": registry.max_webhooks})
    recent = [t for t in (client.registered if client else []) if now - t < REGISTERED_WINDOW_SECONDS]
    if len(recent) >= REGISTERED_LIMIT:
        raise _Refused(ErrorCode.SLOW_DOWN,
                       f"Slow down: at most {REGISTERED_LIMIT} new webhooks per "
                       f"{int(REGISTERED_WINDOW_SECONDS)} s")
    if client is None:
        client = registry.clients[client_id] = Client()
    client.registered = recent + [now]
    client.webhooks[app_name] = Webhook(url, now)
    client.last_active = max(client.last_active, now)
    registered = Notification(client_id, app_name, url, Method.WEBHOOK_REGISTERED)
    return Reply(result={"num_webhooks": len(client.webhooks),
                         "max_webhooks": registry.max_webhooks, "no_change": False},
                 changed=True, notifications=(registered,))


def _remove(registry: Registry, client_id: str, params: dict, now: float) -> Reply:
    _names(params, {"app_name"}, ("app_name",))
    app_name = _string(params, "app_name")
    client = registry.clients.get(client_id)
    if client is None or app_name not in client.webhooks:
        raise _Refused(ErrorCode.APP_NAME_NOT_FOUND, "App name not found")
    del client.webhooks[app_name]  # the Client stays: its new-webhook rate limit must outlive this
    client.last_active = max(client.last_active, now)
    return Reply(result={}, changed=True)


# ---------------------------------------------------------------- validation

_URL_CHARS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_NUMBER = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


def app_name_bytes(app_name: str) -> int:
    """app_name's length as bLIP-55 counts it: UTF-8 bytes of the JSON string, escapes as written.

    We see the decoded string, so we count its shortest JSON form (LSPS0:
    characters that need no escape must not be escaped); a control character
    counts as its escape.
    """
    return len(json.dumps(app_name, ensure_ascii=False)[1:-1].encode("utf-8"))


def _app_name_problem(app_name: object) -> Optional[Tuple[ErrorCode, str]]:
    if not isinstance(app_name, str):
        return ErrorCode.INVALID_PARAMS, "app_name must be a string"
    if app_name_bytes(app_name) > MAX_APP_NAME_BYTES:
        return ErrorCode.TOO_LONG, f"app_name is longer than {MAX_APP_NAME_BYTES} bytes"
    return None


def _url_problem(url: object, allow_http_loopback: bool) -> Optional[Tuple[ErrorCode, str]]:
    """Why ``url`` is not a webhook S will POST to; None if it is one.

    bLIP-55: at most 1024 ASCII characters, an RFC 1738 URL, https. asyncln
    also wants a host name or a public IP literal: a client must not point S
    at S's own machine or network (the dev option allows loopback, and http
    there).
    """
    if not isinstance(url, str):
        return ErrorCode.INVALID_PARAMS, "webhook must be a string"
    if len(url) > MAX_URL_CHARS:
        return ErrorCode.TOO_LONG, f"webhook is longer than {MAX_URL_CHARS} characters"
    parse_error = ErrorCode.URL_PARSE_ERROR, "webhook is not a URL (RFC 1738)"
    if (not url.isascii() or not _URL_CHARS.issuperset(url) or _BAD_ESCAPE.search(url)
            or not _SCHEME.match(url)):
        return parse_error
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port  # ValueError: a port not in 0..65535
    except ValueError:
        return parse_error
    kind = _host_kind(host, "[" in parts.netloc)
    if kind is None or port == 0:
        return parse_error
    scheme = parts.scheme.lower()
    if allow_http_loopback and kind == "loopback" and scheme in ("http", "https"):
        return None
    if scheme != "https":
        return ErrorCode.UNSUPPORTED_PROTOCOL, "webhook must be an https URL"
    if kind != "public":
        return ErrorCode.UNSUPPORTED_PROTOCOL, "webhook host must be a public name or address"
    return None


def _host_kind(host: str, bracketed: bool) -> Optional[str]:
    """'public', 'loopback' or 'private' for a URL's host; None if it is not a host."""
    if bracketed:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            return None
        return "loopback" if address.is_loopback else ("public" if public_address(host) else "private")
    if not host or len(host) > 253:
        return None
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    if _NUMBER.match(labels[-1]):  # a number last: resolvers read it as IPv4, so it must be one
        try:
            address4 = ipaddress.IPv4Address(host)
        except ValueError:
            return None
        return "loopback" if address4.is_loopback else ("public" if public_address(host) else "private")
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    return "public"


def public_address(address: str) -> bool:
    """Whether S may POST to this IP address (what a webhook's host resolved to)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(parsed, "ipv4_mapped", None)
    return (mapped or parsed).is_global


# ---------------------------------------------------------------- notifications

@dataclass(frozen=True)
class PaymentIncoming:
    """S holds a payment for the client (new, still held at a block, or near give-up)."""


@dataclass(frozen=True)
class ExpirySoon:
    """An HTLC on a channel with the client would force S to close it at ``timeout``.

    For an HTLC S offered the client, lightningd v26.06.6 closes when it is
    still unresolved at ``cltv_expiry + 1`` (CLN-FACTS, "Deadlines that force a close"): that is ``timeout``.
    """

    timeout: int
    height: int


@dataclass(frozen=True)
class PoolLow:
    """The Rod's invoice pool for this depositor is running low (asyncln extension)."""

    remaining: int


Event = Union[PaymentIncoming, ExpirySoon, PoolLow]


def notifications_for(event: Event, registry: Registry, client_id: str,
                      now: float) -> List[Notification]:
    """The POSTs to make for ``event`` now: one per webhook, or none.

    None while the client is connected (bLIP-55: only when it "currently does
    not have a BOLT8 tunnel"), for an ExpirySoon further than 24 blocks away,
    or within the method's cooldown (bLIP-55, "Rate-limiting Notifications
    By method": not the same method again within minutes while the client
    stays away; the cooldown restarts when it connects or disconnects, but
    never allows the same method within MIN_RESEND_SECONDS). Level-triggered
    use is intended: the shell may call this again every block while a
    payment is still held, and the cooldown keeps it to one POST per window.
    """
    client = registry.clients.get(client_id)
    if client is None or not client.webhooks or client_id in registry.online:
        return []
    match event:
        case PaymentIncoming():
            method, params = Method.PAYMENT_INCOMING, {}
        case ExpirySoon(timeout=timeout, height=height):
            if not 0 <= timeout - height <= EXPIRY_SOON_BLOCKS:
                return []
            method, params = Method.EXPIRY_SOON, {"timeout": timeout}
        case PoolLow(remaining=remaining):
            method, params = Method.POOL_LOW, {"remaining": remaining}
        case _:
            assert_never(event)
    if (_within(client.sent.get(method.value), now, registry.cooldown_seconds)
            or _within(client.last_sent.get(method.value), now, MIN_RESEND_SECONDS)):
        return []
    client.sent[method.value] = client.last_sent[method.value] = now
    return [Notification(client_id, name, hook.url, method, params)
            for name, hook in client.webhooks.items()]


def _within(then: Optional[float], now: float, seconds: float) -> bool:
    return then is not None and now - then < seconds


# ---------------------------------------------------------------- signing

def timestamp(now: float) -> str:
    """LSPS0.datetime: ``YYYY-MM-DDThh:mm:ss.uuuZ``, UTC, milliseconds."""
    millis = round(now * 1000)
    seconds, millis = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def body_bytes(notification: Notification) -> bytes:
    """The POST body, exactly the bytes that are signed: compact JSON, keys jsonrpc, method, params.

    The key order and spacing are lightning-liquidity's (serde_json): its
    validator re-serialises the body it parsed before it checks the signature.
    """
    body = {"jsonrpc": "2.0", "method": notification.method.value,
            "params": dict(notification.params)}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def message_to_sign(timestamp_text: str, body: bytes) -> str:
    """bLIP-55's signed message; what the shell passes to lightningd's ``signmessage``."""
    return f"{SIGNED_PREFIX}{timestamp_text} I notify {body.decode('utf-8')}"


def headers(timestamp_text: str, signature_zbase32: str) -> Dict[str, str]:
    """The POST's headers (bLIP-55, "For HTTPS webhooks")."""
    return {"Content-Type": "application/json",
            "x-lsps5-timestamp": timestamp_text,
            "x-lsps5-signature": signature_zbase32}


def verify(lsp_id: str, timestamp_text: str, body: bytes, signature_zbase32: str) -> bool:
    """What a notification delivery service checks: the LSP ``lsp_id`` signed this POST."""
    return signature.signed_by(message_to_sign(timestamp_text, body), signature_zbase32, lsp_id)


def sign(node_secret: bytes, timestamp_text: str, body: bytes) -> str:
    """The LSPS0 signature (zbase32) of a notification, made here with the node key.

    The one way to a conformant signature on lightningd v26.06.6, whose
    ``signmessage`` signs escaped text (module docstring).
    """
    return signature.sign(node_secret, message_to_sign(timestamp_text, body))


_PLAIN_HSM_SECRET = 32
_ENCRYPTED_HSM_SECRET = 73


def node_secret(hsm_secret_file: bytes) -> bytes:
    """The node's private key from the contents of lightningd's ``hsm_secret`` file.

    As lightningd v26.06.6 (hsmd/libhsmd.c ``node_key``, common/hsm_secret.c):
    HKDF-SHA256 of the first 32 bytes of the seed, salt a 32-bit counter
    (little-endian, from 0, until the key is valid), info ``nodeid``. The seed
    is the file itself in the legacy 32-byte format, or the BIP 39 seed of the
    mnemonic after 32 zero bytes (the default format for a new node).
    ValueError for an encrypted file or a mnemonic with a passphrase: asyncln
    cannot open those. The caller compares the key's public key with
    ``getinfo``'s ``id`` before using it (``--dev-force-privkey`` overrides it).
    """
    if len(hsm_secret_file) == _PLAIN_HSM_SECRET:
        seed = hsm_secret_file
    elif len(hsm_secret_file) == _ENCRYPTED_HSM_SECRET:
        raise ValueError("hsm_secret is encrypted")
    elif len(hsm_secret_file) > _PLAIN_HSM_SECRET and not any(hsm_secret_file[:32]):
        try:
            mnemonic = unicodedata.normalize("NFKD", hsm_secret_file[32:].decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError("hsm_secret mnemonic is not UTF-8") from None
        seed = hashlib.pbkdf2_hmac("sha512", mnemonic.encode("utf-8"), b"mnemonic", 2048)
    elif len(hsm_secret_file) > _PLAIN_HSM_SECRET:
        raise ValueError("hsm_secret mnemonic has a passphrase")
    else:
        raise ValueError("hsm_secret is too short")
    salt = 0
    while True:  # a second round has probability about 2^-128
        prk = hmac.new(salt.to_bytes(4, "little"), seed[:32], hashlib.sha256).digest()
        key = hmac.new(prk, b"nodeid\x01", hashlib.sha256).digest()
        if 0 < int.from_bytes(key, "big") < signature._ORDER:
            return key
        salt += 1

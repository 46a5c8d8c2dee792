"""LSPS0 (bLIP-50) transport: JSON-RPC 2.0 objects in BOLT 8 message 37913.

A message is the type (37913, big-endian) followed by one UTF-8 JSON object,
with no 0 bytes. The client sends requests (by-name ``params``, an ``id`` of
high entropy); the LSP sends responses (and, in other LSPS, notifications).
Pure: bytes in, objects out, and back. Anything malformed raises
:class:`Lsps0Error` carrying the JSON-RPC code the LSP answers with
(``-32700`` with id null for a bad message format, ``-32600`` for an object
that is not a request), so bad input changes nothing.
"""

import json
import secrets
from dataclasses import dataclass, field
from typing import Optional, Union

MESSAGE_TYPE = 37913          # lsps0_message_id: odd (it's OK to be odd), >= 32768
MAX_PAYLOAD = 65533           # BOLT 8's largest message (65535) less its 2-byte type
MAX_ID_LENGTH = 128           # an id we echo back: ours are 32 hex characters
ID_BYTES = 16                 # 128 random bits: LSPS0 wants at least 80

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603

Id = Union[str, int]


class Lsps0Error(ValueError):
    """A 37913 payload that is not a well-formed LSPS0 object: the code to answer with."""

    def __init__(self, message: str, code: int = PARSE_ERROR, request_id: Optional[Id] = None):
        super().__init__(message)
        self.code = code
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    id: Id
    method: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    """``error`` is None for a success, else ``{"code", "message"[, "data"]}``."""

    id: Optional[Id]
    result: Optional[dict] = None
    error: Optional[dict] = None


@dataclass(frozen=True)
class Notification:
    method: str
    params: dict = field(default_factory=dict)


Message = Union[Request, Response, Notification]


def new_id() -> str:
    """A request id from a secure source: a peer's stale answer must never match a new request."""
    return secrets.token_hex(ID_BYTES)


def error(request_id: Optional[Id], code: int, message: str, data: Optional[dict] = None) -> Response:
    body = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return Response(request_id, error=body)


def encode(msg: Message) -> str:
    """Hex of the whole message (type and JSON), as ``sendcustommsg`` wants it.

    ValueError when it would not fit one BOLT 8 message.
    """
    match msg:
        case Request(id=request_id, method=method, params=params):
            obj = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        case Response(id=request_id, result=result, error=err):
            obj = {"jsonrpc": "2.0", "id": request_id}
            obj.update({"error": err} if err is not None else {"result": result})
        case Notification(method=method, params=params):
            obj = {"jsonrpc": "2.0", "method": method, "params": params}
        case _:
            raise TypeError(f"not an LSPS0 message: {msg!r}")
    payload = json.dumps(obj, separators=(",", ":"),
                         allow_nan=False).encode()
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"LSPS0 payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return (MESSAGE_TYPE.to_bytes(2, "big") + payload).hex()


def is_lsps0(payload: str) -> bool:
    """The custommsg payload (hex, type first) is message 37913."""
    return payload[:4].lower() == f"{MESSAGE_TYPE:04x}"


def decode(payload: str) -> Optional[Message]:
    """A custommsg payload as lightningd gives it (hex, type first); None when not 37913."""
    try:
        data = bytes.fromhex(payload)
    except ValueError:
        raise Lsps0Error("payload is not hex")
    if len(data) < 2 or int.from_bytes(data[:2], "big") != MESSAGE_TYPE:
        return None
    return parse(data[2:])


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse(body: bytes) -> Message:
    """bLIP-50's checks: one JSON object (whitespace around it only), UTF-8, no 0 byte."""
    if len(body) > MAX_PAYLOAD:
        raise Lsps0Error(f"payload of {len(body)} bytes exceeds {MAX_PAYLOAD}")
    if b"\0" in body:
        raise Lsps0Error("payload contains a 0 byte")
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise Lsps0Error(f"payload is not one JSON object: {type(e).__name__}")
    if not isinstance(obj, dict):
        raise Lsps0Error("payload is not a JSON object")
    request_id = obj.get("id")
    if not _is_id(request_id):
        request_id = None
    if obj.get("jsonrpc") != "2.0":
        raise Lsps0Error('jsonrpc is not "2.0"', INVALID_REQUEST, request_id)
    if "method" in obj:
        return _request(obj, request_id)
    return _response(obj, request_id)


def _is_id(value) -> bool:
    return ((isinstance(value, str) and len(value) <= MAX_ID_LENGTH)
            or (isinstance(value, int) and not isinstance(value, bool) and -2**53 < value < 2**53))


def _request(obj: dict, request_id: Optional[Id]) -> Union[Request, Notification]:
    method, params = obj["method"], obj.get("params", {})
    if not isinstance(method, str):
        raise Lsps0Error("method is not a string", INVALID_REQUEST, request_id)
    if not isinstance(params, dict):
        raise Lsps0Error("params must be by name (an object)", INVALID_REQUEST, request_id)
    if "id" not in obj:
        return Notification(method, params)
    if request_id is None:
        raise Lsps0Error("id is not a string or integer", INVALID_REQUEST)
    return Request(request_id, method, params)


def _response(obj: dict, request_id: Optional[Id]) -> Response:
    if ("result" in obj) == ("error" in obj):
        raise Lsps0Error("neither a request nor a response", INVALID_REQUEST, request_id)
    if "id" not in obj or (obj["id"] is not None and request_id is None):
        raise Lsps0Error("a response without a usable id", INVALID_REQUEST)
    if "result" in obj:
        if not isinstance(obj["result"], dict):
            raise Lsps0Error("result is not an object", INVALID_REQUEST, request_id)
        return Response(request_id, result=obj["result"])
    err = obj["error"]
    if not (isinstance(err, dict) and isinstance(err.get("code"), int)
            and not isinstance(err.get("code"), bool) and isinstance(err.get("message"), str)
            and isinstance(err.get("data", {}), dict)):
        raise Lsps0Error("error is not {code, message[, data]}", INVALID_REQUEST, request_id)
    return Response(request_id, error=err)

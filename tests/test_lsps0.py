"""LSPS0 (bLIP-50) transport codec: 37913 payloads in and out, and bad input as a clean error."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncln import lsps0
from asyncln.lsps0 import Lsps0Error, Notification, Request, Response

TYPE = "9419"


def wire(text) -> str:
    return TYPE + (text if isinstance(text, bytes) else text.encode()).hex()


def test_request_round_trip():
    request = Request(lsps0.new_id(), "lsps5.set_webhook", {"app_name": "a", "webhook": "https://x"})
    encoded = lsps0.encode(request)
    assert encoded.startswith(TYPE)
    assert lsps0.decode(encoded) == request


def test_response_and_error_round_trip():
    for msg in (Response("x1", result={"protocols": [5]}),
                lsps0.error("x2", 503, "too_many_webhooks", {"max_webhooks": 4}),
                lsps0.error(None, lsps0.PARSE_ERROR, "parse error")):
        assert lsps0.decode(lsps0.encode(msg)) == msg


def test_blip50_examples():
    assert lsps0.decode(wire(' {"jsonrpc":"2.0","id":"e#3c","method":"lsps0.list_protocols",'
                             '"params":{}}\r\n')) == Request("e#3c", "lsps0.list_protocols", {})
    assert lsps0.decode(wire('{"jsonrpc":"2.0","method":"m","params":{}}')) == Notification("m", {})


def test_not_ours_is_none():
    assert lsps0.decode("8003" + "00" * 4) is None
    assert not lsps0.is_lsps0("8003") and lsps0.is_lsps0(TYPE + "7b7d")


@pytest.mark.parametrize("text", ["{", " [ ] ", " { } { ", " { } { }", '"x"', "", "\ufeff{}",
                                  '{"jsonrpc":"2.0","id":1,"result":NaN}'])
def test_bad_format_is_parse_error(text):
    with pytest.raises(Lsps0Error) as e:
        lsps0.decode(wire(text))
    assert e.value.code == lsps0.PARSE_ERROR and e.value.request_id is None


def test_zero_byte_and_bad_utf8_and_size():
    for body in (b'{"a":"\0"}', b'{"a":"\xff"}', b"{" + b" " * lsps0.MAX_PAYLOAD + b"}",
                 b"[" * 50000 + b"]" * 50000):
        with pytest.raises(Lsps0Error):
            lsps0.decode(wire(body))
    with pytest.raises(Lsps0Error):
        lsps0.decode("941")  # odd hex


@pytest.mark.parametrize("obj, request_id", [
    ({"jsonrpc": "1.0", "id": "a", "method": "m", "params": {}}, "a"),
    ({"jsonrpc": "2.0", "id": "a", "method": "m", "params": []}, "a"),
    ({"jsonrpc": "2.0", "id": "a", "method": 5}, "a"),
    ({"jsonrpc": "2.0", "id": [1], "method": "m"}, None),
    ({"jsonrpc": "2.0", "id": "a"}, "a"),
    ({"jsonrpc": "2.0", "id": "a", "result": {}, "error": {}}, "a"),
    ({"jsonrpc": "2.0", "id": "a", "result": [1]}, "a"),
    ({"jsonrpc": "2.0", "id": "a", "error": {"code": "1", "message": "m"}}, "a"),
    ({"jsonrpc": "2.0", "result": {}}, None),
])
def test_not_a_request_or_response(obj, request_id):
    with pytest.raises(Lsps0Error) as e:
        lsps0.decode(wire(json.dumps(obj)))
    assert e.value.code == lsps0.INVALID_REQUEST and e.value.request_id == request_id


def test_too_long_to_send():
    with pytest.raises(ValueError):
        lsps0.encode(Response("a", result={"x": "y" * lsps0.MAX_PAYLOAD}))


def test_ids_are_random_and_long():
    ids = {lsps0.new_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) * 4 >= 80 for i in ids)


def test_a_strange_id_is_echoed_as_json():
    """A lone surrogate in an id must not make the answer unencodable."""
    request = lsps0.decode(wire('{"jsonrpc":"2.0","id":"\\ud800","method":"m"}'))
    assert lsps0.decode(lsps0.encode(lsps0.error(request.id, -32601, "no"))).id == "\ud800"


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["jsonrpc", "id", "method", "params", "result", "error"]),
                    JSON | st.just("2.0"), max_size=6).map(lambda d: json.dumps(d).encode())))
def test_fuzz(body):
    """Arbitrary payloads: a message that encodes back to itself, or Lsps0Error; nothing else."""
    try:
        msg = lsps0.decode(wire(body))
    except Lsps0Error as e:
        assert e.code in (lsps0.PARSE_ERROR, lsps0.INVALID_REQUEST)
        return
    assert lsps0.decode(lsps0.encode(msg)) == msg

"""bLIP-55 (LSPS5) webhooks, the LSP side: requests, limits, persistence, cooldowns, signatures."""

import copy
import json
import os

import pytest
from hypothesis import given, settings
from coincurve import PrivateKey
from hypothesis import strategies as st

from asyncln import lsps5, signature
from asyncln.lsps5 import ErrorCode, Method

B = "02" + "11" * 32
C = "03" + "22" * 32
URL = "https://push.example.org/hook?token=abc"
NOW = 1_796_620_800.0

with open(os.path.join(os.path.dirname(__file__), "vectors", "lsps5-signatures.json")) as f:
    VECTORS = json.load(f)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)

def set_hook(registry, app_name="wallet", url=URL, now=NOW, client=B, **kw):
    return lsps5.handle_request(registry, client, "lsps5.set_webhook",
                                {"app_name": app_name, "webhook": url}, now, **kw)


def code(reply):
    assert reply.result is None and reply.error is not None
    return reply.error["code"]


def refused_without_change(registry, reply, expected, client=B):
    """The request was refused with ``expected`` and nothing changed (the caller snapshots first)."""
    assert code(reply) == expected
    assert not reply.changed and reply.notifications == ()


# ---------------------------------------------------------------- constants

def test_error_codes_are_blip55s():
    assert (ErrorCode.TOO_LONG, ErrorCode.URL_PARSE_ERROR, ErrorCode.UNSUPPORTED_PROTOCOL,
            ErrorCode.TOO_MANY_WEBHOOKS, ErrorCode.APP_NAME_NOT_FOUND) == (500, 501, 502, 503, 1010)
    assert lsps5.MAX_APP_NAME_BYTES == 64 and lsps5.MAX_URL_CHARS == 1024
    assert ErrorCode.INVALID_PARAMS == -32602 and ErrorCode.METHOD_NOT_FOUND == -32601


def test_every_error_code_is_documented():
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "PROTOCOL.md")) as doc:
        text = doc.read()
    section = text[text.index("## LSPS5 webhooks"):text.index("## Datastore records")]
    for error in ErrorCode:
        assert f"\n| {int(error)} |" in section, error


# ---------------------------------------------------------------- dispatch

@pytest.mark.parametrize("method", ["lsps2.get_info", "lsps0.other", "asyncln.x", "", None, 5])
def test_methods_of_others_are_left_alone(method):
    registry = lsps5.Registry()
    assert lsps5.handle_request(registry, B, method, {}, NOW) is None


def test_unknown_lsps5_method_is_not_found():
    reply = lsps5.handle_request(lsps5.Registry(), B, "lsps5.future", {}, NOW)
    assert code(reply) == ErrorCode.METHOD_NOT_FOUND


def test_list_protocols_lists_5_only():
    reply = lsps5.handle_request(lsps5.Registry(), B, "lsps0.list_protocols", {}, NOW)
    assert reply.result == {"protocols": [5]} and not reply.changed


def test_absent_params_are_empty_and_positional_ones_refused():
    registry = lsps5.Registry()
    assert lsps5.handle_request(registry, B, "lsps0.list_protocols", None, NOW).result
    reply = lsps5.handle_request(registry, B, "lsps5.list_webhooks", ["x"], NOW)
    assert code(reply) == ErrorCode.INVALID_PARAMS and reply.error["data"] == {"unrecognized": []}


@pytest.mark.parametrize("method", ["lsps0.list_protocols", "lsps5.list_webhooks"])
def test_unrecognized_params_are_named(method):
    reply = lsps5.handle_request(lsps5.Registry(), B, method, {"zeta": 1, "alpha": 2}, NOW)
    assert code(reply) == ErrorCode.INVALID_PARAMS
    assert reply.error["data"] == {"unrecognized": ["alpha", "zeta"]}


# ---------------------------------------------------------------- set_webhook

def test_set_webhook_registers_and_notifies_that_webhook():
    registry = lsps5.Registry()
    reply = set_hook(registry)
    assert reply.result == {"num_webhooks": 1, "max_webhooks": 10, "no_change": False}
    assert reply.changed
    assert reply.notifications == (
        lsps5.Notification(B, "wallet", URL, Method.WEBHOOK_REGISTERED, {}),)
    assert registry.record(B) == {"webhooks": [{"app_name": "wallet", "url": URL,
                                                "created_at": NOW}], "last_active": NOW}


def test_spec_example_request_is_accepted():
    reply = set_hook(lsps5.Registry(), "My LSPS-Compliant Lightning Client",
                     "https://www.example.org/push?l=1234567890abcdefghijklmnopqrstuv&c=best")
    assert reply.result["no_change"] is False


def test_same_webhook_again_is_no_change_and_no_notification():
    registry = lsps5.Registry()
    set_hook(registry)
    before = registry.record(B)
    reply = set_hook(registry, now=NOW + 5)
    assert reply.result == {"num_webhooks": 1, "max_webhooks": 10, "no_change": True}
    assert not reply.changed and reply.notifications == ()
    assert registry.record(B) == before


def test_new_url_replaces_and_only_it_is_notified():
    registry = lsps5.Registry()
    set_hook(registry, "one", URL)
    set_hook(registry, "two", "https://b.example/")
    reply = set_hook(registry, "one", "https://new.example/x", now=NOW + 1)
    assert reply.result == {"num_webhooks": 2, "max_webhooks": 10, "no_change": False}
    assert [n.url for n in reply.notifications] == ["https://new.example/x"]
    assert registry.app_names(B) == ["one", "two"]
    assert registry.record(B)["webhooks"][0] == {"app_name": "one", "url": "https://new.example/x",
                                                 "created_at": NOW + 1}


def test_webhooks_are_per_client():
    registry = lsps5.Registry()
    set_hook(registry, client=B)
    assert registry.app_names(C) == []
    assert set_hook(registry, client=C).result["num_webhooks"] == 1


@pytest.mark.parametrize("app_name,ok", [
    ("a" * 64, True), ("a" * 65, False),
    ("é" * 32, True), ("é" * 33, False),          # two UTF-8 bytes each
    ("\x07" + "a" * 58, True), ("\x07" + "a" * 59, False),  # written \u0007: six bytes
    ('"' * 32, True), ('"' * 33, False),          # written \": two bytes
])
def test_app_name_is_at_most_64_bytes_as_written(app_name, ok):
    registry = lsps5.Registry()
    reply = set_hook(registry, app_name)
    if ok:
        assert reply.result["num_webhooks"] == 1
    else:
        refused_without_change(registry, reply, ErrorCode.TOO_LONG)
        assert registry.record(B) is None


def test_url_is_at_most_1024_characters():
    base = "https://example.org/"
    registry = lsps5.Registry()
    assert set_hook(registry, url=base + "a" * (1024 - len(base))).result
    refused_without_change(registry, set_hook(registry, "other", base + "a" * (1025 - len(base))),
                           ErrorCode.TOO_LONG)
    # too long wins over a parse error
    assert code(set_hook(registry, "other", " " * 1025)) == ErrorCode.TOO_LONG


@pytest.mark.parametrize("url", [
    "test-app", "https://", "https:///path", "https://exa mple.com/", "https://host:99999/",
    "https://host:port/", "https://%zz.example/", "https://ex%4.com/", "https://例え.jp/",
    "https://a..b/", "https://-a.example/", "https://2130706433/", "https://0x7f000001/",
    "https://1.2.3/", "https://[::g]/", "https://[::1/", "https://example.org/\n", "//example.org/",
    "https://example.org/\\x", "https://user@/x", "https://example.org:0/",
])
def test_urls_that_do_not_parse(url):
    registry = lsps5.Registry()
    refused_without_change(registry, set_hook(registry, url=url), ErrorCode.URL_PARSE_ERROR)
    assert registry.record(B) is None


@pytest.mark.parametrize("url", [
    "http://example.com/webhook", "ftp://example.com/webhook", "ws://example.com/webhook",
    "ws+unix://example.com/webhook", "https://localhost/", "https://a.localhost/",
    "https://127.0.0.1/", "https://10.1.2.3/", "https://192.168.1.1/", "https://169.254.1.1/",
    "https://[::1]/", "https://[fe80::1]/", "https://[fd00::1]/", "https://[::ffff:10.0.0.1]/",
    "https://0.0.0.0/", "https://example.org@10.0.0.1/", "https://10.0.0.1#@example.org/",
    "https://10.0.0.1?@example.org/",
])
def test_unsupported_protocols_and_private_hosts(url):
    registry = lsps5.Registry()
    refused_without_change(registry, set_hook(registry, url=url), ErrorCode.UNSUPPORTED_PROTOCOL)


@pytest.mark.parametrize("url", [
    "https://example.org", "HTTPS://Example.ORG/Path", "https://user:pass@example.com/webhook",
    "https://8.8.8.8:8443/x", "https://[2001:4860:4860::8888]/x", "https://example.org/a?b=c#frag",
    "https://xn--r8jz45g.jp/", "https://example.org/%41",
])
def test_good_urls(url):
    assert set_hook(lsps5.Registry(), url=url).result["num_webhooks"] == 1


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hook", "https://127.0.0.1/",
                                 "http://localhost/", "http://[::1]:9/x", "http://127.9.9.9/"])
def test_dev_option_allows_loopback_only(url):
    registry = lsps5.Registry()
    assert code(set_hook(registry, url=url)) == ErrorCode.UNSUPPORTED_PROTOCOL
    assert set_hook(registry, url=url, allow_http_loopback=True).result["num_webhooks"] == 1
    assert code(set_hook(registry, "x", "http://example.org/", allow_http_loopback=True)) \
        == ErrorCode.UNSUPPORTED_PROTOCOL
    assert code(set_hook(registry, "y", "http://10.0.0.1/", allow_http_loopback=True)) \
        == ErrorCode.UNSUPPORTED_PROTOCOL


def test_too_many_webhooks_but_replacing_is_fine():
    registry = lsps5.Registry(max_webhooks=2)
    set_hook(registry, "a")
    set_hook(registry, "b")
    before = registry.record(B)
    reply = set_hook(registry, "c")
    refused_without_change(registry, reply, ErrorCode.TOO_MANY_WEBHOOKS)
    assert reply.error["data"] == {"max_webhooks": 2}
    assert registry.record(B) == before
    assert set_hook(registry, "a", "https://other.example/").result["num_webhooks"] == 2


@pytest.mark.parametrize("params,unrecognized", [
    ({"app_name": "a"}, []),
    ({"webhook": URL}, []),
    ({}, []),
    ({"app_name": "a", "webhook": URL, "extra": 1}, ["extra"]),
    ({"app_name": 5, "webhook": URL}, []),
    ({"app_name": "a", "webhook": None}, []),
    ({"app_name": "\ud800", "webhook": URL}, []),   # a lone surrogate: no UTF-8 for it
    ({"app_name": ["a"], "webhook": URL}, []),
])
def test_malformed_set_webhook_params(params, unrecognized):
    registry = lsps5.Registry()
    reply = lsps5.handle_request(registry, B, "lsps5.set_webhook", params, NOW)
    refused_without_change(registry, reply, ErrorCode.INVALID_PARAMS)
    assert reply.error["data"] == {"unrecognized": unrecognized}
    assert registry.record(B) is None and registry.app_names(B) == []


def test_stranger_cannot_register():
    registry = lsps5.Registry()
    refused_without_change(registry, set_hook(registry, known_client=False),
                           ErrorCode.NO_PRIOR_ACTIVITY)
    assert registry.record(B) is None


def test_new_webhooks_are_rate_limited_and_removing_does_not_reset_it():
    registry = lsps5.Registry()
    for i in range(lsps5.REGISTERED_LIMIT):
        assert set_hook(registry, "a", f"https://h{i}.example/", now=NOW + i).notifications
        if i % 2:
            lsps5.handle_request(registry, B, "lsps5.remove_webhook", {"app_name": "a"}, NOW + i)
    before = registry.record(B)
    refused_without_change(registry, set_hook(registry, "a", "https://late.example/", now=NOW + 20),
                           ErrorCode.SLOW_DOWN)
    assert registry.record(B) == before
    later = NOW + lsps5.REGISTERED_WINDOW_SECONDS + 1
    assert set_hook(registry, "a", "https://late.example/", now=later).notifications


# ---------------------------------------------------------------- list / remove

def test_list_webhooks_in_registration_order():
    registry = lsps5.Registry(max_webhooks=42)
    assert lsps5.handle_request(registry, B, "lsps5.list_webhooks", {}, NOW).result == \
        {"app_names": [], "max_webhooks": 42}
    set_hook(registry, "My LSPS-Compliant Lightning Wallet")
    set_hook(registry, "Another Wallet With The Same Signing Device")
    reply = lsps5.handle_request(registry, B, "lsps5.list_webhooks", {}, NOW)
    assert reply.result == {"app_names": ["My LSPS-Compliant Lightning Wallet",
                                          "Another Wallet With The Same Signing Device"],
                            "max_webhooks": 42}
    assert not reply.changed


def test_remove_webhook():
    registry = lsps5.Registry()
    set_hook(registry, "a")
    set_hook(registry, "b")
    reply = lsps5.handle_request(registry, B, "lsps5.remove_webhook", {"app_name": "a"}, NOW)
    assert reply.result == {} and reply.changed and reply.notifications == ()
    assert registry.app_names(B) == ["b"]
    lsps5.handle_request(registry, B, "lsps5.remove_webhook", {"app_name": "b"}, NOW)
    assert registry.record(B) is None   # the shell deletes the datastore key


@pytest.mark.parametrize("params,expected", [
    ({"app_name": "nope"}, ErrorCode.APP_NAME_NOT_FOUND),
    ({}, ErrorCode.INVALID_PARAMS),
    ({"app_name": 1}, ErrorCode.INVALID_PARAMS),
    ({"app_name": "a", "webhook": URL}, ErrorCode.INVALID_PARAMS),
])
def test_remove_webhook_refusals(params, expected):
    registry = lsps5.Registry()
    set_hook(registry, "a")
    before = registry.record(B)
    refused_without_change(registry, lsps5.handle_request(
        registry, B, "lsps5.remove_webhook", params, NOW), expected)
    assert registry.record(B) == before


def test_remove_for_unknown_client_is_not_found():
    reply = lsps5.handle_request(lsps5.Registry(), C, "lsps5.remove_webhook", {"app_name": "a"}, NOW)
    assert code(reply) == ErrorCode.APP_NAME_NOT_FOUND


# ---------------------------------------------------------------- persistence

def test_record_survives_a_restart_through_json():
    registry = lsps5.Registry()
    set_hook(registry, "b-app", "https://b.example/")
    set_hook(registry, "a-app", URL, now=NOW + 3)
    stored = json.loads(json.dumps(registry.record(B), sort_keys=True))
    restarted = lsps5.Registry()
    restarted.load(B, stored)
    assert restarted.app_names(B) == ["b-app", "a-app"]
    assert restarted.record(B) == registry.record(B)
    assert set_hook(restarted, "a-app", URL).result["no_change"] is True


@pytest.mark.parametrize("damage", [
    lambda r: None, lambda r: [], lambda r: {"webhooks": {}},
    lambda r: {**r, "last_active": "yesterday"}, lambda r: {**r, "last_active": -1},
    lambda r: {**r, "last_active": float("nan")}, lambda r: {**r, "last_active": float("inf")},
    lambda r: {**r, "webhooks": ["x"]},
    lambda r: {**r, "webhooks": [{**r["webhooks"][0], "url": "ftp://x"}]},
    lambda r: {**r, "webhooks": [{**r["webhooks"][0], "app_name": "a" * 65}]},
    lambda r: {**r, "webhooks": [{**r["webhooks"][0], "created_at": True}]},
    lambda r: {**r, "webhooks": [{"url": URL, "created_at": 1}]},
    lambda r: {**r, "webhooks": r["webhooks"] * 2},
    lambda r: {**r, "webhooks": [{**r["webhooks"][0], "url": "http://127.0.0.1/x"}]},
])
def test_corrupt_records_are_refused_and_load_nothing(damage):
    registry = lsps5.Registry()
    set_hook(registry)
    restarted = lsps5.Registry()
    with pytest.raises(ValueError):
        restarted.load(B, damage(copy.deepcopy(registry.record(B))))
    assert restarted.app_names(B) == [] and restarted.record(B) is None


def test_a_dev_loopback_webhook_loads_only_under_the_dev_option():
    registry = lsps5.Registry()
    set_hook(registry, url="http://127.0.0.1:9/x", allow_http_loopback=True)
    with pytest.raises(ValueError):
        lsps5.Registry().load(B, registry.record(B))
    restarted = lsps5.Registry()
    restarted.load(B, registry.record(B), allow_http_loopback=True)
    assert restarted.record(B) == registry.record(B)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_fuzz_load_refuses_cleanly(record):
    registry = lsps5.Registry()
    try:
        registry.load(B, record)
    except ValueError:
        assert registry.record(B) is None
    else:
        assert registry.app_names(B) == [hook["app_name"] for hook in record["webhooks"]]


def test_prune_keeps_clients_with_channels_and_forgets_idle_ones():
    registry = lsps5.Registry()
    set_hook(registry, client=B)
    set_hook(registry, client=C)
    month = NOW + lsps5.RETENTION_SECONDS
    assert registry.prune(month, with_channels=[B]) == []
    assert registry.prune(month + 1, with_channels=[B]) == [C]
    assert registry.app_names(B) == ["wallet"] and registry.record(C) is None
    # the channel closed at `month + 1`: kept at least 7 days after that (the spec's minimum)
    assert registry.prune(month + 1 + 7 * 86400, with_channels=[]) == []


def test_prune_keeps_an_online_client():
    registry = lsps5.Registry()
    set_hook(registry)
    registry.connected(B, NOW)
    assert registry.prune(NOW + 2 * lsps5.RETENTION_SECONDS, with_channels=[]) == []


def test_prune_drops_an_emptied_client_without_asking_to_delete_its_record():
    registry = lsps5.Registry()
    set_hook(registry)
    lsps5.handle_request(registry, B, "lsps5.remove_webhook", {"app_name": "wallet"}, NOW)
    assert registry.prune(NOW + lsps5.REGISTERED_WINDOW_SECONDS + 1, with_channels=[]) == []
    assert B not in registry.clients


# ---------------------------------------------------------------- notifications

def registered(*apps, max_webhooks=10):
    registry = lsps5.Registry(max_webhooks=max_webhooks)
    for app in apps:
        set_hook(registry, app, f"https://{app}.example/")
    return registry


def test_payment_incoming_goes_to_every_webhook():
    registry = registered("one", "two")
    sent = lsps5.notifications_for(lsps5.PaymentIncoming(), registry, B, NOW)
    assert sent == [lsps5.Notification(B, "one", "https://one.example/", Method.PAYMENT_INCOMING, {}),
                    lsps5.Notification(B, "two", "https://two.example/", Method.PAYMENT_INCOMING, {})]


def test_nothing_for_a_client_without_webhooks():
    assert lsps5.notifications_for(lsps5.PaymentIncoming(), lsps5.Registry(), B, NOW) == []


def test_nothing_while_the_client_is_connected():
    registry = registered("one")
    registry.connected(B, NOW)
    assert lsps5.notifications_for(lsps5.PaymentIncoming(), registry, B, NOW + 100) == []
    registry.disconnected(B, NOW + 200)
    assert lsps5.notifications_for(lsps5.PaymentIncoming(), registry, B, NOW + 201)


def test_same_method_waits_for_the_cooldown():
    registry = registered("one")
    first = lsps5.notifications_for(lsps5.PaymentIncoming(), registry, B, NOW)
    assert first
    assert lsps5.notifications_for(lsps5.PaymentIncoming(), registry, B, NOW + 59.9) == []
    assert lsps5.notifications_for(lsps5.PaymentIncoming(), registry, B, NOW + 60) == first


def test_cooldown_is_per_method():
    registry = registered("one")
    assert lsps5.notifications_for(lsps5.PaymentIncoming(), registry, B, NOW)
    sent = lsps5.notifications_for(lsps5.ExpirySoon(timeout=900, height=890), registry, B, NOW + 1)
    assert [(n.method, n.params) for n in sent] == [(Method.EXPIRY_SOON, {"timeout": 900})]


def test_reconnecting_resets_the_cooldown_but_not_the_floor():
    registry = registered("one")
    assert lsps5.notifications_for(lsps5.PaymentIncoming(), registry, B, NOW)
    registry.connected(B, NOW + 1)
    registry.disconnected(B, NOW + 2)
    assert lsps5.notifications_for(lsps5.PaymentIncoming(), registry, B, NOW + 5) == []
    assert lsps5.notifications_for(lsps5.PaymentIncoming(), registry, B, NOW + 10)


def test_webhook_registered_ignores_the_cooldown():
    registry = registered("one")
    assert lsps5.notifications_for(lsps5.PaymentIncoming(), registry, B, NOW)
    reply = set_hook(registry, "two", "https://two.example/", now=NOW + 1)
    assert [n.method for n in reply.notifications] == [Method.WEBHOOK_REGISTERED]


@pytest.mark.parametrize("height,sent", [(875, False), (876, True), (900, True), (901, False)])
def test_expiry_soon_only_within_24_blocks(height, sent):
    registry = registered("one")
    got = lsps5.notifications_for(lsps5.ExpirySoon(timeout=900, height=height), registry, B, NOW)
    assert bool(got) == sent


def test_pool_low_is_an_asyncln_method():
    registry = registered("one")
    [note] = lsps5.notifications_for(lsps5.PoolLow(remaining=2), registry, B, NOW)
    assert note.method == Method.POOL_LOW and not note.method.value.startswith("lsps5.")
    assert json.loads(lsps5.body_bytes(note))["params"] == {"remaining": 2}


def test_an_unknown_event_is_a_bug():
    with pytest.raises(AssertionError):
        lsps5.notifications_for(object(), registered("one"), B, NOW)


# ---------------------------------------------------------------- signing

@pytest.mark.parametrize("now,text", [
    (1683197578.395, "2023-05-04T10:52:58.395Z"),
    (0, "1970-01-01T00:00:00.000Z"),
    (1796620801.007, "2026-12-07T05:20:01.007Z"),
    (1796620801.9996, "2026-12-07T05:20:02.000Z"),
])
def test_timestamp_is_lsps0_datetime(now, text):
    assert lsps5.timestamp(now) == text


def test_message_to_sign_is_the_specs_hex_dump():
    example = VECTORS["spec_example"]
    message = lsps5.message_to_sign(example["timestamp"], example["body"].encode())
    assert message.encode("utf-8").hex() == example["message_hex"]


@pytest.mark.parametrize("method,params,body", [
    (Method.WEBHOOK_REGISTERED, {}, '{"jsonrpc":"2.0","method":"lsps5.webhook_registered","params":{}}'),
    (Method.PAYMENT_INCOMING, {}, '{"jsonrpc":"2.0","method":"lsps5.payment_incoming","params":{}}'),
    (Method.EXPIRY_SOON, {"timeout": 144}, '{"jsonrpc":"2.0","method":"lsps5.expiry_soon","params":{"timeout":144}}'),
])
def test_body_is_what_lightning_liquidity_serialises(method, params, body):
    # the strings are lightning-liquidity's own (lsps5/msgs.rs tests)
    assert lsps5.body_bytes(lsps5.Notification(B, "a", URL, method, params)) == body.encode()


def test_headers():
    assert lsps5.headers("2023-05-04T10:14:23.853Z", "sig") == {
        "Content-Type": "application/json", "x-lsps5-timestamp": "2023-05-04T10:14:23.853Z",
        "x-lsps5-signature": "sig"}


def test_our_signer_is_ldks():
    vector = VECTORS["ldk_sign"]
    assert signature.sign(bytes.fromhex(vector["secret"]), vector["message"]) == vector["zbase"]


@pytest.mark.parametrize("vector", VECTORS["conformant"]["notifications"])
def test_conformant_vectors(vector):
    secret, node = bytes.fromhex(VECTORS["conformant"]["secret"]), VECTORS["conformant"]["node_id"]
    note = lsps5.Notification(B, "a", URL, Method(vector["method"]), vector["params"])
    ts, body = lsps5.timestamp(vector["now"]), lsps5.body_bytes(note)
    assert (ts, body.decode()) == (vector["timestamp"], vector["body"])
    assert lsps5.sign(secret, ts, body) == vector["zbase"]
    assert lsps5.verify(node, ts, body, vector["zbase"])
    assert not lsps5.verify(node, ts, body.replace(b":", b": ", 1), vector["zbase"])
    assert not lsps5.verify(node, lsps5.timestamp(vector["now"] + 0.001), body, vector["zbase"])
    assert not lsps5.verify(C, ts, body, vector["zbase"])


@pytest.mark.parametrize("vector", VECTORS["lightningd_signmessage"]["notifications"])
def test_lightningd_signmessage_signs_the_escaped_text(vector):
    """Recorded on lightningd v26.06.6: its signature is over the JSON-escaped message, so
    a bLIP-55 verifier refuses it. The shell cannot sign notifications with signmessage."""
    node = VECTORS["lightningd_signmessage"]["node_id"]
    message = lsps5.message_to_sign(vector["timestamp"], vector["body"].encode())
    assert not lsps5.verify(node, vector["timestamp"], vector["body"].encode(), vector["zbase"])
    assert signature.signed_by(json.dumps(message)[1:-1], vector["zbase"], node)


@pytest.mark.parametrize("kind", ["plain", "mnemonic"])
def test_node_secret_from_hsm_secret_is_lightningds_node_key(kind):
    vector = VECTORS["hsm_secret"][kind]
    secret = lsps5.node_secret(bytes.fromhex(vector["file_hex"]))
    assert PrivateKey(secret).public_key.format().hex() == vector["node_id"]


def test_node_key_signature_is_conformant_where_signmessages_is_not():
    vector = VECTORS["lightningd_signmessage"]["notifications"][1]
    ts, body = vector["timestamp"], vector["body"].encode()
    secret = lsps5.node_secret(bytes.fromhex(VECTORS["hsm_secret"]["plain"]["file_hex"]))
    zbase = lsps5.sign(secret, ts, body)
    assert lsps5.verify(VECTORS["lightningd_signmessage"]["node_id"], ts, body, zbase)
    assert zbase != vector["zbase"]


@pytest.mark.parametrize("data", [
    b"\x01" * 73,                                  # legacy encrypted
    b"\x01" * 32 + b"abandon " * 11 + b"about",    # mnemonic with a passphrase
    b"\x00" * 32 + b"\xff\xfe",                   # not UTF-8
    b"\x01" * 31, b"",
])
def test_node_secret_refuses_what_it_cannot_open(data):
    with pytest.raises(ValueError):
        lsps5.node_secret(data)


@pytest.mark.parametrize("address,public", [
    ("8.8.8.8", True), ("2001:4860:4860::8888", True), ("127.0.0.1", False), ("10.0.0.1", False),
    ("::1", False), ("::ffff:10.0.0.1", False), ("::ffff:8.8.8.8", True), ("100.64.0.1", False),
    ("not an address", False),
])
def test_public_address(address, public):
    assert lsps5.public_address(address) is public


# ---------------------------------------------------------------- fuzz

urlish = st.one_of(st.text(max_size=60), st.builds(lambda h, p: f"https://{h}/{p}",
                                                   st.text(max_size=20), st.text(max_size=20)),
                   st.sampled_from([URL, "http://127.0.0.1/x", "https://[::1]/", "https://a.b"]))
param_sets = st.one_of(
    json_values,
    st.fixed_dictionaries({"app_name": st.one_of(st.text(max_size=70), json_values),
                           "webhook": st.one_of(urlish, json_values)},
                          optional={"extra": json_values}),
    st.fixed_dictionaries({"app_name": st.one_of(st.sampled_from(["wallet", "x"]), json_values)}))
methods = st.sampled_from(["lsps5.set_webhook", "lsps5.list_webhooks", "lsps5.remove_webhook",
                           "lsps0.list_protocols", "lsps5.nope", "lsps1.get_info"])


@settings(max_examples=400, deadline=None)
@given(methods, param_sets, st.booleans(), st.booleans())
def test_fuzz_requests_answer_cleanly_and_refusals_change_nothing(method, params, loopback, known):
    registry = lsps5.Registry(max_webhooks=2)
    set_hook(registry, "wallet")
    before = json.dumps(registry.record(B))
    reply = lsps5.handle_request(registry, B, method, params, NOW + 1,
                                 allow_http_loopback=loopback, known_client=known)
    if reply is None:
        assert not method.startswith(("lsps5.", "lsps0.list_protocols"))
        return
    assert (reply.result is None) != (reply.error is None)
    if reply.error is not None:
        assert reply.error["code"] in set(ErrorCode)
        assert isinstance(reply.error["message"], str)
        if reply.error["code"] == ErrorCode.INVALID_PARAMS:
            assert isinstance(reply.error["data"]["unrecognized"], list)
        assert not reply.changed and reply.notifications == ()
        assert json.dumps(registry.record(B)) == before
    else:
        json.dumps(reply.result)  # the answer is JSON
        if not reply.changed:
            assert json.dumps(registry.record(B)) == before
    stored = registry.record(B)
    if stored is not None:  # whatever was accepted can be stored and loaded again
        lsps5.Registry().load(B, json.loads(json.dumps(stored)), allow_http_loopback=loopback)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.booleans())
def test_fuzz_url_check_never_raises(url, loopback):
    problem = lsps5._url_problem(url, loopback)
    assert problem is None or problem[0] in (ErrorCode.TOO_LONG, ErrorCode.URL_PARSE_ERROR,
                                             ErrorCode.UNSUPPORTED_PROTOCOL)


events = st.sampled_from([lsps5.PaymentIncoming(), lsps5.ExpirySoon(timeout=100, height=90),
                          lsps5.PoolLow(remaining=1), "connect", "disconnect"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 120), events), max_size=30))
def test_cooldown_properties(steps):
    """Never the same method within MIN_RESEND_SECONDS; within the cooldown only after a
    connect or disconnect; never while connected; to every webhook when sent."""
    registry = registered("one", "two")
    now, online = NOW, False
    last: dict = {}   # method -> (time sent, resets since)
    for gap, event in steps:
        now += gap
        if event in ("connect", "disconnect"):
            (registry.connected if event == "connect" else registry.disconnected)(B, now)
            online = event == "connect"
            last = {m: (t, True) for m, (t, _) in last.items()}
            continue
        sent = lsps5.notifications_for(event, registry, B, now)
        if not sent:
            continue
        assert not online
        assert [n.app_name for n in sent] == ["one", "two"] and len({n.method for n in sent}) == 1
        method = sent[0].method
        if method in last:
            then, reset = last[method]
            assert now - then >= lsps5.MIN_RESEND_SECONDS
            assert reset or now - then >= lsps5.COOLDOWN_SECONDS
        last[method] = (now, False)

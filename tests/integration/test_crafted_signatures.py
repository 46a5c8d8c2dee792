"""Issue 11.8 on real lightningd nodes: a crafted signature never reaches checkmessage.

lightningd v26.06.6 aborts (signal 6) in ``checkmessage`` when a zbase32
signature's first byte (recovery id + 31) is outside 31..34. A payment code
carries B's signature and each Rod's signature over its onion key; asyncln
checks both itself (asyncln/signature.py).
"""

import dataclasses

import pytest
from coincurve import PrivateKey
from helpers import call, opts, say
from pyln.client import RpcError
from pyln.testing.utils import wait_for
from test_rod_flows import private_recipient

from asyncln import code as codes
from asyncln import note, onion, signature

SOMEONE = bytes([7]) * 32  # an attacker's key: it names some node and signs for it


def with_first_byte(zbase: str, first: int) -> str:
    raw = bytearray(signature.decode(zbase))
    raw[0] = first
    return signature.encode(bytes(raw))


def crafted_code(rod_id: str) -> str:
    """A code naming some node, whose signature's recovery byte is 40."""
    node_id = PrivateKey(SOMEONE).public_key.format().hex()
    unsigned = codes.PaymentCode(node_id, (codes.Rod(rod_id),), note.note_public_key("5a" * 32))
    good = signature.sign(SOMEONE, unsigned.signed_message())
    return dataclasses.replace(unsigned, signature=with_first_byte(good, 40)).encode()


def test_checkmessage_aborts_lightningd_on_a_bad_recovery_byte(node_factory):
    """Why asyncln never calls it: the lightningd behaviour docs/PROTOCOL.md describes."""
    node = node_factory.get_node(may_fail=True, broken_log="FATAL SIGNAL 6|backtrace")
    me = node.info["id"]
    # Our check agrees with lightningd's on real signmessage output, including the key it
    # recovers for a message that was not signed.
    for message in ("hello", onion.key_statement(me), "asyncln-code:" + "00" * 200, "ünï"):
        zbase = node.rpc.signmessage(message)["zbase"]
        assert node.rpc.checkmessage(message, zbase, me)["verified"]
        assert signature.signer(message, zbase) == me
        other = node.rpc.checkmessage(message + "!", zbase, me)
        assert not other["verified"] and signature.signer(message + "!", zbase) == other["pubkey"]
    zbase = node.rpc.signmessage("hello")["zbase"]
    with pytest.raises(Exception):  # the RPC connection dies with lightningd
        node.rpc.checkmessage("hello", with_first_byte(zbase, 40), node.info["id"])
    wait_for(lambda: node.daemon.proc.poll() is not None)
    assert node.daemon.proc.returncode != 0


def test_a_crafted_code_is_a_bad_code_and_the_payers_node_lives(node_factory, plugin_path):
    a, r = node_factory.get_nodes(2, opts=[opts(plugin_path)] * 2)
    text = crafted_code(r.info["id"])
    for method, params in (("asyncln-fetchinvoice", {"code": text, "amount_msat": 1000}),
                           ("asyncln-pay", {"invstring": text, "amount_msat": 1000})):
        with pytest.raises(RpcError) as e:
            call(a, method, **params)
        assert e.value.error["code"] == 2135, e.value.error
        assert a.rpc.getinfo()["id"] == a.info["id"]  # still alive
    say("a code whose signature's recovery byte is 40 is refused (2135); the payer's node lives")


def test_a_rod_key_with_a_bad_recovery_byte_is_ignored_and_the_node_lives(node_factory,
                                                                        plugin_path):
    (a,), r, b = private_recipient(node_factory, plugin_path)
    rod_key = call(r, "asyncln-getinfo")["onion_key"]
    rod_sig = r.rpc.signmessage(onion.key_statement(rod_key))["zbase"]
    paycode = codes.PaymentCode.decode(call(b, "asyncln-code")["code"])
    rods = (dataclasses.replace(paycode.rods[0], onion_key=rod_key,
                                onion_key_sig=with_first_byte(rod_sig, 40)),)
    unsigned = dataclasses.replace(paycode, rods=rods, signature="")
    text = dataclasses.replace(unsigned, signature=b.rpc.signmessage(
        unsigned.signed_message())["zbase"]).encode()
    b.stop()

    got = call(a, "asyncln-fetchinvoice", code=text, amount_msat=10_000)
    assert got["rod"] == r.info["id"] and a.rpc.decode(got["bolt11"])["payee"] == b.info["id"]
    assert a.rpc.getinfo()["id"] == a.info["id"]  # still alive
    say("a Rod key signature with recovery byte 40 is ignored; the fetch works and the node lives")

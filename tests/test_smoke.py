"""Smoke test, run first by `make test`: build and peel an asyncln onion with whatever is installed.

A dependency that changed under us (cryptography 51 refused pyln-proto's
in-place stream) must fail here in seconds, naming the package and version,
before hundreds of tests fail for the same reason.
"""

import importlib.metadata
import traceback

import pytest

DEPENDENCIES = ("cryptography", "coincurve-cp314-fix", "pyln-proto", "pyln-client")


def installed() -> str:
    found = []
    for name in DEPENDENCIES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} MISSING")
    return ", ".join(found)


def culprit(error: BaseException) -> str:
    """The installed distribution whose code raised ``error``, from the innermost frame."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        for name in ("cryptography", "coincurve", "pyln"):
            if f"/{name}/" in frame.filename:
                return f"{name} ({frame.filename}:{frame.lineno})"
    return "asyncln itself"


def test_an_onion_builds_and_peels_with_the_installed_dependencies():
    try:
        from asyncln import onion
        from asyncln.keys import public_key, secret_key
        from asyncln.layer import Layer

        first, last = "11" * 32, "22" * 32   # makesecret answers
        payment_hash = "42" * 32
        forward = Layer(amt_to_forward=101_000, outgoing_cltv_delta=200,
                        outgoing_node_id=public_key(last))
        final = Layer(amt_to_forward=100_000, outgoing_cltv_delta=18, outgoing_node_id="02" + "33" * 32,
                      payment_secret="44" * 32, total_msat=100_000)
        packet, _ = onion.build([(public_key(first), forward), (public_key(last), final)],
                                payment_hash)
        layer, following = onion.peel(packet, secret_key(first), payment_hash)
        assert layer == forward
        layer, following = onion.peel(following, secret_key(last), payment_hash)
        assert layer == final and following is None
    except Exception as error:  # noqa: BLE001 - the point is to name whatever broke
        pytest.fail(f"the asyncln onion does not work with the installed dependencies: "
                    f"{type(error).__name__}: {error}; raised in {culprit(error)}; installed: {installed()}. "
                    f"Install exactly the locked versions: pip install --require-hashes -r requirements.txt",
                    pytrace=False)

"""The coincurve pitfall: exactly one installed distribution provides `coincurve`."""

import importlib.metadata
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_one_copy_of_coincurve_and_it_works():
    providers = importlib.metadata.packages_distributions().get("coincurve", [])
    assert len(set(providers)) == 1, f"coincurve provided by {providers}"
    import coincurve
    key = coincurve.PrivateKey(b"\x01" * 32)
    assert coincurve.PublicKey(key.public_key.format()).format() == key.public_key.format()


def test_requirements_pin_every_runtime_dependency():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        pins = [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]
    assert all("==" in pin for pin in pins)
    names = {pin.split("==")[0] for pin in pins}
    assert {"pyln-client", "pyln-proto", "coincurve-cp314-fix"} == names
    assert "coincurve" not in names  # would install a second copy of the same module

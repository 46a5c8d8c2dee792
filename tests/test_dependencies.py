"""The install is what was tested: a hash lock that covers every installed distribution, one coincurve."""

import importlib.metadata
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock(filename: str) -> dict:
    """{name: version} of a pip-compile lock; every pin must carry at least one sha256 hash."""
    with open(os.path.join(ROOT, filename)) as f:
        lines = f.read().splitlines()
    pins = {}
    for i, line in enumerate(lines):
        match = PIN.match(line)
        if match:
            assert lines[i + 1].strip().startswith("--hash=sha256:"), f"{filename}: {line} has no hash"
            pins[canonical(match.group(1))] = match.group(2)
        else:
            assert not line or line.startswith(("#", " ")), f"{filename}: unlocked line {line!r}"
    return pins


def direct(filename: str) -> set:
    with open(os.path.join(ROOT, filename)) as f:
        return {canonical(line.split("==")[0].strip()) for line in f
                if line.split("#")[0].strip() and not line.startswith("-")}


def test_one_copy_of_coincurve_and_it_works():
    providers = importlib.metadata.packages_distributions().get("coincurve", [])
    assert len(set(providers)) == 1, f"coincurve provided by {providers}"
    import coincurve
    key = coincurve.PrivateKey(b"\x01" * 32)
    assert coincurve.PublicKey(key.public_key.format()).format() == key.public_key.format()


def test_the_runtime_lock_holds_the_direct_pins_and_not_a_second_coincurve():
    runtime = lock("requirements.txt")
    assert direct("requirements.in") == {"pyln-client", "pyln-proto", "coincurve-cp314-fix"}
    assert direct("requirements.in") <= set(runtime)
    assert "coincurve" not in runtime  # would install a second copy of the same module
    assert "cryptography" in runtime   # the transitive dependency that broke a fresh install


def test_the_dev_lock_agrees_with_the_runtime_lock():
    runtime, dev = lock("requirements.txt"), lock("requirements-dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime


def test_every_installed_distribution_is_the_locked_version():
    dev = lock("requirements-dev.txt")
    installed = {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    # pyln reports its version as v26.06.9 for 26.6.9
    normal = {name: re.sub(r"^v(\d+)\.0?(\d+)\.", r"\1.\2.", version) for name, version in installed.items()}
    off_lock = {name: version for name, version in normal.items() if dev.get(name) != version}
    assert not off_lock, f"installed but not as locked in requirements-dev.txt: {off_lock}"

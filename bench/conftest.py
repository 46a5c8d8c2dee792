"""bench_fees.py runs on real lightningd + bitcoind through pyln-testing (the other benches need neither)."""

import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
MISSING = [name for name in ("lightningd", "bitcoind") if shutil.which(name) is None]
os.environ.setdefault("RUST", "0")

if not MISSING:
    from pyln.testing.fixtures import *  # noqa: F401,F403,E402


@pytest.fixture
def plugin_path():
    return os.path.join(ROOT, "plugin.py")


@pytest.fixture
def show(pytestconfig):
    """A result line, straight to the terminal: pytest captures lightningd's logs."""
    reporter = pytestconfig.pluginmanager.getplugin("terminalreporter")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def show(text: str) -> None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(text)
    return show

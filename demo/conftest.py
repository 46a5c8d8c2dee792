"""The demo runs on real lightningd + bitcoind through pyln-testing, its logs kept in files."""

import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
MISSING = [name for name in ("lightningd", "bitcoind") if shutil.which(name) is None]
LOGS = os.environ.get("ASYNCLN_DEMO_DIR", "/tmp/asyncln-demo")
os.environ.setdefault("RUST", "0")

if MISSING:
    sys.exit(f"make demo needs real binaries: {', '.join(MISSING)} not on PATH (README, 'Integration tests')")

from pyln.testing.fixtures import *  # noqa: F401,F403,E402


@pytest.fixture
def directory(test_name):
    """One kept folder per story (pyln-testing deletes a passing test's): lightningd's logs stay readable."""
    path = os.path.join(LOGS, test_name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    yield path


@pytest.fixture
def plugin_path():
    return os.path.join(ROOT, "plugin.py")


@pytest.fixture
def say(pytestconfig):
    """A line of the story, straight to the terminal: pytest captures the rest, lightningd's logs included."""
    reporter = pytestconfig.pluginmanager.getplugin("terminalreporter")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def say(text: str) -> None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(text)
    return say

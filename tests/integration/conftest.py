"""Integration tier: real lightningd + bitcoind (regtest) through pyln-testing.

Without both binaries on PATH every test here is skipped, and the skip
reason names what is missing (run pytest with -rs to see it).
"""

import os
import shutil

import pytest

MISSING = [name for name in ("lightningd", "bitcoind") if shutil.which(name) is None]
os.environ.setdefault("RUST", "0")  # our lightningd may lack the Rust plugins

if not MISSING:
    from pyln.testing.fixtures import *  # noqa: F401,F403,E402


def pytest_collection_modifyitems(config, items):
    if not MISSING:
        return
    skip = pytest.mark.skip(reason=f"integration tier needs real binaries: {', '.join(MISSING)} "
                                   "not on PATH (see README, 'Integration tests')")
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(skip)


PLUGIN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "plugin.py")


@pytest.fixture
def plugin_path():
    return PLUGIN

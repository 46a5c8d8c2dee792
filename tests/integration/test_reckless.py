"""Issue 12.1 on real lightningd: CLN's reckless installs asyncln from a local clone, and lightningd runs it."""

import os
import shutil
import subprocess
import sys

import pytest
from helpers import HOLD_OPTS, call

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECKLESS = os.environ.get("ASYNCLN_RECKLESS",
                          os.path.join(os.path.expanduser("~"), "ln-build", "lightning", "tools", "reckless"))
IGNORE = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", ".hypothesis", "*.pyc")


@pytest.mark.skipif(not os.path.isfile(RECKLESS),
                    reason=f"CLN's tools/reckless is not at {RECKLESS}: ../shared/tools/build-ln.sh leaves "
                           "the CLN source tree at ~/ln-build/lightning (or set ASYNCLN_RECKLESS)")
def test_reckless_installs_from_a_local_clone_and_lightningd_runs_it(node_factory, tmp_path):
    checkout = tmp_path / "asyncln"   # reckless wants the directory named after the plugin
    shutil.copytree(ROOT, checkout, ignore=IGNORE)
    node = node_factory.get_node(start=False, options={k: v for k, v in HOLD_OPTS.items()
                                                       if k != "may_reconnect"})
    lightning_dir = node.daemon.lightning_dir
    # reckless edits the network's config file (it asks before creating one): give it an empty one.
    os.makedirs(os.path.join(lightning_dir, "regtest"), exist_ok=True)
    open(os.path.join(lightning_dir, "regtest", "config"), "a").close()

    def reckless(*args):
        run = subprocess.run([sys.executable, RECKLESS, "--lightning", lightning_dir, "--network", "regtest",
                              *args], capture_output=True, text=True, timeout=600)
        return run.returncode, run.stdout + run.stderr

    # No network to GitHub here: only the local clone is a source.
    reckless("source", "remove", "https://github.com/lightningd/plugins")
    code, out = reckless("install", str(checkout))
    assert code == 0, out
    installed = os.path.join(lightning_dir, "reckless", "asyncln")
    assert os.path.isfile(os.path.join(installed, "asyncln.py")), out   # reckless's wrapper
    with open(os.path.join(lightning_dir, "reckless", "regtest-reckless.conf")) as conf:
        assert "asyncln" in conf.read(), out

    node.start()
    assert any(p["name"].endswith("asyncln.py") and p["active"] for p in node.rpc.plugin("list")["plugins"])
    assert call(node, "asyncln-getinfo")["version"]
    assert node.daemon.is_in_log(r"plugin-asyncln.py: asyncln: .* held")

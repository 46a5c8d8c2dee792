# asyncln: `make demo` sets up and runs the regtest demo, `make test` runs every test tier.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export RUST ?= 0
# lightningd starts plugin.py through its `python3` shebang: use the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup test unit stdio integration bench demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -c "import coincurve, pyln.client, pyln.proto, pyln.testing"
	touch $@

# All tiers; the integration tier skips (and says why) without lightningd/bitcoind.
test: setup
	$(PY) -m pytest -ra tests

unit: setup
	$(PY) -m pytest -ra tests --ignore=tests/integration --ignore=tests/test_plugin_stdio.py

stdio: setup
	$(PY) -m pytest -ra tests/test_plugin_stdio.py

integration: setup
	$(PY) -m pytest -ra tests/integration

bench: setup
	$(PY) bench/bench_htlc.py
	$(PY) bench/bench_load.py
	$(PY) bench/bench_core.py

# On a local regtest: A pays offline B through S; then B, offline from the
# start, is paid through its Rod R with an invoice it deposited there.
demo: setup
	@for bin in lightningd bitcoind; do command -v $$bin >/dev/null || \
	  echo "demo: $$bin is not on PATH, so the regtest demo cannot run (see README, 'Integration tests')"; done
	$(PY) -m pytest -s -q -rs tests/integration/test_scenario.py tests/integration/test_rod_flows.py \
	  -k "offline_recipient_is_paid or private_recipient_paid_through_its_rod"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

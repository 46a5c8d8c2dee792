# asyncln: `make demo` sets up and runs the regtest demo, `make test` runs every test tier.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export RUST ?= 0
# lightningd starts plugin.py through its `python3` shebang: use the venv's.
# lightningd/bitcoind from PATH, else from ../shared/tools/build-ln.sh's $$HOME/ln-build/bin.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH):$(HOME)/ln-build/bin

.PHONY: setup test smoke unit stdio integration postgres bench demo plot lock clean

setup: $(VENV)/.installed

# Every package, transitive ones included, comes from the hash-locked file:
# a fresh machine installs exactly what CI tested, whatever the registry serves.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements-dev.txt
	$(PY) -c "import coincurve, pyln.client, pyln.proto, pyln.testing"
	touch $@

# The smoke test goes first: a broken dependency fails in seconds, named.
# Then all tiers; the integration tier skips (and says why) without lightningd/bitcoind.
test: smoke
	$(PY) -m pytest -ra tests
	$(MAKE) --no-print-directory postgres

smoke: setup
	$(PY) -m pytest -q tests/test_smoke.py

unit: setup
	$(PY) -m pytest -ra tests --ignore=tests/integration --ignore=tests/test_plugin_stdio.py

stdio: setup
	$(PY) -m pytest -ra tests/test_plugin_stdio.py

integration: setup
	$(PY) -m pytest -ra tests/integration

# The money-safety and restart tests again with lightningd on PostgreSQL (pyln-testing's
# TEST_DB_PROVIDER). PostgreSQL refuses root: as root, tests/integration/postgres runs it as `postgres`.
PG_TESTS := tests/integration/test_money_safety.py
postgres: setup
	@if ! command -v pg_config >/dev/null || [ ! -x "$$(pg_config --bindir)/initdb" ]; then \
	  echo "SKIPPED postgres tier: PostgreSQL's initdb is not installed (apt-get install postgresql)"; \
	else \
	  pg=$$( [ "$$(id -u)" = 0 ] && echo "$(CURDIR)/tests/integration/postgres:" ); \
	  PATH="$$pg$$PATH" TEST_DB_PROVIDER=postgres $(PY) -m pytest -ra $(PG_TESTS); \
	fi

bench: setup
	$(PY) bench/bench_htlc.py
	$(PY) bench/bench_load.py
	$(PY) bench/bench_core.py
	$(PY) bench/bench_recovery.py
	$(PY) -m pytest -q -p no:cacheprovider --no-header bench/bench_fees.py

# On a local regtest: A pays offline B through S; then B, offline from the
# start, is paid through its Rod R with an invoice it deposited there. About
# 20 lines of story; lightningd's logs go to files under /tmp/asyncln-demo.
demo: setup
	$(PY) -m pytest -qq --no-header -p no:cacheprovider --show-capture=no --tb=short demo

# The picture of what holding buys (README): the real hold.Relay against a simulated
# chain and an offline recipient, polling vs waking vs a webhook push. Under a minute.
plot: setup
	$(PY) -m plot.draw docs/holding.png

# Regenerate the hash locks from requirements.in and requirements-dev.in, from the
# default package index only (no machine-local wheel folders or indexes).
LOCK_ENV := env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock"
LOCK_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --upgrade
lock: setup
	$(LOCK_ENV) $(PY) -m piptools compile $(LOCK_FLAGS) -o requirements.txt requirements.in
	$(LOCK_ENV) $(PY) -m piptools compile $(LOCK_FLAGS) -o requirements-dev.txt requirements-dev.in

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

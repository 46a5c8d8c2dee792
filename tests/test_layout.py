"""pytest imports test modules by basename (rootdir-less layout): two files with one name break collection."""

import os

TESTS = os.path.dirname(os.path.abspath(__file__))


def test_no_two_test_files_share_a_basename():
    seen = {}
    for folder, _, files in os.walk(TESTS):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                seen.setdefault(name, []).append(os.path.relpath(os.path.join(folder, name), TESTS))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def test_postgres_tier_test_names_fit_a_database_name():
    """pyln-testing names each node's PostgreSQL database test_node-id_nonce, and PostgreSQL cuts
    names at 63 bytes: a longer test name drops the node id (and the nonce), and two nodes collide."""
    import re
    with open(os.path.join(TESTS, "integration", "test_money_safety.py")) as f:   # make postgres
        names = re.findall(r"^def (test_\w+)", f.read(), re.M)
    assert names and all(len(name) <= 55 for name in names), [n for n in names if len(n) > 55]

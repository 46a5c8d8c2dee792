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

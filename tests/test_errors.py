"""One error vocabulary: the README's error table lists exactly asyncln's codes."""

import os
import re

from asyncln.errors import Code

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_readme_error_table_matches_the_codes():
    text = open(README).read()
    table = text[text.index("Errors (all in `asyncln/errors.py`"):]
    table = table[:table.index("\n\n", table.index("|"))]
    documented = {int(code) for code in re.findall(r"^\| (-?\d{4,5}) \|", table, re.M)}
    assert documented == {int(code) for code in Code}

#!/usr/bin/env python3
"""plugin.py whose onion peeling raises a non-DecodeError, as it did with cryptography 51."""

import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from asyncln import peel  # noqa: E402


def read(*args, **kwargs):
    raise ValueError("data and buf must not overlap")


peel.read = read
runpy.run_path(os.path.join(ROOT, "plugin.py"), run_name="__main__")

#!/usr/bin/env python3
"""The entry point reckless looks for (``<name>.py`` beside requirements.txt); it runs plugin.py.

Use plugin.py with ``--plugin=``; this file exists for ``reckless install``.
"""

import os
import runpy

runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugin.py"), run_name="__main__")

"""Run the plugin as ``python -m asyncln``: reckless's wrapper calls ``runpy.run_module("asyncln")``.

The package shadows the top-level ``asyncln.py`` that reckless looks for, so
this is where reckless-installed asyncln starts; plugin.py stays the one entry.
"""

import os
import runpy

runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugin.py"),
               run_name="__main__")

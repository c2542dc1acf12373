"""Only the C extension is declared here; everything else is in pyproject.toml.

``runtel._hotpath_c`` is ``Run.log``'s common case in C. It is optional: where it cannot be
compiled, runtel installs and runs on its pure-Python twin (``runtel._hotpath_py``), about 5x slower
a call. CI requires it (``tests/test_hotpath.py``).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("runtel._hotpath_c", ["sdk/_hotpath_c.c"], optional=True)])

"""costwarden's tests.

A pytest-xdist worker starts with COLUMNS=80 in its environment, which the CLI's rich
consoles would keep for good once ``costwarden.cli`` is imported (by ``tests.helpers``,
before any test runs); without it they read the width when they print, and a test sets the
width it needs when it runs the CLI (``tests.helpers.invoke_cli``).
"""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)

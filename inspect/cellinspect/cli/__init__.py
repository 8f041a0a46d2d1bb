"""The `cellinspect` command: one Typer app, one module per group of sub-commands.

`root` builds the app and registers the groups; `support` holds what they share (consoles,
options, user errors -> exit 1). Entry points: `cellinspect.cli:main` and `python -m cellinspect`.
"""

from cellinspect.cli.root import app, main

__all__ = ["app", "main"]

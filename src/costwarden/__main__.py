"""``python -m costwarden``: the command line."""

from costwarden.cli.main import main

main()

"""``python -m privml`` is the ``privml`` command."""

from privml.cli import main

main()

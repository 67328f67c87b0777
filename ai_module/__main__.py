"""`python -m ai_module` runs the `aimod` command."""

from ai_module.cli import main

main()

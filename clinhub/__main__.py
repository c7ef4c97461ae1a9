"""`python -m clinhub` runs the CLI."""

from clinhub.cli import main

main()

"""`python -m imaging.cli`: the same as the `imaging` command."""

from imaging.cli import main

main()

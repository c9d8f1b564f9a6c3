"""python -m tunesmith: the same as the tunesmith command."""

from tunesmith.cli import main

main()

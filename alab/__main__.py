"""`python -m alab` is `alab`."""

from alab.cli import main

main()

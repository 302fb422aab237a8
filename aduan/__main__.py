"""`python -m aduan`: the same command line as `aduan`."""

from aduan.cli import main

main()

"""`python -m aduan`: the same command line as `aduan`."""

from aduan.cli import app

app()

"""One module per ``brewnet`` verb (see brewnet/cli.py)."""

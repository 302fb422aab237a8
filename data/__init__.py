"""Data files the project ships itself (the taxonomy), read with `importlib.resources`."""

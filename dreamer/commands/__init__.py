"""One module per command; each has a frozen config dataclass and a ``run`` function."""

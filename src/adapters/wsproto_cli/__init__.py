"""The ``wsproto`` command: demos and tools built on the public API only."""

"""Runnable experiments. Each is a typed config plus a ``run(config) -> metrics`` function."""

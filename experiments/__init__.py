"""Runnable experiments. Each is a typed config plus a ``run(config) -> metrics`` function."""


class Interrupted(RuntimeError):
    """Training stopped on SIGINT/SIGTERM; the experiment wrote no results from the unfinished model."""

    def __init__(self, event: str):
        super().__init__(event)
        self.signal = "SIGINT" if "SIGINT" in event else "SIGTERM"


def stop_if_interrupted(history) -> None:
    if history.interrupted:
        raise Interrupted(history.events[-1])

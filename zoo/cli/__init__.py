"""The ``zoo`` command line (typer + rich): ``app`` (the stage commands), ``options`` (shared
options and arguments), ``progress`` (progress bars and the JSON event log), ``tools``
(evaluate-generator, learn, push, pull)."""

from zoo.cli.app import app

__all__ = ["app"]

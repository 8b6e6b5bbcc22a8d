"""``python -m zoo`` is the ``zoo`` command."""

from .cli import app

app()

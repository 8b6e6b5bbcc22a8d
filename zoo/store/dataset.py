"""A built dataset folder, as readers find it: the folder itself and its ``layout.json``.

The build writes ``<out>/dataset`` (see :mod:`zoo.naming`); users pass either that folder or
the zoo's output folder. Every reader (``zoo.load``, ``zoo push``, ``zoo learn``, the generator
evaluation, ``zoo inspect``) resolves it here, the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from zoo.errors import BuildError
from zoo.layout import Layout
from zoo.naming import DATASET_DIR, LAYOUT_FILE


def dataset_folder(path: str | Path) -> Path:
    """The built dataset folder in ``path``: ``path`` itself or ``path/dataset``, whichever holds
    a ``layout.json``.

    Raises:
        BuildError: neither does (the zoo is not built yet, or ``path`` is not a zoo).
    """
    path = Path(path)
    for candidate in (path, path / DATASET_DIR):
        if (candidate / LAYOUT_FILE).is_file():
            return candidate
    raise BuildError(
        f"{path} is not a built zoo: no {LAYOUT_FILE} in it or in {path / DATASET_DIR}; build it "
        "first with `zoo build OUT` (or `zoo run RECIPE`)"
    )


def read_layouts(folder: str | Path) -> dict[str, Layout]:
    """Every config's :class:`Layout` of a built dataset folder (or a zoo's output folder)."""
    path = dataset_folder(folder) / LAYOUT_FILE
    return {name: Layout.from_dict(d) for name, d in json.loads(path.read_text()).items()}


def load_layout(folder: str | Path, config: str | None = None) -> Layout:
    """The layout of one config of a built dataset folder (the only config if ``None``).

    Example:
        >>> layout = zoo.load_layout("out/quickstart", "mlp_d2_w32")  # doctest: +SKIP
    """
    layouts = read_layouts(folder)
    if config is None and len(layouts) == 1:
        config = next(iter(layouts))
    if config not in layouts:
        raise BuildError(f"{folder}: no config {config!r}; configs: {sorted(layouts)}")
    return layouts[config]

"""The wheel ships every subpackage of zoo/ and its contract files (issue 12: a wheel must not
silently drop a subpackage)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_wheel_holds_and_imports_every_subpackage(tmp_path):
    src = tmp_path / "src"  # a copy: building must not write into the checkout
    for name in ("zoo", "schemas", "cards"):
        shutil.copytree(
            ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("zoo-*.whl")
    packages = sorted(
        ".".join(p.relative_to(ROOT).parent.parts) for p in (ROOT / "zoo").rglob("__init__.py")
    )
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    for package in packages:
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    for data in (
        "zoo/__init__.pyi",
        "zoo/schemas/recipe.schema.json",
        "zoo/schemas/checkpoint.features.json",
        "zoo/cards/dataset_card.md",
    ):
        assert data in names, data
    # import every subpackage from the unpacked wheel, away from the checkout
    code = (
        "import importlib, sys, zoo; assert zoo.__file__.startswith(sys.argv[1]), zoo.__file__; "
        "[importlib.import_module(p) for p in sys.argv[2:]]; "
        "from zoo.recipe import recipe_schema; assert recipe_schema()['properties']; "
        "print(zoo.Layout.__module__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "site"), *packages],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "zoo.layout"

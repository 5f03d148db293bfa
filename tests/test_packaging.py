"""The install puts the three layers under one namespace, ``distilsearch``: no generic top-level module."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("kdlib", "envs", "search")


def test_every_package_folder_is_listed_for_installation() -> None:
    settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        "distilsearch." + ".".join(init.parent.relative_to(REPO).parts)
        for layer in LAYERS
        for init in (REPO / layer).rglob("__init__.py")
    }
    assert set(settings["packages"]) == folders
    assert settings["package-dir"] == {f"distilsearch.{layer}": layer for layer in LAYERS}


def test_the_package_imports_beside_user_modules_named_like_its_layers(tmp_path: Path) -> None:
    for name in LAYERS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"USER_MODULE = {name!r}\n")
    script = (
        "import envs, search, kdlib, gymnasium\n"
        "import distilsearch.envs, distilsearch.search.cli.main, distilsearch.kdlib.students.specs\n"
        "assert envs.USER_MODULE == 'envs' and search.USER_MODULE == 'search' and kdlib.USER_MODULE == 'kdlib'\n"
        "spec = gymnasium.spec('distilsearch/StudentSearch-v0')\n"
        "assert spec.entry_point == 'distilsearch.envs.student_search:StudentSearchEnv', spec.entry_point\n"
        "print(distilsearch.envs.__file__)\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == REPO / "envs" / "__init__.py"


def test_no_layer_is_importable_as_a_top_level_module(tmp_path: Path) -> None:
    script = "import importlib.util as u; print([n for n in ('kdlib', 'envs', 'search') if u.find_spec(n)])"
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_one_store_file_name() -> None:
    from distilsearch.envs.store import STORE_FILE
    from distilsearch.search.run_layout import STORE

    assert STORE == STORE_FILE == "store.sqlite"

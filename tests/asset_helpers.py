"""A toy asset for the asset tests: a minimal wheel, its Asset record and its registration."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from distilsearch.kdlib.data import assets
from distilsearch.kdlib.data.assets import Asset


def make_wheel(folder: Path, package: str = "toyasset", version: str = "0.1.0") -> Path:
    """A minimal valid wheel holding toyasset/data/{a,b}.txt and a file we do not want."""
    path = folder / f"{package}-{version}-py3-none-any.whl"
    dist_info = f"{package}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{package}/data/a.txt", "alpha")
        wheel.writestr(f"{package}/data/b.txt", "beta")
        wheel.writestr(f"{package}/unwanted.py", "print('never extracted')")
        wheel.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        wheel.writestr(
            f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{dist_info}/RECORD", "")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def toy_asset(archive: Path, **changes: object) -> Asset:
    fields = {
        "name": "toy",
        "package": "toyasset",
        "version": "0.1.0",
        "filename": archive.name,
        "sha256": sha256(archive),
        "source": "pypi-wheel",
        "members": ("toyasset/data/",),
        "root": "toyasset/data",
        "description": "a toy asset",
    }
    return Asset(**(fields | changes))


def register(monkeypatch: pytest.MonkeyPatch, asset: Asset) -> None:
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)

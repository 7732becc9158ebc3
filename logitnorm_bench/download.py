"""Download a file with checksum verification, and extract archives without path traversal.

The standard library (and a progress meter: a bar on a terminal, periodic log lines elsewhere).  A download streams into a temporary file beside its destination and is
renamed into place only once complete and verified, so an interrupted or corrupt download never
leaves a file that looks like the real thing.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from logitnorm_bench.errors import ChecksumError, OodBenchError
from logitnorm_bench.progress import ByteMeter

_CHUNK = 1 << 20


class UnsafeArchiveError(OodBenchError, ValueError):
    """An archive member would land outside the target folder (or is a link, device, ...)."""


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download_url(url: str, dest_path: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
                 timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest_path`` and verify every checksum given.

    Raises :class:`ChecksumError` (naming the URL, expected and actual digest) on a mismatch; the
    downloaded bytes are deleted and ``dest_path`` is left untouched.  Network errors propagate
    (``urllib.error.URLError``, ``OSError``) and leave nothing behind either.
    """
    dest = Path(dest_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = {algo: digest.lower() for algo, digest in (("sha256", sha256), ("md5", md5)) if digest}
    hashes = {algo: hashlib.new(algo) for algo in expected}
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "ood-bench"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            meter = ByteMeter(dest.name, response.length)
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                meter.update(len(chunk))
                for h in hashes.values():
                    h.update(chunk)
            meter.close()
        for algo, want in expected.items():
            got = hashes[algo].hexdigest()
            if got != want:
                raise ChecksumError(f"{url}: {algo} mismatch, expected {want}, got {got}; the download was deleted")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _check_member(name: str, target: Path, archive: Path) -> None:
    """Refuse a member name that is absolute, climbs with ``..`` or resolves outside ``target``."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise UnsafeArchiveError(f"{archive}: refusing member {name!r}: it would be written outside {target}")
    resolved = (target / path).resolve()  # follows links already in target, so they cannot be used either
    if resolved != target and target not in resolved.parents:
        raise UnsafeArchiveError(f"{archive}: refusing member {name!r}: it resolves to {resolved}, outside {target}")


def extract_archive(archive: str | os.PathLike, target_dir: str | os.PathLike) -> Path:
    """Extract a tar (any compression) or zip archive into ``target_dir``.

    Every member is checked before anything is written: absolute paths, ``..`` components, links
    (symbolic or hard, wherever they point) and special files are refused with
    :class:`UnsafeArchiveError`.  Returns ``target_dir``.
    """
    archive, target = Path(archive), Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    target = target.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_member(info.filename, target, archive)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:  # S_IFLNK set by Unix zip tools
                    raise UnsafeArchiveError(f"{archive}: refusing member {info.filename!r}: links are not allowed")
            zf.extractall(target)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            for m in members:
                _check_member(m.name, target, archive)
                if m.issym() or m.islnk():
                    raise UnsafeArchiveError(f"{archive}: refusing member {m.name!r}: links are not allowed")
                if not (m.isfile() or m.isdir()):
                    raise UnsafeArchiveError(f"{archive}: refusing member {m.name!r}: not a file or folder")
            # The "data" filter (Python >= 3.10.12) repeats these checks and drops unsafe modes.
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(target, members=members, **extra)
    else:
        raise ValueError(f"{archive}: not a tar or zip archive")
    return target

"""download_url and extract_archive, against a loopback HTTP server and hand-made hostile archives."""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.error
import zipfile

import pytest

from logitnorm_bench.download import UnsafeArchiveError, download_url, extract_archive, file_hash
from logitnorm_bench.errors import ChecksumError




PAYLOAD = b"ood-bench test payload\n" * 1000


def test_download_with_good_checksums(serve, tmp_path):
    folder, url = serve
    (folder / "f.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "f.bin"
    got = download_url(f"{url}/f.bin", dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(),
                       md5=hashlib.md5(PAYLOAD).hexdigest().upper())  # case does not matter
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]  # no temp file left
    assert file_hash(dest, "md5") == hashlib.md5(PAYLOAD).hexdigest()


def test_download_without_checksum(serve, tmp_path):
    folder, url = serve
    (folder / "f.bin").write_bytes(PAYLOAD)
    assert download_url(f"{url}/f.bin", tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_bad_checksum_deletes_the_download(serve, tmp_path):
    folder, url = serve
    (folder / "f.bin").write_bytes(PAYLOAD)
    out = tmp_path / "out"
    with pytest.raises(ChecksumError) as err:
        download_url(f"{url}/f.bin", out / "f.bin", sha256="0" * 64)
    msg = str(err.value)
    assert f"{url}/f.bin" in msg and "0" * 64 in msg and hashlib.sha256(PAYLOAD).hexdigest() in msg
    assert list(out.iterdir()) == []


def test_bad_checksum_keeps_an_existing_file(serve, tmp_path):
    folder, url = serve
    (folder / "f.bin").write_bytes(PAYLOAD)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old")
    with pytest.raises(ChecksumError):
        download_url(f"{url}/f.bin", dest, md5="0" * 32)
    assert dest.read_bytes() == b"old"


def test_http_error_leaves_nothing(serve, tmp_path):
    _, url = serve
    out = tmp_path / "out"
    with pytest.raises(urllib.error.HTTPError):
        download_url(f"{url}/missing.bin", out / "missing.bin", sha256="0" * 64)
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------------------------


def _tar(path, members):
    """members: list of TarInfo-or-(name, bytes)."""
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                name, data = m
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_extract_tar_and_zip(tmp_path):
    tgz = _tar(tmp_path / "a.tar.gz", [("top/sub/a.txt", b"A"), ("top/b.txt", b"B")])
    out = extract_archive(tgz, tmp_path / "x")
    assert (out / "top/sub/a.txt").read_bytes() == b"A" and (out / "top/b.txt").read_bytes() == b"B"

    zpath = tmp_path / "a.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("top/c.txt", b"C")
    assert (extract_archive(zpath, tmp_path / "z") / "top/c.txt").read_bytes() == b"C"


@pytest.mark.parametrize("member", [
    ("../evil.txt", b"x"),
    ("ok/../../evil.txt", b"x"),
    ("/tmp/ood_bench_evil_abs.txt", b"x"),
    _link("link", "/etc/passwd"),
    _link("inside_link", "top/a.txt"),  # all links refused, even harmless ones
    _link("hard", "/etc/passwd", tarfile.LNKTYPE),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-in", "hardlink"])
def test_tar_refuses_unsafe_members_before_writing_anything(tmp_path, member):
    tgz = _tar(tmp_path / "bad.tar.gz", [("top/a.txt", b"A"), member])
    target = tmp_path / "x"
    with pytest.raises(UnsafeArchiveError, match="refusing member"):
        extract_archive(tgz, target)
    assert list(target.iterdir()) == []  # checked before extraction: not even the good member
    assert not (tmp_path / "evil.txt").exists()


def test_tar_refuses_writing_through_an_existing_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "x"
    target.mkdir()
    (target / "sneaky").symlink_to(outside, target_is_directory=True)
    tgz = _tar(tmp_path / "a.tar.gz", [("sneaky/f.txt", b"x")])
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract_archive(tgz, target)
    assert list(outside.iterdir()) == []


def test_zip_refuses_dotdot_and_links(tmp_path):
    zpath = tmp_path / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(UnsafeArchiveError, match="refusing member '../evil.txt'"):
        extract_archive(zpath, tmp_path / "x")
    assert not (tmp_path / "x" / "ok.txt").exists() and not (tmp_path / "evil.txt").exists()

    zlink = tmp_path / "link.zip"
    with zipfile.ZipFile(zlink, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="links are not allowed"):
        extract_archive(zlink, tmp_path / "y")


def test_not_an_archive(tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("hello")
    with pytest.raises(ValueError, match="not a tar or zip"):
        extract_archive(f, tmp_path / "x")

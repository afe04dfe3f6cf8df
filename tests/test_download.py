"""Downloads against a real HTTP server on 127.0.0.1 started by the test, plus archive extraction.

The server supports ``Range`` requests and can be told, per path, to cut the connection after a
number of bytes, to ignore ``Range``, or to answer with an error status, so resuming, restarting and
checksum failures run over real sockets. No traffic leaves 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lungpipe.data.archive import MARKER_NAME, extract_archive
from lungpipe.data.download import (
    MissingChecksumError,
    RemoteFile,
    download_file,
    sha256_of,
)
from lungpipe.util.errors import ChecksumError, DataError, DownloadError

FAST = {"retries": 2, "backoff": 0.0, "timeout": 5.0, "progress": False, "chunk_size": 4096}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


@dataclass
class Resource:
    body: bytes
    cut_first_after: int | None = None  # first request: announce full length, send this many bytes, hang up
    cut_every_after: int | None = None  # every request is cut like that
    ignore_range: bool = False
    stall_first_after: int | None = None  # first request: send this many bytes, then go silent
    status: int | None = None  # answer every request with this error status
    redirect: str | None = None  # answer every request with 302 to this path


@dataclass
class Seen:
    path: str
    range: str | None
    status: int


@dataclass
class LocalServer:
    base: str
    resources: dict[str, Resource] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def serve(self, path: str, resource: Resource) -> str:
        self.resources[path] = resource
        return self.base + path


def _make_handler(server: LocalServer):
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _record(self, status: int) -> int:
            with lock:
                server.seen.append(Seen(self.path, self.headers.get("Range"), status))
                return sum(1 for s in server.seen if s.path == self.path)

        def do_GET(self) -> None:
            res = server.resources.get(self.path)
            if res is None:
                self._record(404)
                self.send_error(404)
                return
            if res.redirect is not None:
                self._record(302)
                self.send_response(302)
                self.send_header("Location", res.redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if res.status is not None:
                self._record(res.status)
                self.send_error(res.status)
                return
            body, start = res.body, 0
            wanted = self.headers.get("Range")
            match = re.fullmatch(r"bytes=(\d+)-", wanted or "")
            if match and not res.ignore_range:
                start = int(match.group(1))
                if start >= len(body):
                    self._record(416)
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            else:
                status = 200
            n_request = self._record(status)
            self.send_response(status)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            payload = body[start:]
            cut = res.cut_every_after if res.cut_every_after is not None else (
                res.cut_first_after if n_request == 1 else None)
            if cut is not None:
                payload = payload[:cut]
            if res.stall_first_after is not None and n_request == 1:
                self.wfile.write(payload[: res.stall_first_after])
                self.wfile.flush()
                time.sleep(1.0)  # longer than the client's timeout
                self.close_connection = True
                return
            self.wfile.write(payload)
            self.wfile.flush()
            self.close_connection = True

    return Handler


@pytest.fixture
def server():
    local = LocalServer(base="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(local))
    httpd.daemon_threads = True
    local.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield local
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --------------------------------------------------------------------------- RemoteFile, sha256_of


def test_remote_file_names_and_validates():
    digest = "AB" * 32
    remote = RemoteFile("https://example.org/a/ICBHI%20final.zip?dl=1", digest)
    assert remote.filename == "ICBHI final.zip"
    assert remote.sha256 == "ab" * 32  # normalised to lower case
    assert RemoteFile("https://example.org/x.zip", None, filename="y.zip").filename == "y.zip"
    assert RemoteFile("https://example.org/x.zip", "  ").sha256 is None  # empty = unknown
    with pytest.raises(DownloadError, match="64 hexadecimal"):
        RemoteFile("https://example.org/x.zip", "abc")
    with pytest.raises(DownloadError, match="file name"):
        RemoteFile("https://example.org/dir/", None)
    with pytest.raises(DownloadError, match="http"):
        RemoteFile("ftp://example.org/x.zip", None)


def test_sha256_of_matches_hashlib(tmp_path):
    data = _random_bytes(3 * (1 << 20) + 17)  # spans several read chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_of(path) == _digest(data)
    assert sha256_of(path, chunk_size=7) == _digest(data)


# --------------------------------------------------------------------------- downloads


def test_archive_downloaded_verified_and_extracted(server, tmp_path):
    members = {"db/a.txt": b"cycle 0.1 0.9 0 1\n", "db/sub/b.wav": _random_bytes(5000, seed=1)}
    body = _zip_bytes(members)
    url = server.serve("/files/ICBHI.zip", Resource(body))

    path = download_file(RemoteFile(url, _digest(body)), tmp_path / "raw", **FAST)

    assert path == tmp_path / "raw" / "ICBHI.zip"
    assert path.read_bytes() == body
    assert not (tmp_path / "raw" / "ICBHI.zip.part").exists()
    assert [s.range for s in server.seen] == [None]

    out = extract_archive(path, tmp_path / "extracted")
    for name, data in members.items():
        assert (out / name).read_bytes() == data
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_progress_bar_path_downloads_same_bytes(server, tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    body = _random_bytes(50_000, seed=2)
    url = server.serve("/p.bin", Resource(body))
    path = download_file(RemoteFile(url, _digest(body)), tmp_path, **{**FAST, "progress": True})
    assert path.read_bytes() == body


def test_cut_connection_is_resumed_with_range(server, tmp_path):
    body = _random_bytes(200_000, seed=3)
    cut = 70_001
    url = server.serve("/big.bin", Resource(body, cut_first_after=cut))

    path = download_file(RemoteFile(url, _digest(body)), tmp_path, **FAST)

    assert path.read_bytes() == body
    assert [(s.range, s.status) for s in server.seen] == [(None, 200), (f"bytes={cut}-", 206)]


def test_resume_through_a_redirect(server, tmp_path):
    body = _random_bytes(80_000, seed=18)
    server.serve("/objects/blob", Resource(body, cut_first_after=20_000))
    url = server.serve("/releases/data.zip", Resource(b"", redirect="/objects/blob"))
    path = download_file(RemoteFile(url, _digest(body)), tmp_path, **FAST)
    assert path.name == "data.zip" and path.read_bytes() == body
    assert [(s.path, s.range, s.status) for s in server.seen] == [
        ("/releases/data.zip", None, 302), ("/objects/blob", None, 200),
        ("/releases/data.zip", "bytes=20000-", 302), ("/objects/blob", "bytes=20000-", 206),
    ]


def test_interrupted_call_keeps_part_and_next_call_resumes(server, tmp_path):
    body = _random_bytes(120_000, seed=4)
    url = server.serve("/x.bin", Resource(body, cut_first_after=30_000))
    remote = RemoteFile(url, _digest(body))

    with pytest.raises(DownloadError, match="1 attempt"):
        download_file(remote, tmp_path, **{**FAST, "retries": 0})
    part = tmp_path / "x.bin.part"
    assert part.read_bytes() == body[:30_000]
    assert not (tmp_path / "x.bin").exists()

    assert download_file(remote, tmp_path, **FAST).read_bytes() == body
    assert server.seen[-1].range == "bytes=30000-"
    assert not part.exists()


def test_read_timeout_is_retried_and_resumed(server, tmp_path):
    body = _random_bytes(50_000, seed=17)
    url = server.serve("/slow.bin", Resource(body, stall_first_after=10_000))
    path = download_file(RemoteFile(url, _digest(body)), tmp_path, **{**FAST, "timeout": 0.3})
    assert path.read_bytes() == body
    assert [s.range for s in server.seen] == [None, "bytes=10000-"]


def test_retries_are_bounded(server, tmp_path):
    body = _random_bytes(40_000, seed=5)
    url = server.serve("/flaky.bin", Resource(body, cut_every_after=1000))
    with pytest.raises(DownloadError, match="3 attempt"):
        download_file(RemoteFile(url, _digest(body)), tmp_path, **FAST)  # 1 try + 2 retries
    assert len(server.seen) == 3
    # every retry resumed from what was on disk: 0, 1000, 2000
    assert [s.range for s in server.seen] == [None, "bytes=1000-", "bytes=2000-"]
    assert (tmp_path / "flaky.bin.part").read_bytes() == body[:3000]


def test_corrupted_body_is_rejected(server, tmp_path):
    body = _random_bytes(60_000, seed=6)
    damaged = bytearray(body)
    damaged[12_345] ^= 0xFF
    url = server.serve("/c.bin", Resource(bytes(damaged)))

    with pytest.raises(ChecksumError) as err:
        download_file(RemoteFile(url, _digest(body)), tmp_path, **FAST)

    message = str(err.value)
    assert url in message and _digest(body) in message and _digest(bytes(damaged)) in message
    assert list(tmp_path.iterdir()) == []  # neither the final file nor the .part


def test_server_ignoring_range_still_gives_right_file(server, tmp_path):
    body = _random_bytes(90_000, seed=7)
    url = server.serve("/norange.bin", Resource(body, cut_first_after=25_000, ignore_range=True))

    path = download_file(RemoteFile(url, _digest(body)), tmp_path, **FAST)

    assert path.read_bytes() == body
    assert [(s.range, s.status) for s in server.seen] == [(None, 200), ("bytes=25000-", 200)]


def test_stale_part_with_wrong_bytes_is_replaced_when_range_ignored(server, tmp_path):
    body = _random_bytes(30_000, seed=8)
    (tmp_path / "s.bin.part").write_bytes(b"garbage from some older attempt")
    url = server.serve("/s.bin", Resource(body, ignore_range=True))
    assert download_file(RemoteFile(url, _digest(body)), tmp_path, **FAST).read_bytes() == body


def test_complete_part_is_finalised_without_a_request(server, tmp_path):
    body = _random_bytes(10_000, seed=9)
    (tmp_path / "done.bin.part").write_bytes(body)
    url = server.serve("/done.bin", Resource(body))
    assert download_file(RemoteFile(url, _digest(body)), tmp_path, **FAST).read_bytes() == body
    assert server.seen == []


def test_416_for_complete_part_when_unverified(server, tmp_path):
    body = _random_bytes(10_000, seed=10)
    (tmp_path / "u.bin.part").write_bytes(body)
    url = server.serve("/u.bin", Resource(body))
    path = download_file(RemoteFile(url, None), tmp_path, allow_unverified=True, **FAST)
    assert path.read_bytes() == body
    assert [(s.range, s.status) for s in server.seen] == [("bytes=10000-", 416)]


def test_part_longer_than_resource_restarts_from_zero(server, tmp_path):
    body = _random_bytes(10_000, seed=11)
    (tmp_path / "l.bin.part").write_bytes(body + b"extra bytes that do not belong")
    url = server.serve("/l.bin", Resource(body))
    path = download_file(RemoteFile(url, _digest(body)), tmp_path, **FAST)
    assert path.read_bytes() == body
    assert [(s.range, s.status) for s in server.seen] == [(f"bytes={len(body) + 30}-", 416), (None, 200)]


def test_existing_correct_file_makes_no_request(server, tmp_path):
    body = _random_bytes(5_000, seed=12)
    (tmp_path / "have.bin").write_bytes(body)
    url = server.serve("/have.bin", Resource(body))
    assert download_file(RemoteFile(url, _digest(body)), tmp_path, **FAST) == tmp_path / "have.bin"
    assert server.seen == []


def test_existing_wrong_file_is_left_untouched(server, tmp_path):
    body = _random_bytes(5_000, seed=13)
    mine = b"the user's own file, not the dataset"
    (tmp_path / "have.bin").write_bytes(mine)
    url = server.serve("/have.bin", Resource(body))

    with pytest.raises(ChecksumError) as err:
        download_file(RemoteFile(url, _digest(body)), tmp_path, **FAST)

    message = str(err.value)
    assert str(tmp_path / "have.bin") in message
    assert _digest(body) in message and _digest(mine) in message and "delete or move" in message
    assert (tmp_path / "have.bin").read_bytes() == mine
    assert server.seen == []


def test_missing_checksum_reports_digest_then_finishes_offline(server, tmp_path):
    body = _random_bytes(20_000, seed=14)
    url = server.serve("/n.bin", Resource(body))

    with pytest.raises(MissingChecksumError) as err:
        download_file(RemoteFile(url, None), tmp_path, **FAST)
    assert _digest(body) in str(err.value)
    assert not (tmp_path / "n.bin").exists()
    assert len(server.seen) == 1

    # the user pastes the digest into params: no second download
    path = download_file(RemoteFile(url, _digest(body)), tmp_path, **FAST)
    assert path.read_bytes() == body
    assert len(server.seen) == 1


def test_http_404_fails_without_retries(server, tmp_path):
    url = server.base + "/missing.zip"
    with pytest.raises(DownloadError, match="404"):
        download_file(RemoteFile(url, "0" * 64), tmp_path, **FAST)
    assert len(server.seen) == 1


def test_http_503_is_retried(server, tmp_path):
    url = server.serve("/busy.bin", Resource(b"x", status=503))
    with pytest.raises(DownloadError, match="503"):
        download_file(RemoteFile(url, "0" * 64), tmp_path, **FAST)
    assert len(server.seen) == 3


# --------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("name,make", [
    ("d.zip", _zip_bytes),
    ("d.tar", lambda m: _tar_bytes(m, "w")),
    ("d.tar.gz", _tar_bytes),
    ("d.tgz", _tar_bytes),
])
def test_extract_formats_and_second_call_is_noop(tmp_path, name, make):
    members = {"top/x.txt": b"x", "top/deep/y.bin": _random_bytes(2000, seed=15)}
    archive = tmp_path / name
    archive.write_bytes(make(members))
    dest = tmp_path / "out"

    assert extract_archive(archive, dest) == dest
    for member, data in members.items():
        assert (dest / member).read_bytes() == data
    assert (dest / MARKER_NAME).is_file()

    (dest / "top" / "x.txt").write_bytes(b"edited")  # a no-op must not rewrite anything
    extract_archive(archive, dest)
    assert (dest / "top" / "x.txt").read_bytes() == b"edited"


def test_extract_replaces_own_extraction_of_another_archive(tmp_path):
    first, second = tmp_path / "v1.zip", tmp_path / "v2.zip"
    first.write_bytes(_zip_bytes({"old.txt": b"1"}))
    second.write_bytes(_zip_bytes({"new.txt": b"2"}))
    dest = tmp_path / "out"
    extract_archive(first, dest)
    extract_archive(second, dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted([MARKER_NAME, "new.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "v1.zip", "v2.zip"]


def test_extract_refuses_foreign_folder(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({"a.txt": b"a"}))
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not extracted by lungpipe"):
        extract_archive(archive, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("name,make,member", [
    ("evil.zip", _zip_bytes, "../escaped.txt"),
    ("evil.zip", _zip_bytes, "ok/../../escaped.txt"),
    ("evil.tar.gz", _tar_bytes, "../escaped.txt"),
    ("evil.tar.gz", _tar_bytes, "/tmp/escaped.txt"),
])
def test_path_traversal_member_is_refused(tmp_path, name, make, member):
    archive = tmp_path / "in" / name
    archive.parent.mkdir()
    archive.write_bytes(make({"fine.txt": b"fine", member: b"pwned"}))
    dest = tmp_path / "work" / "out"

    with pytest.raises(DataError, match="refusing to extract") as err:
        extract_archive(archive, dest)

    assert member in str(err.value)
    assert not dest.exists()
    assert list((tmp_path / "work").iterdir()) == []  # staging folder removed
    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))


def test_symlink_leaving_folder_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        link = tarfile.TarInfo("data/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../etc/passwd"
        tf.addfile(link)
    archive = tmp_path / "l.tar"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="symbolic link"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_and_unknown_archives_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match="not a readable zip"):
        extract_archive(bad, tmp_path / "out")
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(_tar_bytes({"a.bin": _random_bytes(50_000, seed=16)})[:2000])
    with pytest.raises(DataError, match="not a readable tar"):
        extract_archive(truncated, tmp_path / "out")
    odd = tmp_path / "x.rar"
    odd.write_bytes(b"rar")
    with pytest.raises(DataError, match="unknown archive type"):
        extract_archive(odd, tmp_path / "out")
    assert not (tmp_path / "out").exists()

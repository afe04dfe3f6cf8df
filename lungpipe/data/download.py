"""Resumable, checksum-verified downloads of dataset files over HTTP(S), with the stdlib only.

A download streams into ``<dest_dir>/<filename>.part``. When the bytes are complete and their
SHA-256 matches, the partial file is renamed onto its final name, so a file with the final name
is always complete and verified. An interrupted download leaves the ``.part`` file behind; the
next call (or the next retry) asks the server for the remaining bytes with a ``Range`` request.

A file that already carries the final name is never overwritten or deleted: if its digest matches
it is returned at once (no network), otherwise :class:`~lungpipe.util.errors.ChecksumError` explains
what to do.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from lungpipe.util.errors import ChecksumError, DownloadError

if TYPE_CHECKING:
    from typing import Self

logger = logging.getLogger(__name__)

USER_AGENT = "lungpipe-download/0.1"
PART_SUFFIX = ".part"

# HTTP statuses worth another try: the server may answer differently a moment later.
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# How often one call may throw away its partial bytes and start again from zero.
_MAX_RESTARTS = 3
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


class MissingChecksumError(DownloadError):
    """No expected SHA-256 was given and the caller did not allow an unverified file."""


@dataclass
class RemoteFile:
    """A file to fetch: its URL, its expected SHA-256 (lower-case hex) and the name to save it as.

    ``sha256`` None (or an empty string) means unknown; see ``download_file(allow_unverified=...)``.
    ``filename`` defaults to the last segment of the URL's path (percent-decoded).
    """

    url: str
    sha256: str | None
    filename: str | None = None

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DownloadError(
                f"{self.url!r}: not an http(s) URL; give the full address, e.g. https://host/path/file.zip"
            )
        if self.sha256 is not None and not self.sha256.strip():
            self.sha256 = None  # `sha256: ""` in params means "unknown"
        if self.sha256 is not None:
            digest = self.sha256.strip().lower()
            if not _SHA256_HEX.match(digest):
                raise DownloadError(
                    f"{self.url}: sha256 {self.sha256!r} is not 64 hexadecimal characters; "
                    "paste the full SHA-256 digest (e.g. the output of `sha256sum FILE`)"
                )
            self.sha256 = digest
        if self.filename is None:
            self.filename = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1])
        if not self.filename or self.filename in (".", "..") or "/" in self.filename or "\\" in self.filename:
            raise DownloadError(
                f"{self.url}: cannot use {self.filename!r} as a file name; "
                "set `filename` to a plain name such as 'archive.zip'"
            )


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes as lower-case hex, read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    remote: RemoteFile,
    dest_dir: str | os.PathLike,
    *,
    retries: int = 3,
    timeout: float = 30.0,
    chunk_size: int = 1 << 16,
    backoff: float = 1.0,
    progress: bool = True,
    allow_unverified: bool = False,
) -> Path:
    """Download ``remote`` into ``dest_dir`` and return the path of the verified file.

    - An existing ``dest_dir/<filename>`` whose SHA-256 matches is returned without any request;
      one that does not match raises :class:`ChecksumError` and is left untouched.
    - Bytes stream into ``<filename>.part``; an existing ``.part`` is resumed with a ``Range``
      request (a server that ignores it is handled by starting again from zero).
    - Connection errors, timeouts, truncated bodies and HTTP 408/425/429/5xx are retried up to
      ``retries`` more times, waiting ``backoff * 2**(n-1)`` seconds before retry ``n``; each
      retry resumes from the bytes already on disk. Other HTTP errors fail at once.
    - A fresh download whose digest does not match raises :class:`ChecksumError` and deletes the
      ``.part`` file; nothing gets the final name.
    - ``remote.sha256 = None`` is accepted only with ``allow_unverified=True``; otherwise the file
      is downloaded, kept as ``.part`` and :class:`MissingChecksumError` reports its digest so it
      can be pasted into params (the next call then finishes without downloading again).
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    assert remote.filename is not None  # set by RemoteFile.__post_init__
    final = dest / remote.filename
    if final.exists():
        return _accept_existing(remote, final, allow_unverified)

    part = _PartFile(final.with_name(final.name + PART_SUFFIX))
    if not (remote.sha256 is not None and part.size and part.hexdigest() == remote.sha256):
        with _TransferBar(remote.filename, enabled=progress) as bar:
            _fetch_with_retries(remote, part, bar, retries=retries, timeout=timeout,
                                chunk_size=chunk_size, backoff=backoff)
    part.sync()
    actual = part.hexdigest()

    if remote.sha256 is None:
        if not allow_unverified:
            raise MissingChecksumError(
                f"{remote.url}: no sha256 given, so the download cannot be verified. Its SHA-256 is "
                f"{actual} (bytes kept in {part.path}). Check this digest against the publisher's "
                f"if one is published, then add `sha256: {actual}` to this file's entry in params.yaml "
                "and run again (the kept bytes are then used without downloading again); or allow an "
                "unverified file explicitly."
            )
        logger.warning("%s: saved without verification; its SHA-256 is %s", final, actual)
    elif actual != remote.sha256:
        part.path.unlink(missing_ok=True)
        raise ChecksumError(
            f"{remote.url}: downloaded bytes have SHA-256 {actual}, expected {remote.sha256}. "
            "The partial file was deleted. If the server sent a damaged or changed file, run again; "
            "if the dataset was re-published on purpose, check the new digest with the publisher and "
            "update sha256 in params.yaml."
        )
    os.replace(part.path, final)
    return final


def _accept_existing(remote: RemoteFile, final: Path, allow_unverified: bool) -> Path:
    """Decide about a file that already has the final name; never modify it."""
    actual = sha256_of(final)
    if remote.sha256 is None:
        if allow_unverified:
            logger.warning("%s: already present, used unverified; its SHA-256 is %s", final, actual)
            return final
        raise MissingChecksumError(
            f"{final}: already present but no sha256 was given for {remote.url}, so it cannot be "
            f"verified. Its SHA-256 is {actual}; if that is the publisher's digest, add "
            f"`sha256: {actual}` to this file's entry in params.yaml and run again."
        )
    if actual != remote.sha256:
        raise ChecksumError(
            f"{final}: the file already exists but its SHA-256 is {actual}, not the expected "
            f"{remote.sha256} for {remote.url}. It was left untouched. Fix: if it is damaged or an "
            "old version, delete or move it and run again to download it afresh; if you trust it, set "
            f"sha256 in params.yaml to {actual}."
        )
    return final


class _PartFile:
    """The ``.part`` file plus a running SHA-256 of the bytes it holds (no second read at the end)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rehash()

    def _rehash(self) -> None:
        self._hasher = hashlib.sha256()
        self.size = 0
        if self.path.exists():
            with open(self.path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    self._hasher.update(chunk)
                    self.size += len(chunk)

    def sync(self) -> None:
        """Re-read the file if its size no longer matches what was hashed (e.g. a failed write)."""
        on_disk = self.path.stat().st_size if self.path.exists() else 0
        if on_disk != self.size:
            self._rehash()

    def truncate(self) -> None:
        """Throw away the partial bytes and start from zero."""
        with open(self.path, "wb"):
            pass
        self._hasher = hashlib.sha256()
        self.size = 0

    def append(self, fh, chunk: bytes) -> None:
        fh.write(chunk)
        self._hasher.update(chunk)
        self.size += len(chunk)

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()


class _Transient(Exception):
    """A failure that another attempt may not see (truncated body, retryable HTTP status)."""


# Errors after which resuming is worth a try. URLError covers refused/unreachable connections and
# connect timeouts; HTTPException covers IncompleteRead and RemoteDisconnected.
_TRANSIENT_ERRORS = (
    _Transient, ConnectionError, TimeoutError, ssl.SSLError, http.client.HTTPException, urllib.error.URLError,
)


def _fetch_with_retries(remote: RemoteFile, part: _PartFile, bar: _TransferBar, *, retries: int,
                        timeout: float, chunk_size: int, backoff: float) -> None:
    failures = restarts = 0
    while True:
        part.sync()
        try:
            done = _fetch_once(remote, part, bar, timeout=timeout, chunk_size=chunk_size)
        except _TRANSIENT_ERRORS as exc:
            if isinstance(exc, (urllib.error.HTTPError, ssl.SSLCertVerificationError)) or (
                isinstance(exc, urllib.error.URLError)
                and isinstance(exc.reason, ssl.SSLCertVerificationError)
            ):
                raise DownloadError(f"{remote.url}: {exc}") from exc
            failures += 1
            if failures > retries:
                raise DownloadError(
                    f"{remote.url}: download failed after {failures} attempt(s); last error: "
                    f"{_describe(exc)}. The {part.size} bytes received so far are kept in {part.path}; "
                    "run again to resume, or raise the retry count / timeout."
                ) from exc
            wait = backoff * 2 ** (failures - 1)
            logger.warning("%s: %s; retry %d/%d in %.1f s from byte %d",
                           remote.url, _describe(exc), failures, retries, wait, part.size)
            if wait > 0:
                time.sleep(wait)
            continue
        if done:
            return
        restarts += 1
        if restarts > _MAX_RESTARTS:
            raise DownloadError(
                f"{remote.url}: the server's answers to range requests kept contradicting the bytes "
                f"on disk ({restarts} restarts); delete {part.path} and run again."
            )


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, _Transient) else f"{type(exc).__name__}: {text}"


def _fetch_once(remote: RemoteFile, part: _PartFile, bar: _TransferBar, *, timeout: float,
                chunk_size: int) -> bool:
    """One request. Returns True when ``part`` holds the whole resource, False to start over."""
    offset = part.size
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(remote.url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        with exc:
            return _on_http_error(remote, part, exc, offset)

    with response:
        length = _parse_int(response.headers.get("Content-Length"))
        if response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                logger.warning("%s: server sent a range starting at %s, not %d; starting again",
                               remote.url, start, offset)
                part.truncate()
                return False
        else:
            if offset:
                logger.info("%s: server ignored the Range request; downloading from the start", remote.url)
                part.truncate()
            total = length
        bar.begin(total, part.size)
        received = 0
        with open(part.path, "ab") as fh:
            # read1: return what has arrived (up to chunk_size) instead of waiting for a full chunk,
            # so bytes received before a stall are on disk when the read times out.
            while chunk := response.read1(chunk_size):
                part.append(fh, chunk)
                received += len(chunk)
                bar.advance(len(chunk))
            fh.flush()
            os.fsync(fh.fileno())

    # http.client returns b"" (no exception) when a Content-Length body is cut short: check here.
    if length is not None and received < length:
        raise _Transient(f"connection closed after {received} of {length} bytes")
    if total is not None and part.size != total:
        if part.size > total:
            part.truncate()
            return False
        raise _Transient(f"have {part.size} of {total} bytes")
    return True


def _on_http_error(remote: RemoteFile, part: _PartFile, exc: urllib.error.HTTPError, offset: int) -> bool:
    if exc.code == 416 and offset:
        # Nothing left to send from ``offset``: the part is complete, or longer than the resource.
        _, total = _parse_content_range(exc.headers.get("Content-Range"))
        expected = remote.sha256
        if total == offset and (expected is None or part.hexdigest() == expected):
            return True
        logger.warning("%s: partial file does not fit the resource (%d bytes on disk, %s on the "
                       "server); starting again", remote.url, offset, total)
        part.truncate()
        return False
    if exc.code in _RETRYABLE_STATUS:
        raise _Transient(f"HTTP {exc.code} {exc.reason}") from exc
    raise DownloadError(
        f"{remote.url}: the server answered HTTP {exc.code} {exc.reason}; check the URL in params.yaml "
        "(the dataset may have moved) or download the file by hand into the data folder."
    ) from exc


def _parse_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` → (100, 1000); unknown parts are None."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    start, _end, total = match.groups()
    return (int(start) if start is not None else None), (int(total) if total != "*" else None)


class _TransferBar:
    """A rich progress bar for bytes (size, speed, time left) on stderr; silent when disabled."""

    def __init__(self, label: str, *, enabled: bool) -> None:
        self._label = label
        self._enabled = enabled and sys.stderr.isatty()
        self._progress = None
        self._task = None

    def __enter__(self) -> Self:
        if self._enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
            )
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=None)
        return self

    def begin(self, total: int | None, completed: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total, completed=completed)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def __exit__(self, *exc_info) -> None:
        if self._progress is not None:
            self._progress.stop()

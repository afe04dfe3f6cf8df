"""Safe, all-or-nothing extraction of downloaded dataset archives (.zip, .tar, .tar.gz/.tgz).

Members are checked before anything is written, against a model of the folder as it will be
after every earlier member: absolute paths, ``..`` components, device files, a member whose path
goes through a symbolic link, a symbolic link whose target leaves the folder or goes through (or
names) another link, and a hard link to anything but a regular file extracted before it are
refused. So no chain of links can be built, whatever its length (the standard library's
``filter="data"`` resolved such a chain past PATH_MAX on Python 3.11.7 and let a file out). Tar
members are then written by this module itself, each final path resolved (following the links
already extracted) and checked to lie inside the destination before it is opened. The archive is unpacked into a hidden temporary
folder beside the destination, which is renamed into place only when everything is out, so an
interrupted extraction never leaves a half-filled destination. A marker file inside the
destination records which archive it came from; extracting the same archive again is a no-op.
"""

from __future__ import annotations

import gzip
import json
import lzma
import os
import re
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from lungpipe.data.download import sha256_of
from lungpipe.util.atomic import remove_path, replace_dir, staging_dir, write_json
from lungpipe.util.errors import DataError

MARKER_NAME = ".lungpipe-extracted.json"
ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
_CORRUPT_ERRORS = (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError)


def archive_kind(archive: Path) -> str:
    """'zip' or 'tar' from the file name; DataError for anything else."""
    name = archive.name.lower()
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    raise DataError(
        f"{archive}: unknown archive type; supported endings are "
        f"{', '.join(ZIP_SUFFIXES + TAR_SUFFIXES)}. Rename the file if it has the wrong ending."
    )


def extract_archive(archive: str | os.PathLike, dest_dir: str | os.PathLike, *,
                    archive_sha256: str | None = None) -> Path:
    """Extract ``archive`` so that its members lie under ``dest_dir``; return ``dest_dir``.

    A no-op when ``dest_dir`` already holds an extraction of the same archive (same size and
    SHA-256, read from the marker file). ``archive_sha256`` may pass the digest the caller already
    verified, to skip hashing the archive again. A ``dest_dir`` extracted by this function from a
    different archive is replaced as a whole; any other non-empty ``dest_dir`` is refused, never
    overwritten.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if not archive.is_file():
        raise DataError(f"{archive}: archive not found; download it first (e.g. `dvc repro download`).")
    kind = archive_kind(archive)
    size = archive.stat().st_size
    digest = archive_sha256.strip().lower() if archive_sha256 else sha256_of(archive)

    if dest_dir.exists():
        if not dest_dir.is_dir():
            raise DataError(f"{dest_dir}: exists and is not a folder; move it away to extract {archive.name}.")
        marker = _read_marker(dest_dir)
        if marker is not None and marker.get("size") == size and marker.get("sha256") == digest:
            return dest_dir
        if marker is None and any(dest_dir.iterdir()):
            raise DataError(
                f"{dest_dir}: folder exists, is not empty and was not extracted by lungpipe; it was left "
                f"untouched. Move it away (or pick another destination) to extract {archive}."
            )

    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(dest_dir)
    try:
        if kind == "zip":
            _extract_zip(archive, staging)
        else:
            _extract_tar(archive, staging)
        write_json(staging / MARKER_NAME, {"archive": archive.name, "size": size, "sha256": digest})
        replace_dir(staging, dest_dir)
    except BaseException:
        remove_path(staging)
        raise
    return dest_dir


def _read_marker(dest_dir: Path) -> dict | None:
    try:
        data = json.loads((dest_dir / MARKER_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _unsafe(archive: Path, member: str, why: str) -> DataError:
    return DataError(
        f"{archive}: refusing to extract member {member!r}: {why}. Nothing was extracted. The archive "
        "is damaged or not the published one; delete it and download it again from the official source."
    )


def _check_name(archive: Path, name: str) -> PurePosixPath:
    """The member's path, or DataError for an absolute path or a '..' component."""
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or _WINDOWS_DRIVE.match(normalized):
        raise _unsafe(archive, name, "absolute path")
    path = PurePosixPath(normalized)
    if ".." in path.parts:
        raise _unsafe(archive, name, "'..' in its path would write outside the destination")
    return path


def _extract_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_name(archive, info.filename)
            zf.extractall(dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{archive}: not a readable zip file ({exc}); delete it and download it again.") from exc


def _normalised_member_path(archive: Path, name: str) -> PurePosixPath:
    path = _check_name(archive, name)
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts:
        raise _unsafe(archive, name, "empty path")
    return PurePosixPath(*parts)


def _plan_tar(archive: Path, members: list[tarfile.TarInfo]) -> None:
    """Refuse the archive unless every member's final path stays inside the destination given
    the members before it (see the module doc); writes nothing."""
    kinds: dict[PurePosixPath, str] = {}  # path -> "dir" | "file" | "symlink"
    links: list[tuple[str, str, PurePosixPath]] = []  # (member, link text, lexical target)

    def through_link(path: PurePosixPath) -> PurePosixPath | None:
        for depth in range(1, len(path.parts)):
            prefix = PurePosixPath(*path.parts[:depth])
            if kinds.get(prefix) == "symlink":
                return prefix
        return None

    for member in members:
        path = _normalised_member_path(archive, member.name)
        if member.isdev() or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise _unsafe(archive, member.name, "device or special file")
        via = through_link(path)
        if via is not None:
            raise _unsafe(archive, member.name, f"its path goes through the symbolic link {str(via)!r}")
        if kinds.get(path) == "symlink" or (path in kinds and (member.issym() or member.islnk())):
            raise _unsafe(archive, member.name, "it would replace an earlier member with a link or follow one")
        if member.issym():
            target = member.linkname.replace("\\", "/")
            if not target or target.startswith("/") or _WINDOWS_DRIVE.match(target):
                raise _unsafe(archive, member.name, f"symbolic link to the absolute path {member.linkname!r}")
            resolved = os.path.normpath(os.path.join(str(path.parent), target))
            if resolved == ".." or resolved.startswith("../"):
                raise _unsafe(archive, member.name, f"symbolic link to {member.linkname!r} leaves the folder")
            if resolved == ".":
                raise _unsafe(archive, member.name, f"symbolic link to {member.linkname!r} is the destination itself")
            links.append((member.name, member.linkname, PurePosixPath(str(path.parent), target)))
            kinds[path] = "symlink"
        elif member.islnk():
            target = _normalised_member_path(archive, member.linkname)
            if kinds.get(target) != "file" or through_link(target) is not None:
                raise _unsafe(archive, member.name,
                              f"hard link to {member.linkname!r}, which is not a regular file extracted before it")
            kinds[path] = "file"
        elif member.isdir():
            if kinds.get(path) == "file":
                raise _unsafe(archive, member.name, "a folder with the name of an earlier file")
            kinds[path] = "dir"
        else:
            if kinds.get(path) == "dir":
                raise _unsafe(archive, member.name, "a file with the name of an earlier folder")
            kinds[path] = "file"
        for depth in range(1, len(path.parts)):  # parents become folders
            parent = PurePosixPath(*path.parts[:depth])
            if kinds.get(parent) == "file":
                raise _unsafe(archive, member.name, f"its parent {str(parent)!r} is a file")
            kinds.setdefault(parent, "dir")
    # after all members (a link may name a path that only a later member makes a link): a link's
    # target must not be, or pass through, another link
    for name, text, lexical in links:
        walked: list[str] = []
        for part in lexical.parts:
            if part == "..":
                if walked:
                    walked.pop()
                continue
            if part in ("", "."):
                continue
            walked.append(part)
            if kinds.get(PurePosixPath(*walked)) == "symlink":
                raise _unsafe(archive, name, f"symbolic link to {text!r} chains through the symbolic link "
                                             f"{'/'.join(walked)!r}")


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _final_path(archive: Path, root: str, rel: PurePosixPath, member: str, follow_last: bool) -> str:
    """``rel`` under ``root`` with every link already on disk resolved; DataError when outside."""
    parent = os.path.realpath(os.path.join(root, *rel.parts[:-1]))
    final = os.path.realpath(os.path.join(parent, rel.parts[-1])) if follow_last else os.path.join(parent, rel.parts[-1])
    if not (_inside(root, parent) and _inside(root, final)):
        raise _unsafe(archive, member, "its final path resolves outside the destination")
    return final


def _write_tar_members(archive: Path, tf: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path) -> None:
    root = os.path.realpath(dest)
    mask = os.umask(0)
    os.umask(mask)
    for member in members:
        rel = _normalised_member_path(archive, member.name)
        if member.isdir():
            os.makedirs(_final_path(archive, root, rel, member.name, follow_last=True), exist_ok=True)
            continue
        os.makedirs(_final_path(archive, root, rel.parent, member.name, follow_last=True)
                    if len(rel.parts) > 1 else root, exist_ok=True)
        final = _final_path(archive, root, rel, member.name, follow_last=False)
        if os.path.lexists(final):
            os.unlink(final)
        if member.issym():
            os.symlink(member.linkname.replace("\\", "/"), final)
            target = os.path.realpath(final)
            if not _inside(root, target):
                os.unlink(final)
                raise _unsafe(archive, member.name, "its link target resolves outside the destination")
            continue
        if member.islnk():
            source = _final_path(archive, root, _normalised_member_path(archive, member.linkname), member.name,
                                 follow_last=False)
            shutil.copyfile(source, final, follow_symlinks=False)
        else:
            with tf.extractfile(member) as src, open(final, "xb") as out:  # "x": never through a link
                shutil.copyfileobj(src, out)
        os.chmod(final, (0o777 if member.mode & 0o100 else 0o666) & ~mask)


def _extract_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            _plan_tar(archive, members)
            _write_tar_members(archive, tf, members, dest)
    except _CORRUPT_ERRORS as exc:
        raise DataError(f"{archive}: not a readable tar archive ({exc}); delete it and download it again.") from exc

"""Bad input: hostile archives (issue 17 item 2). Each row: the members of a crafted tar, in
order, and the fragment the refusal must contain. Nothing may be written, inside the destination
or outside it."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from lungpipe.data.archive import extract_archive
from lungpipe.util.errors import DataError

# A chain of symlinked 247-character folders, 16 deep, whose resolved path is longer than
# PATH_MAX (4096): os.path.realpath and tarfile's "data" filter stop resolving there.
_LONG = "d" * 247
_STEPS = "abcdefghijklmnop"


def _path_max_chain() -> list[tuple]:
    members: list[tuple] = []
    prefix = ""
    for step in _STEPS:
        members.append(("dir", os.path.join(prefix, _LONG)))
        members.append(("sym", os.path.join(prefix, step), _LONG))
        prefix = os.path.join(prefix, _LONG)
    deep_link = os.path.join(*_STEPS, "l" * 254)
    members.append(("sym", deep_link, "../" * len(_STEPS)))
    members.append(("sym", "escape", f"{deep_link}/../../../../../../../../../outside"))
    members.append(("file", "escape/flag", b"pwned"))
    return members


#        case                              members (kind, name, data | link target)              expected fragment
CASES = [
    ("dotdot member",                      [("file", "../escaped", b"x")],                        "'..' in its path"),
    ("absolute member",                    [("file", "/tmp/escaped", b"x")],                      "absolute path"),
    ("symlink to an absolute path",        [("sym", "etc", "/etc")],                              "absolute path '/etc'"),
    ("symlink up and out",                 [("sym", "data/up", "../../outside")],                 "leaves the folder"),
    ("symlink to the folder itself",       [("sym", "self", ".")],                                "the destination itself"),
    ("symlink then a file through it",     [("dir", "inner"), ("sym", "lnk", "inner"),
                                            ("file", "lnk/f", b"x")],                             "goes through the symbolic link 'lnk'"),
    ("symlink then the same name as file", [("sym", "x", "inner"), ("file", "x", b"x")],          "replace an earlier member"),
    ("symlink chained to a symlink",       [("file", "f", b"x"), ("sym", "one", "f"),
                                            ("sym", "two", "one")],                               "chains through the symbolic link 'one'"),
    ("chain built in reverse order",       [("sym", "two", "one/f"), ("dir", "d"),
                                            ("sym", "one", "d")],                                 "chains through the symbolic link 'one'"),
    ("hard link out",                      [("hard", "h", "../../etc/passwd")],                   "'..' in its path"),
    ("hard link to an absolute path",      [("hard", "h", "/etc/passwd")],                        "absolute path"),
    ("hard link to a symlink",             [("sym", "s", "f"), ("file", "f", b"x"),
                                            ("hard", "h", "s")],                                  "not a regular file"),
    ("device file",                        [("chr", "dev/null")],                                 "device or special file"),
    ("PATH_MAX symlink chain",             _path_max_chain(),                                     "goes through the symbolic link 'a'"),
]


def _tar(members: list[tuple]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for kind, name, *rest in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(rest[0])
                tf.addfile(info, io.BytesIO(rest[0]))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE}[kind]
            if rest:
                info.linkname = rest[0]
            tf.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("case,members,fragment", CASES, ids=[c[0] for c in CASES])
def test_hostile_tar_is_refused_and_nothing_is_written(tmp_path: Path, case, members, fragment):
    archive = tmp_path / "in" / "evil.tar"
    archive.parent.mkdir()
    archive.write_bytes(_tar(members))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError) as err:
        extract_archive(archive, work / "out")
    assert fragment in str(err.value) and "refusing to extract" in str(err.value)
    assert list(work.iterdir()) == []  # no destination, no staging folder
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil.tar", "in", "work"]


def test_links_that_stay_inside_are_extracted(tmp_path: Path):
    """A symlink to a file of the archive and a hard link to an earlier file are fine."""
    archive = tmp_path / "ok.tar"
    archive.write_bytes(_tar([("dir", "docs"), ("file", "docs/readme", b"hello"),
                              ("sym", "readme", "docs/readme"), ("hard", "copy", "docs/readme")]))
    out = extract_archive(archive, tmp_path / "out")
    assert (out / "readme").is_symlink() and (out / "readme").read_bytes() == b"hello"
    assert not (out / "copy").is_symlink() and (out / "copy").read_bytes() == b"hello"

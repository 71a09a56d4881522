"""Safe extraction of .zip / .tar(.gz) data sets, and download of an http(s) archive.

An archive is untrusted input: a member that would land outside the target (zip-slip, absolute
path), any link or device, or an archive over the size or member-count cap refuses the whole
archive, and the error names the member. Sizes are enforced while writing, not taken from headers.
A tar's metadata blocks (GNU long names, pax headers) are bounded before Python's tarfile reads them
into memory, and extraction is staged next to its target so the final rename never crosses a
filesystem.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import urlsplit

from imgclf.data.fetch import FetchPolicy, FetchRefused, fetch_to_file, redact

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
# A tar header's payload (GNU long name / long link, pax record block) is read whole into memory by
# tarfile, and CPython before 3.11.10 parses pax payloads in quadratic time (CVE-2024-6232): 8 KiB is
# twice Linux's PATH_MAX, enough for any real name and its pax records, and cheap to parse.
MAX_TAR_HEADER_BYTES = 8 * 1024
_MAX_HEADER_CHAIN = 8  # pax global + pax + long name + long link is 4; more is a crafted chain
_HEADER_KINDS = {
    tarfile.GNUTYPE_LONGNAME: "GNU long-name",
    tarfile.GNUTYPE_LONGLINK: "GNU long-link",
    tarfile.XHDTYPE: "pax",
    tarfile.XGLTYPE: "pax global",
    tarfile.SOLARIS_XHDTYPE: "Solaris pax",
}


class ArchiveError(ValueError):
    """The archive (or one named member of it) was refused."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_total_bytes: int = 20 * 1024**3
    max_members: int = 1_000_000
    max_download_bytes: int = 20 * 1024**3


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _checked_name(name: str, archive: Path) -> PurePosixPath:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or (pure.parts and pure.parts[0].endswith(":")):
        raise ArchiveError(f"{archive}: member {name!r} has an absolute path; refusing the archive")
    if ".." in pure.parts:
        raise ArchiveError(f"{archive}: member {name!r} escapes the extraction folder; refusing the archive")
    return pure


def _checked_target(target: Path, name: str, archive: Path) -> Path:
    pure = _checked_name(name, archive)
    dest = (target / pure).resolve()
    if not dest.is_relative_to(target.resolve()):
        raise ArchiveError(f"{archive}: member {name!r} escapes the extraction folder; refusing the archive")
    return dest


def _copy_capped(src, dest: Path, budget: list[int], name: str, archive: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        while chunk := src.read(1 << 20):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise ArchiveError(f"{archive}: writing {name!r} exceeds the size cap; refusing the archive")
            out.write(chunk)


def extract(archive: str | Path, target: str | Path, limits: ArchiveLimits = ArchiveLimits()) -> Path:
    """Extract `archive` into `target` (created; must be empty). On refusal nothing is left behind."""
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise ArchiveError(f"archive {archive} does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    # staged beside the target, never in $TMPDIR: os.replace cannot move a folder across filesystems
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, staging, limits)
        else:
            _extract_tar(archive, staging, limits)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _open_zip(archive: Path, limits: ArchiveLimits) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """The open zip file and its members, within the member cap; a clear error for a file that is not a zip."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{archive} is not a readable zip file ({exc})") from None
    members = zf.infolist()
    if len(members) > limits.max_members:
        zf.close()
        raise ArchiveError(f"{archive}: {len(members)} members exceed the cap of {limits.max_members}")
    return zf, members


def _extract_zip(archive: Path, staging: Path, limits: ArchiveLimits) -> None:
    zf, members = _open_zip(archive, limits)
    with zf:
        budget = [limits.max_total_bytes]
        for info in members:
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError(f"{archive}: member {info.filename!r} is a symbolic link; refusing the archive")
            dest = _checked_target(staging, info.filename, archive)
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            with zf.open(info) as src:
                _copy_capped(src, dest, budget, info.filename, archive)


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's header parsing with the metadata payloads bounded before they are read.

    A subclass rather than our own header pre-scan: the checks run in the same single pass as the
    extraction (a pre-scan of a .tar.gz would decompress it twice) and tarfile stays the only
    parser of the format. `_proc_member` is private but has dispatched header types since Python 2;
    the tests build each kind of header, so a change there fails them.
    """

    def _proc_member(self, tar):
        kind = _HEADER_KINDS.get(self.type)
        where = f"{tar.name}: the {kind or 'tar'} header at byte {self.offset}"
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise ArchiveError(f"{tar.name}: member {self.name!r} is a GNU sparse file; refusing the archive")
        if kind and self.size > MAX_TAR_HEADER_BYTES:
            raise ArchiveError(
                f"{where} holds {self.size} bytes, over the cap of {MAX_TAR_HEADER_BYTES}; refusing the archive"
            )
        depth = getattr(tar, "_imgclf_header_chain", 0)
        if depth >= _MAX_HEADER_CHAIN:
            raise ArchiveError(f"{where} chains more than {_MAX_HEADER_CHAIN} metadata headers; refusing the archive")
        tar._imgclf_header_chain = depth + 1  # a metadata header parses the next header from inside this call
        try:
            return super()._proc_member(tar)
        finally:
            tar._imgclf_header_chain = depth

    def _proc_gnusparse_10(self, next, pax_headers, tar):
        """pax sparse 1.0 keeps a map of unbounded length in the data: an image is never sparse."""
        raise ArchiveError(f"{tar.name}: member {next.name!r} is a GNU sparse file; refusing the archive")


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*", tarinfo=_BoundedTarInfo)
    except tarfile.TarError as exc:
        raise ArchiveError(f"{archive} is not a readable tar file ({exc})") from None


def _extract_tar(archive: Path, staging: Path, limits: ArchiveLimits) -> None:
    with _open_tar(archive) as tf:
        budget, count = [limits.max_total_bytes], 0
        for member in tf:  # streamed: never lists a huge archive in memory first
            count += 1
            if count > limits.max_members:
                raise ArchiveError(f"{archive}: more than {limits.max_members} members; refusing the archive")
            if member.issym() or member.islnk():
                raise ArchiveError(f"{archive}: member {member.name!r} is a link; refusing the archive")
            if not (member.isfile() or member.isdir()):
                raise ArchiveError(
                    f"{archive}: member {member.name!r} is a device or special file; refusing the archive"
                )
            dest = _checked_target(staging, member.name, archive)
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            src = tf.extractfile(member)
            if src is not None:
                with src:
                    _copy_capped(src, dest, budget, member.name, archive)


def iter_members(archive: str | Path, limits: ArchiveLimits = ArchiveLimits()) -> Iterator[tuple[str, IO[bytes]]]:
    """(name, open stream) of each regular file in `archive`, in archive order, read in place (nothing
    written to disk) under the checks `extract` applies: a link, device, absolute or escaping name, or
    too many members refuses the whole archive. The caller caps how much of each stream it reads."""
    archive = Path(archive)
    if not archive.is_file():
        raise ArchiveError(f"archive {archive} does not exist")
    if archive.name.lower().endswith(".zip"):
        yield from _zip_members(archive, limits)
        return
    with _open_tar(archive) as tf:
        for count, member in enumerate(tf, start=1):  # streamed, as in extraction
            if count > limits.max_members:
                raise ArchiveError(f"{archive}: more than {limits.max_members} members; refusing the archive")
            if member.issym() or member.islnk() or not (member.isfile() or member.isdir()):
                raise ArchiveError(f"{archive}: member {member.name!r} is a link or special file; refusing the archive")
            name = _checked_name(member.name, archive)
            src = tf.extractfile(member) if member.isfile() else None
            if src is not None:
                with src:
                    yield str(name), src


def _zip_members(archive: Path, limits: ArchiveLimits) -> Iterator[tuple[str, IO[bytes]]]:
    zf, members = _open_zip(archive, limits)
    with zf:
        for info in members:
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ArchiveError(f"{archive}: member {info.filename!r} is a symbolic link; refusing the archive")
            name = _checked_name(info.filename, archive)
            if not info.is_dir():
                with zf.open(info) as src:
                    yield str(name), src


def download(
    url: str, target_dir: str | Path, limits: ArchiveLimits = ArchiveLimits(), policy: FetchPolicy | None = None
) -> Path:
    """Download an http(s) archive into `target_dir` through the guarded fetcher (see `imgclf.data.fetch`),
    capped at `limits.max_download_bytes`. The cache key is the sha256 pin when there is one, else the URL;
    a cached file is checked against the pin again. A refused or failed download leaves nothing behind."""
    policy = (policy or FetchPolicy()).model_copy(update={"max_bytes": limits.max_download_bytes})
    try:
        name = PurePosixPath(urlsplit(url).path).name or "archive"  # the path only: no query, no fragment
    except ValueError:
        name = ""
    if not is_archive(name):
        raise ArchiveError(f"{redact(url)} does not name a .zip / .tar / .tar.gz / .tgz archive")
    key = policy.sha256.lower() if policy.sha256 else hashlib.sha256(url.encode()).hexdigest()
    dest = Path(target_dir) / key[:16] / name
    if dest.is_file() and (not policy.sha256 or _file_sha256(dest) == key):
        return dest
    try:
        fetch_to_file(url, dest, policy)
    except FetchRefused as exc:
        with contextlib.suppress(OSError):
            dest.parent.rmdir()  # only when empty: a cached file of the same key stays
        raise ArchiveError(f"download refused: {exc.detail} ({exc.reason})") from None
    return dest


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

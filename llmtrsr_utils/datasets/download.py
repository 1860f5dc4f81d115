"""Checked downloads and archive extraction that refuses unsafe members.

Downloads go through pooch, the field's own library for hash-checked retrieval: it writes to
a temporary file, checks the sha256 and only then moves the file into place, and reuses a file
already present with the right hash.

Extraction is written by hand instead of using pooch's ``Unzip``/``Untar`` processors: those
silently sanitize path-traversal entries (``../x``, ``/abs/x``, links out of the folder) and
carry on, whereas a dataset archive holding such an entry is corrupt or hostile and the kit
must refuse it with an error that names the archive and the member. Every member is checked
before anything is written, so a refused archive writes nothing; extraction goes to a
temporary sibling folder first, so an interrupted run never leaves ``dest_dir`` looking
complete.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import pooch
import requests

from llmtrsr_utils.artifacts import sha256_of

logger = logging.getLogger("llmtrsr")

_MANUAL_HINT = (
    "You can instead download the files by hand, place them in a folder and point the "
    "`data.dir` setting or the LLMTRSR_DATA_DIR environment variable at it."
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ZIP_SUFFIXES = (".zip",)
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class DownloadError(RuntimeError):
    """A download, extraction or check failed; the message names the URL or archive."""


def _normalize_hash(value: str) -> str:
    """Accept 'sha256:<hex>' or '<hex>' in any case; a malformed pin is a programming error."""
    digest = value.strip().lower().removeprefix("sha256:")
    if not _SHA256.match(digest):
        raise ValueError(f"not a sha256 hex digest: {value!r}")
    return digest


def _file_name(url: str, filename: str | None) -> str:
    name = filename if filename is not None else unquote(PurePosixPath(urlsplit(url).path).name)
    if filename is not None and ("/" in name or "\\" in name):
        raise ValueError(f"filename must be a bare file name, got {filename!r}")
    if name in ("", ".", ".."):
        raise DownloadError(f"cannot derive a file name from {url}; pass filename=")
    return name


# --------------------------------------------------------------------------- downloads


def fetch(
    url: str,
    dest_dir: Path,
    *,
    sha256: str | None,
    filename: str | None = None,
    progress: bool = False,
) -> Path:
    """Download ``url`` into ``dest_dir`` (reusing a file with the right hash) and return it.

    With ``sha256=None`` the file is accepted as is and a warning gives its hash, so the
    caller can pin it; an unpinned file already present is reused without re-downloading.
    """
    dest_dir = Path(dest_dir)
    name = _file_name(url, filename)
    expected = _normalize_hash(sha256) if sha256 is not None else None
    final = dest_dir / name
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        path = Path(
            pooch.retrieve(
                url,
                known_hash=f"sha256:{expected}" if expected else None,
                fname=name,
                path=dest_dir,
                progressbar=progress,
            )
        )
    except requests.RequestException as exc:
        # Before OSError: requests' exceptions derive from it.
        raise DownloadError(f"could not download {url}: {exc}. {_MANUAL_HINT}") from exc
    except ValueError as exc:
        text = str(exc)
        if "does not match the known hash" not in text:
            raise DownloadError(f"could not download {url}: {exc}. {_MANUAL_HINT}") from exc
        got = re.search(r"but got ([0-9a-fA-F]+)", text)
        actual = got.group(1).lower() if got else "unknown"
        # pooch deleted the fresh download; a stale file at the final path is not the pinned
        # one either (otherwise it would have been reused), so it goes too.
        final.unlink(missing_ok=True)
        raise DownloadError(
            f"sha256 mismatch for {url}: expected {expected}, got {actual}. The file was "
            "deleted; it is corrupted or the release changed upstream."
        ) from exc
    except OSError as exc:
        raise DownloadError(f"could not save {url} to {final}: {exc}") from exc
    if expected is None:
        logger.warning(
            "%s is not pinned by a sha256; downloaded file %s has sha256 %s "
            "(pin it to detect a changed or corrupted release)",
            url,
            path,
            sha256_of(path),
        )
    return path


# --------------------------------------------------------------------------- extraction


def _member_parts(archive: Path, name: str, is_dir: bool) -> tuple[str, ...]:
    """The member's path components, refusing absolute paths and '..' components."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DownloadError(f"{archive}: refusing member {name!r}: absolute path")
    parts = tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))
    if ".." in parts:
        raise DownloadError(f"{archive}: refusing member {name!r}: '..' path component")
    if not parts and not is_dir:
        raise DownloadError(f"{archive}: refusing member {name!r}: empty file name")
    return parts


def _check_inside(archive: Path, name: str, parts: tuple[str, ...], root: Path) -> None:
    """Refuse a member that resolves outside ``root`` (e.g. through a symlink already there)."""
    target = root.joinpath(*parts).resolve()
    if not target.is_relative_to(root):
        raise DownloadError(
            f"{archive}: refusing member {name!r}: resolves to {target}, outside {root}"
        )


def _check_common(
    archive: Path, entries: list[tuple[str, tuple[str, ...], bool]], links: set[tuple[str, ...]],
    root: Path,
) -> None:
    """Checks shared by zip and tar: duplicates, writing through a link, escaping the root."""
    seen: dict[tuple[str, ...], bool] = {}
    for name, parts, is_dir in entries:
        if parts in seen and not (is_dir and seen[parts]):
            raise DownloadError(f"{archive}: refusing member {name!r}: duplicate entry")
        seen[parts] = is_dir
        for depth in range(1, len(parts)):
            if parts[:depth] in links:
                raise DownloadError(
                    f"{archive}: refusing member {name!r}: it lies under the link "
                    f"{'/'.join(parts[:depth])!r}"
                )
        _check_inside(archive, name, parts, root)


def _check_link_target(
    archive: Path, name: str, start: tuple[str, ...], target: str, links: set[tuple[str, ...]]
) -> None:
    """Resolve ``target`` from ``start`` lexically; refuse it if it leaves the root or if it
    passes through another link (lexical resolution would then be wrong)."""
    if not target or target.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", target):
        raise DownloadError(
            f"{archive}: refusing link {name!r} -> {target!r}: absolute or empty target"
        )
    comps = [c for c in re.split(r"[/\\]", target) if c not in ("", ".")]
    stack = list(start)
    for index, comp in enumerate(comps):
        if comp == "..":
            if not stack:
                raise DownloadError(
                    f"{archive}: refusing link {name!r} -> {target!r}: points outside the "
                    "destination folder"
                )
            stack.pop()
        else:
            stack.append(comp)
            if index < len(comps) - 1 and tuple(stack) in links:
                raise DownloadError(
                    f"{archive}: refusing link {name!r} -> {target!r}: passes through "
                    f"another link {'/'.join(stack)!r}"
                )


def _check_zip(archive: Path, zf: zipfile.ZipFile, root: Path) -> None:
    entries = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        fmt = stat.S_IFMT(mode)
        if fmt and fmt not in (stat.S_IFREG, stat.S_IFDIR):
            kind = "a link" if stat.S_ISLNK(mode) else "a device, fifo or socket"
            raise DownloadError(f"{archive}: refusing member {info.filename!r}: it is {kind}")
        is_dir = info.is_dir()
        entries.append((info.filename, _member_parts(archive, info.filename, is_dir), is_dir))
    _check_common(archive, entries, set(), root)


def _check_tar(archive: Path, tf: tarfile.TarFile, root: Path) -> None:
    members = tf.getmembers()
    entries = []
    links: set[tuple[str, ...]] = set()
    for member in members:
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise DownloadError(
                f"{archive}: refusing member {member.name!r}: it is a device, fifo or other "
                "special file"
            )
        parts = _member_parts(archive, member.name, member.isdir())
        if (member.issym() or member.islnk()) and not parts:
            raise DownloadError(f"{archive}: refusing link {member.name!r}: empty name")
        entries.append((member.name, parts, member.isdir()))
        if member.issym() or member.islnk():
            links.add(parts)
    _check_common(archive, entries, links, root)
    for member, (_, parts, _) in zip(members, entries, strict=True):
        if member.issym():  # relative to the link's own folder
            _check_link_target(archive, member.name, parts[:-1], member.linkname, links)
        elif member.islnk():  # relative to the archive root
            _check_link_target(archive, member.name, (), member.linkname, links)


def _archive_kind(archive: Path) -> str:
    lower = archive.name.lower()
    if lower.endswith(_ZIP_SUFFIXES):
        return "zip"
    if lower.endswith(_TAR_SUFFIXES):
        return "tar"
    raise DownloadError(
        f"{archive}: unsupported archive type (expected .zip, .tar, .tar.gz or .tgz)"
    )


def _regular_files(folder: Path) -> Iterable[Path]:
    for dirpath, _dirnames, filenames in os.walk(folder):
        for filename in filenames:
            path = Path(dirpath) / filename
            if path.is_file() and not path.is_symlink():
                yield path


def _merge(src: Path, dest: Path, archive: Path) -> None:
    """Move the contents of ``src`` into the existing folder ``dest``, one entry at a time."""
    with os.scandir(src) as entries:
        for entry in entries:
            target = dest / entry.name
            if entry.is_dir(follow_symlinks=False):
                if target.is_symlink() or (target.exists() and not target.is_dir()):
                    raise DownloadError(
                        f"{archive}: cannot extract folder {target}: a file or link is in the way"
                    )
                target.mkdir(exist_ok=True)
                _merge(Path(entry.path), target, archive)
            else:
                if target.is_dir() and not target.is_symlink():
                    raise DownloadError(
                        f"{archive}: cannot extract file {target}: a folder is in the way"
                    )
                os.replace(entry.path, target)


def safe_extract(archive: Path, dest_dir: Path) -> list[Path]:
    """Extract a zip or tar archive into ``dest_dir`` after checking every member.

    Refuses (with :class:`DownloadError` naming archive and member) absolute paths, '..'
    components, members resolving outside ``dest_dir``, links leaving it (tar) or any link
    (zip), and devices/fifos. Returns the extracted regular files at their final paths.
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    kind = _archive_kind(archive)
    root = dest_dir.resolve()
    tmp = root.parent / f".{root.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                _check_zip(archive, zf, root)
                tmp.parent.mkdir(parents=True, exist_ok=True)
                tmp.mkdir()
                zf.extractall(tmp)
        else:
            with tarfile.open(archive, "r:*") as tf:
                _check_tar(archive, tf, root)
                tmp.parent.mkdir(parents=True, exist_ok=True)
                tmp.mkdir()
                # Defence in depth: the 'data' filter re-checks against the real filesystem.
                tf.extractall(tmp, filter="data")
        extracted = [dest_dir / p.relative_to(tmp) for p in _regular_files(tmp)]
        if dest_dir.exists():
            _merge(tmp, dest_dir, archive)
        else:
            tmp.rename(dest_dir)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DownloadError(f"{archive}: cannot extract: {exc}") from exc
    except OSError as exc:
        raise DownloadError(f"{archive}: cannot extract into {dest_dir}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(extracted)


# --------------------------------------------------------------------------- both


def _expected_problems(dest_dir: Path, expected_files: dict[str, str | None]) -> list[str]:
    """One line per expected file that is missing or has the wrong sha256."""
    root = dest_dir.resolve()
    problems = []
    for rel, sha in expected_files.items():
        path = dest_dir / rel
        if not path.resolve().is_relative_to(root):
            raise ValueError(f"expected file {rel!r} lies outside {dest_dir}")
        want = _normalize_hash(sha) if sha is not None else None
        if not path.is_file():
            problems.append(f"{rel}: missing (expected sha256 {want or 'any'}, actual none)")
            continue
        if want is not None:
            actual = sha256_of(path)
            if actual != want:
                problems.append(f"{rel}: expected sha256 {want}, actual {actual}")
    return problems


def fetch_and_extract(
    url: str,
    dest_dir: Path,
    *,
    sha256: str | None,
    expected_files: dict[str, str | None] | None = None,
    filename: str | None = None,
) -> Path:
    """Download an archive to ``dest_dir/downloads``, extract it into ``dest_dir``, verify it.

    ``expected_files`` maps paths relative to ``dest_dir`` to a sha256 (or None: must exist).
    When they are all already present and correct nothing is downloaded, which makes repeated
    runs offline. If verification fails for an unpinned archive, the cached archive is deleted
    so that the next attempt downloads it again instead of reusing a bad copy.
    """
    dest_dir = Path(dest_dir)
    if expected_files and not _expected_problems(dest_dir, expected_files):
        logger.debug("all expected files of %s already present in %s", url, dest_dir)
        return dest_dir
    archive = fetch(url, dest_dir / "downloads", sha256=sha256, filename=filename)
    safe_extract(archive, dest_dir)
    if expected_files:
        problems = _expected_problems(dest_dir, expected_files)
        if problems:
            if sha256 is None:
                archive.unlink(missing_ok=True)
            raise DownloadError(
                f"after extracting {url} into {dest_dir}, expected files do not match:\n  "
                + "\n  ".join(problems)
            )
    return dest_dir

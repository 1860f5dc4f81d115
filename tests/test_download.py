"""Checked downloads and safe extraction, against a local HTTP server on 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import io
import logging
import socket
import stat
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmtrsr_utils.datasets.download import (
    DownloadError,
    fetch,
    fetch_and_extract,
    safe_extract,
)

GOOD_FILES = {
    "ml-mini/ratings.csv": b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n",
    "ml-mini/movies.csv": b"movieId,title,genres\n1,Toy Story (1995),Animation\n",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def _tarinfo(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


def _files_under(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


@dataclass
class Server:
    root: Path
    base_url: str
    requests: list[str] = field(default_factory=list)

    def publish(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return f"{self.base_url}/{name}"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment would send the local requests elsewhere.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    seen: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield Server(root, f"http://127.0.0.1:{httpd.server_address[1]}", seen)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- downloads


def test_good_zip_is_fetched_extracted_and_then_reused(server: Server, tmp_path: Path) -> None:
    data = _zip_bytes(GOOD_FILES)
    url = server.publish("ml-mini.zip", data)
    dest = tmp_path / "data" / "movielens"
    expected = {name: _sha(content) for name, content in GOOD_FILES.items()}

    result = fetch_and_extract(url, dest, sha256=_sha(data), expected_files=expected)

    assert result == dest
    for name, content in GOOD_FILES.items():
        assert (dest / name).read_bytes() == content
    assert (dest / "downloads" / "ml-mini.zip").read_bytes() == data
    assert server.requests == ["/ml-mini.zip"]
    assert not [p for p in dest.parent.iterdir() if ".partial-" in p.name]

    # Every expected file present: no request, even once the cached archive is cleaned away.
    (dest / "downloads" / "ml-mini.zip").unlink()
    fetch_and_extract(url, dest, sha256=_sha(data), expected_files=expected)
    assert server.requests == ["/ml-mini.zip"]


def test_pinned_file_already_present_is_not_downloaded_again(
    server: Server, tmp_path: Path
) -> None:
    data = _zip_bytes(GOOD_FILES)
    url = server.publish("ml-mini.zip", data)
    first = fetch(url, tmp_path / "dl", sha256=_sha(data))
    second = fetch(url, tmp_path / "dl", sha256=_sha(data).upper())
    assert first == second == tmp_path / "dl" / "ml-mini.zip"
    assert len(server.requests) == 1


def test_wrong_sha256_is_refused_and_nothing_is_kept(server: Server, tmp_path: Path) -> None:
    data = _zip_bytes(GOOD_FILES)
    url = server.publish("ml-mini.zip", data)
    wrong = _sha(b"some other release")
    dest = tmp_path / "dl"

    with pytest.raises(DownloadError) as err:
        fetch(url, dest, sha256=wrong)

    message = str(err.value)
    assert url in message
    assert wrong in message
    assert _sha(data) in message
    assert not (dest / "ml-mini.zip").exists()
    assert _files_under(dest) == set()  # pooch's temporary file is gone too


def test_stale_file_with_wrong_hash_is_not_left_behind(server: Server, tmp_path: Path) -> None:
    url = server.publish("ml-mini.zip", b"the release as served now")
    stale = tmp_path / "dl" / "ml-mini.zip"
    stale.parent.mkdir()
    stale.write_bytes(b"an old release")
    pinned = _sha(b"the release that was pinned")

    with pytest.raises(DownloadError, match=pinned):
        fetch(url, tmp_path / "dl", sha256=pinned)

    assert server.requests == ["/ml-mini.zip"]  # the stale file was not trusted
    assert not stale.exists()


def test_unpinned_download_warns_with_its_sha256(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = b"id,text\n1,hello\n"
    url = server.publish("items.csv", data)
    caplog.set_level(logging.WARNING, logger="llmtrsr")

    path = fetch(url, tmp_path / "dl", sha256=None)

    assert path.read_bytes() == data
    warnings = [r for r in caplog.records if r.name == "llmtrsr" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert _sha(data) in warnings[0].getMessage()
    assert url in warnings[0].getMessage()


def test_filename_overrides_the_url_name(server: Server, tmp_path: Path) -> None:
    data = b"payload"
    url = server.publish("blob", data)
    path = fetch(url, tmp_path / "dl", sha256=_sha(data), filename="renamed.bin")
    assert path == tmp_path / "dl" / "renamed.bin"
    assert path.read_bytes() == data


def test_closed_port_explains_the_manual_alternative(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ml-mini.zip"

    with pytest.raises(DownloadError) as err:
        fetch(url, tmp_path / "dl", sha256=None)

    assert url in str(err.value)
    assert "LLMTRSR_DATA_DIR" in str(err.value)
    assert "data.dir" in str(err.value)
    assert not (tmp_path / "dl" / "ml-mini.zip").exists()


def test_http_404_explains_the_manual_alternative(server: Server, tmp_path: Path) -> None:
    url = f"{server.base_url}/missing.zip"
    with pytest.raises(DownloadError, match="LLMTRSR_DATA_DIR") as err:
        fetch(url, tmp_path / "dl", sha256=None)
    assert url in str(err.value)
    assert server.requests == ["/missing.zip"]


def test_expected_file_with_wrong_hash_is_named(server: Server, tmp_path: Path) -> None:
    data = _zip_bytes(GOOD_FILES)
    url = server.publish("ml-mini.zip", data)
    wrong = _sha(b"not the movies file")
    expected = {
        "ml-mini/ratings.csv": _sha(GOOD_FILES["ml-mini/ratings.csv"]),
        "ml-mini/movies.csv": wrong,
    }

    with pytest.raises(DownloadError) as err:
        fetch_and_extract(url, tmp_path / "data", sha256=_sha(data), expected_files=expected)

    message = str(err.value)
    assert "ml-mini/movies.csv" in message
    assert wrong in message
    assert _sha(GOOD_FILES["ml-mini/movies.csv"]) in message
    assert "ml-mini/ratings.csv" not in message  # the correct file is not blamed


def test_missing_expected_file_is_named_and_unpinned_archive_dropped(
    server: Server, tmp_path: Path
) -> None:
    data = _zip_bytes(GOOD_FILES)
    url = server.publish("ml-mini.zip", data)
    dest = tmp_path / "data"

    with pytest.raises(DownloadError, match="ml-mini/tags.csv: missing"):
        fetch_and_extract(url, dest, sha256=None, expected_files={"ml-mini/tags.csv": None})

    # An unpinned archive that failed its checks is not reused by the next attempt.
    assert not (dest / "downloads" / "ml-mini.zip").exists()


# --------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("bad_name", ["../evil.txt", "ABSOLUTE"])
def test_zip_with_traversal_member_is_refused_and_writes_nothing(
    server: Server, tmp_path: Path, bad_name: str
) -> None:
    if bad_name == "ABSOLUTE":
        bad_name = str(tmp_path / "outside" / "evil.txt")
    # A harmless member first: the check must cover all members before writing any.
    data = _zip_bytes({"ok.txt": b"fine", bad_name: b"pwned"})
    url = server.publish("bad.zip", data)
    dest = tmp_path / "work" / "data"

    with pytest.raises(DownloadError) as err:
        fetch_and_extract(url, dest, sha256=_sha(data))

    assert "bad.zip" in str(err.value)
    assert bad_name in str(err.value)
    assert list(tmp_path.rglob("evil.txt")) == []
    assert list(tmp_path.rglob("ok.txt")) == []
    assert _files_under(dest) == {"downloads/bad.zip"}
    assert not [p for p in dest.parent.iterdir() if ".partial-" in p.name]


def test_zip_symlink_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("data/link")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/ok.txt", b"fine")
        zf.writestr(info, "data/ok.txt")  # even a link that stays inside

    with pytest.raises(DownloadError, match="data/link"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize(
    ("bad", "member"),
    [
        (_tarinfo("data/passwd", tarfile.SYMTYPE, "/etc/passwd"), "data/passwd"),
        (_tarinfo("data/up", tarfile.SYMTYPE, "../../etc/passwd"), "data/up"),
        (_tarinfo("data/hard", tarfile.LNKTYPE, "/etc/passwd"), "data/hard"),
        (_tarinfo("../evil.txt"), "../evil.txt"),
        (_tarinfo("data/fifo", tarfile.FIFOTYPE), "data/fifo"),
    ],
    ids=["symlink-absolute", "symlink-relative-escape", "hardlink", "dotdot", "fifo"],
)
def test_tar_with_unsafe_member_is_refused_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: tarfile.TarInfo, member: str
) -> None:
    # Refused by the up-front check, not only by tarfile's 'data' filter mid-extraction.
    extract_calls: list[object] = []
    monkeypatch.setattr(tarfile.TarFile, "extractall",
                        lambda *args, **kwargs: extract_calls.append(args))
    data = b"pwned" if bad.isreg() else None
    archive = _tar_gz(tmp_path / "bad.tar.gz", [(_tarinfo("data/ok.txt"), b"fine"), (bad, data)])
    (tmp_path / "work").mkdir()
    dest = tmp_path / "work" / "dest"

    with pytest.raises(DownloadError) as err:
        safe_extract(archive, dest)

    assert "bad.tar.gz" in str(err.value)
    assert repr(member) in str(err.value)
    assert not dest.exists()
    assert list(tmp_path.rglob("evil.txt")) == []
    assert list((tmp_path / "work").iterdir()) == []
    assert extract_calls == []


def test_tar_member_under_a_link_is_refused(tmp_path: Path) -> None:
    # 'data/sub' -> '.' stays inside, but writing 'data/sub/x' through it must not be trusted.
    archive = _tar_gz(
        tmp_path / "through.tgz",
        [(_tarinfo("data/sub", tarfile.SYMTYPE, "."), None), (_tarinfo("data/sub/x"), b"x")],
    )
    with pytest.raises(DownloadError, match="under the link"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_safe_tar_extracts_and_merges_into_existing_folder(tmp_path: Path) -> None:
    archive = _tar_gz(
        tmp_path / "good.tar.gz",
        [
            (_tarinfo("data", tarfile.DIRTYPE), None),
            (_tarinfo("data/a.txt"), b"alpha"),
            (_tarinfo("data/b.txt"), b"beta"),
            (_tarinfo("data/alias", tarfile.SYMTYPE, "a.txt"), None),
        ],
    )
    dest = tmp_path / "dest"
    (dest / "data").mkdir(parents=True)
    (dest / "keep.txt").write_bytes(b"kept")
    (dest / "data" / "a.txt").write_bytes(b"stale")

    files = safe_extract(archive, dest)

    assert files == [dest / "data" / "a.txt", dest / "data" / "b.txt"]
    assert (dest / "data" / "a.txt").read_bytes() == b"alpha"
    assert (dest / "data" / "alias").is_symlink()
    assert (dest / "data" / "alias").read_bytes() == b"alpha"
    assert (dest / "keep.txt").read_bytes() == b"kept"
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_unsupported_archive_type_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "data.rar"
    archive.write_bytes(b"not an archive we read")
    with pytest.raises(DownloadError, match="data.rar"):
        safe_extract(archive, tmp_path / "dest")

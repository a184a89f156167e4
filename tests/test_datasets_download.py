"""`embedstore datasets download` against a local HTTP server: checksums, resume, offline."""

import hashlib
import http.server
import io
import socket
import threading
import zipfile

import pytest
from typer.testing import CliRunner

from cli.main import app
from embedstore.datasets import download as dl
from embedstore.datasets.download import Remote, fetch, unpack
from embedstore.errors import InputError

runner = CliRunner()


def fixture_zip() -> bytes:
    """An archive laid out as GitHub's ESC-50-master.zip: one folder at the top."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ESC-50-master/meta/esc50.csv", "filename,fold,target,category,esc10,src_file,take\n")
        zf.writestr("ESC-50-master/audio/readme.txt", "x" * 5000)
    return buffer.getvalue()


class Server:
    """Serves ``files`` on 127.0.0.1 with Range support; ``cut_first`` closes the first
    response after that many bytes (a dropped connection)."""

    def __init__(self, files: dict[str, bytes], cut_first: int | None = None, ranges: bool = True):
        self.files, self.cut_first, self.ranges, self.requests = files, cut_first, ranges, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                outer.requests.append((name, self.headers.get("Range")))
                if name not in outer.files:
                    self.send_error(404)
                    return
                data = outer.files[name]
                start = 0
                if self.headers.get("Range") and outer.ranges:
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if outer.cut_first is not None and len(outer.requests) == 1:
                    body = body[:outer.cut_first]
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive():
    return fixture_zip()


def test_fetch_verifies_and_unpacks(tmp_path, archive):
    server = Server({"ESC-50-master.zip": archive})
    try:
        remote = Remote("ESC-50-master.zip", f"{server.url}/ESC-50-master.zip", hashlib.md5(archive).hexdigest())
        path, fetched = fetch(remote, tmp_path)
        assert fetched and path.read_bytes() == archive
        written = unpack(path, remote, tmp_path)
        assert (tmp_path / "ESC-50-master" / "meta" / "esc50.csv").is_file() and len(written) == 2
        again, fetched = fetch(remote, tmp_path)  # verified and kept: not fetched twice
        assert not fetched and len(server.requests) == 1 and unpack(again, remote, tmp_path) == []
    finally:
        server.close()


def test_a_checksum_mismatch_is_refused_and_the_file_removed(tmp_path, archive):
    server = Server({"ESC-50-master.zip": archive})
    try:
        remote = Remote("ESC-50-master.zip", f"{server.url}/ESC-50-master.zip", "0" * 32)
        with pytest.raises(InputError, match="checksum mismatch .*deleted"):
            fetch(remote, tmp_path)
        assert list(tmp_path.iterdir()) == []
        # the CLI, with the published MD5 of ESC-50 and the file from the local server
        result = runner.invoke(app, ["datasets", "download", "esc50", "--root", str(tmp_path / "esc"),
                                     "--mirror", server.url])
        assert result.exit_code == 1 and "checksum mismatch" in result.output
        assert "Traceback" not in result.output and not any((tmp_path / "esc").rglob("*.zip*"))
    finally:
        server.close()


def test_an_interrupted_download_resumes_with_a_range_request(tmp_path, archive):
    server = Server({"ESC-50-master.zip": archive}, cut_first=1000)
    try:
        remote = Remote("ESC-50-master.zip", f"{server.url}/ESC-50-master.zip", hashlib.md5(archive).hexdigest())
        with pytest.raises(InputError, match="was cut after 1000 .*run the same command again to resume"):
            fetch(remote, tmp_path)
        part = tmp_path / "ESC-50-master.zip.part"
        assert part.stat().st_size == 1000
        path, fetched = fetch(remote, tmp_path)
        assert fetched and path.read_bytes() == archive and not part.exists()
        assert server.requests == [("ESC-50-master.zip", None), ("ESC-50-master.zip", "bytes=1000-")]
    finally:
        server.close()


def test_a_server_ignoring_the_range_sends_the_whole_file_again(tmp_path, archive):
    server = Server({"ESC-50-master.zip": archive}, cut_first=1000, ranges=False)
    try:
        remote = Remote("ESC-50-master.zip", f"{server.url}/ESC-50-master.zip", hashlib.md5(archive).hexdigest())
        with pytest.raises(InputError, match="cut after 1000"):
            fetch(remote, tmp_path)
        path, _ = fetch(remote, tmp_path)
        assert path.read_bytes() == archive and server.requests[1] == ("ESC-50-master.zip", "bytes=1000-")
    finally:
        server.close()


def test_offline_is_one_clear_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "data" / "ESC-50"
    result = runner.invoke(app, ["datasets", "download", "esc50", "--root", str(root),
                                 "--mirror", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert "cannot reach 127.0.0.1" in result.output and "offline?" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # the folders made for the download are gone again


def test_a_file_there_that_is_not_the_published_one_needs_overwrite(tmp_path, archive):
    server = Server({"ESC-50-master.zip": archive})
    try:
        remote = Remote("ESC-50-master.zip", f"{server.url}/ESC-50-master.zip", hashlib.md5(archive).hexdigest())
        (tmp_path / "ESC-50-master.zip").write_bytes(b"mine")
        with pytest.raises(InputError, match="exists; pass --overwrite"):
            fetch(remote, tmp_path)
        assert (tmp_path / "ESC-50-master.zip").read_bytes() == b"mine"
        path, fetched = fetch(remote, tmp_path, overwrite=True)
        assert fetched and path.read_bytes() == archive
    finally:
        server.close()


def test_archives_that_escape_the_root_are_not_unpacked(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("../evil.txt", "x")
    (tmp_path / "a.zip").write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="outside"):
        unpack(tmp_path / "a.zip", Remote("a.zip", "", ""), tmp_path)
    assert not (tmp_path.parent / "evil.txt").exists()


def test_mirdata_remotes_carry_the_index_and_published_checksums():
    pytest.importorskip("mirdata")
    from embedstore.datasets import DATASETS

    remotes = DATASETS["openmic"].remotes()
    assert remotes[0].filename == "openmic2018_index_1.0.json" and len(remotes[0].md5) == 32
    assert remotes[1].filename == "openmic-2018-v1.0.0.tgz" and remotes[1].md5 == "e4ccf187e2bb5ab2e115416e8aafe7f4"
    assert DATASETS["nsynth"].remotes is None and dl.is_archive("x.tar.gz")


def test_datasets_list_names_every_dataset(tmp_path):
    result = runner.invoke(app, ["datasets", "list", "--json", str(tmp_path / "d.json")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    import json

    rows = json.loads((tmp_path / "d.json").read_text())["datasets"]
    assert {"esc50", "nsynth", "openmic", "irmas", "irmas-test", "medley-solos", "tinysol", "captions"} <= {
        r["name"] for r in rows}
    esc = next(r for r in rows if r["name"] == "esc50")
    assert esc["classes"] == 50 and esc["labels"] == "single" and esc["licence"] == "CC BY-NC 3.0"
    assert "esc50" in result.output and "CC BY-NC 3.0" in result.output

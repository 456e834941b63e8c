"""Atomic, checksummed download against a local HTTP server and file:// URLs."""

import hashlib
import http.server
import socket
import threading

import pytest

from reslab.data import download as dl
from reslab.data.download import Remote, download_file, fetch
from reslab.errors import ReslabError

PAYLOAD = bytes(range(256)) * 4000  # 1,024,000 bytes: several read chunks
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/ok.bin":
            self._send(200, PAYLOAD, len(PAYLOAD))
        elif self.path == "/corrupt.bin":
            self._send(200, PAYLOAD[:-1] + b"\x00", len(PAYLOAD))
        elif self.path == "/truncated.bin":
            self._send(200, PAYLOAD[: len(PAYLOAD) // 3], len(PAYLOAD))
        else:
            self._send(500, b"boom", 4)

    def _send(self, code, body, length):
        self.send_response(code)
        self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_http_success(server, tmp_path):
    path = download_file(Remote("ok.bin", MD5, (f"{server}/ok.bin",)), tmp_path / "d", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path / "d") == ["ok.bin"]


def test_file_url_success(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    path = download_file(Remote("x.bin", MD5, (src.as_uri(),)), tmp_path / "d")
    assert path.read_bytes() == PAYLOAD


def test_mirror_fallback(server, tmp_path):
    r = Remote("x.bin", MD5, (f"{server}/error", f"{server}/truncated.bin", f"{server}/ok.bin"))
    assert download_file(r, tmp_path).read_bytes() == PAYLOAD


@pytest.mark.parametrize("route, reason", [
    ("corrupt.bin", "checksum mismatch"),
    ("truncated.bin", "truncated transfer"),
    ("error", "HTTP 500"),
])
def test_failures_leave_no_file(server, tmp_path, route, reason):
    r = Remote("x.bin", MD5, (f"{server}/{route}",))
    with pytest.raises(ReslabError, match=reason) as e:
        download_file(r, tmp_path / "d")
    assert _leftovers(tmp_path / "d") == []
    assert str(tmp_path / "d" / "x.bin") in str(e.value)


def test_offline_message_names_url_file_and_directory(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/cifar-10-python.tar.gz"
    r = Remote("cifar-10-python.tar.gz", MD5, (url,))
    with pytest.raises(ReslabError) as e:
        download_file(r, tmp_path / "data" / "cifar10", timeout=5)
    msg = str(e.value)
    assert "\n" not in msg
    assert url in msg and str(tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz") in msg
    assert "RESLAB_DATA" in msg and "--data-dir" in msg
    missing = tmp_path / "nope.bin"
    with pytest.raises(ReslabError, match="could not download"):
        download_file(Remote("y.bin", MD5, (missing.as_uri(),)), tmp_path / "d")


def test_fetch_uses_data_dir_and_respects_download_false(server, tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setitem(dl.RESOURCES, "toy", (Remote("ok.bin", MD5, (f"{server}/ok.bin",)),))
    with pytest.raises(ReslabError, match="download=False.*place it at"):
        fetch("toy", download_missing=False)
    paths = fetch("toy")
    assert paths["ok.bin"] == tmp_path / "env" / "toy" / "ok.bin"
    assert paths["ok.bin"].read_bytes() == PAYLOAD
    # A dataset of several files names every missing one in its error.
    monkeypatch.setitem(dl.RESOURCES, "two", (Remote("a.bin", MD5, (f"{server}/error",)),
                                              Remote("b.bin", MD5, (f"{server}/error",))))
    with pytest.raises(ReslabError, match="HTTP 500.*two/a.bin .*also needed there: b.bin$"):
        fetch("two")
    # Present files are not fetched again (the server is not asked).
    monkeypatch.setitem(dl.RESOURCES, "toy", (Remote("ok.bin", MD5, (f"{server}/error",)),))
    assert fetch("toy")["ok.bin"].read_bytes() == PAYLOAD


def test_verify_rejects_a_wrong_file(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"something else")
    with pytest.raises(ReslabError, match="is not the published x.bin"):
        dl.verify(p, Remote("x.bin", MD5, ("http://example.invalid/x.bin",)))
    assert dl.data_dir(tmp_path) == tmp_path

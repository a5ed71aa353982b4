"""Fixtures for the pretrained-weights tests: an isolated cache and manifest folder, and a
local HTTP server on 127.0.0.1 that serves weight files the way real hosts do.

The server understands a few paths beyond plain files:
- ``/files/<name>``: the file from the served folder (404 if absent);
- ``/hf/<name>``: a 302 redirect to ``/files/<name>`` carrying ``X-Linked-Etag`` with the
  file's sha256 (what huggingface.co does), or ``/hf-lying/<name>`` with a wrong one;
- ``/truncated/<name>``: announces the full ``Content-Length`` but sends half and hangs up.
Every request is counted in ``server.hits`` so tests can tell a cache hit from a download.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from zoo.pretrained import manifests


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine a second thread makes convs ~10x
    slower, not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class LocalServer:
    """Handle to the running test server."""

    root: Path
    port: int
    hits: Counter = field(default_factory=Counter)
    httpd: http.server.ThreadingHTTPServer | None = None

    def url(self, kind: str, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{kind}/{name}"

    def add(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


def _handler(server: LocalServer):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            server.hits[self.path] += 1
            parts = self.path.strip("/").split("/", 1)
            if len(parts) != 2:
                self.send_error(404)
                return
            kind, name = parts
            path = server.root / name
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            if kind in ("hf", "hf-lying"):
                digest = hashlib.sha256(data).hexdigest()
                if kind == "hf-lying":
                    digest = digest[::-1]
                self.send_response(302)
                self.send_header("Location", f"/files/{name}")
                self.send_header("X-Linked-Etag", f'"{digest}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if kind == "truncated":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data)

    return Handler


@pytest.fixture
def http_server(tmp_path: Path):
    """A file server on 127.0.0.1 (free port), started for the test and stopped after it."""
    root = tmp_path / "served"
    root.mkdir()
    server = LocalServer(root=root, port=0)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.httpd = httpd
    server.port = httpd.server_address[1]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(timeout=5)


@pytest.fixture
def zoo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Empty cache (``ZOO_HOME``) and manifest folder (``ZOO_WEIGHTS_DIR``) for one test."""
    home = tmp_path / "zoo_home"
    wdir = tmp_path / "weights"
    wdir.mkdir()
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(wdir))
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("ZOO_DOWNLOAD_TIMEOUT", "10")
    manifests.clear_cache()
    yield home, wdir
    manifests.clear_cache()


def _write_manifest(wdir: Path, manifest: dict) -> Path:
    """Write ``manifest`` as ``<arch>.<tag>.json`` into ``wdir`` and forget cached parses."""
    data = {
        "schema": 1,
        "source": "test",
        "converter": "zoo",
        "preprocessing": {},
        **manifest,
    }
    path = wdir / f"{data['arch']}.{data['tag']}.json"
    path.write_text(json.dumps(data))
    manifests.clear_cache()
    return path


@pytest.fixture
def write_manifest():
    """``write_manifest(wdir, dict)``: write a manifest JSON (defaults filled in)."""
    return _write_manifest


@pytest.fixture
def shipped_manifests(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The repository's own weights/ manifests, with an empty cache in ``tmp_path``."""
    monkeypatch.delenv("ZOO_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo_home"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")  # the real hosts are never contacted in tests
    manifests.clear_cache()
    yield manifests.load_manifests()
    manifests.clear_cache()

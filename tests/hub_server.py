"""A Hugging Face hub on 127.0.0.1: the endpoints ``hf_hub_download`` and ``snapshot_download`` use.

* ``HEAD``/``GET /{owner}/{name}/resolve/{revision}/{file}``: the file, with the headers the
  client reads (``X-Repo-Commit``, ``ETag``, ``Content-Length``);
* ``GET /api/models/{owner}/{name}/revision/{revision}``: the commit and its file list;
* ``GET /api/models/{owner}/{name}/tree/{commit}``: the files, one page.

Point ``HF_ENDPOINT`` at :attr:`HubServer.url`. Every request's path and ``Authorization``
header is kept in :attr:`HubServer.requests`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubServer:
    """Repositories ``{repo: {filename: bytes}}`` served at one commit each."""

    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.required_token: str | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body: bool):
                auth = self.headers.get("Authorization")
                server.requests.append((self.command, self.path, auth))
                if server.required_token and auth != f"Bearer {server.required_token}":
                    return self._send(401, b"unauthorized", {"X-Error-Code": "GatedRepo"}, body)
                path = self.path.split("?")[0]
                if path.startswith("/api/models/") and "/tree/" in path:
                    repo, _, _revision = path[len("/api/models/"):].rpartition("/tree/")
                    if repo not in server.repos:
                        return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"}, body)
                    tree = [{"type": "file", "path": name, "size": len(data),
                             "oid": hashlib.sha1(data).hexdigest()} for name, data in server.repos[repo].items()]
                    return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, body)
                if path.startswith("/api/models/"):
                    repo, _, _revision = path[len("/api/models/"):].rpartition("/revision/")
                    if repo not in server.repos:
                        return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"}, body)
                    info = {"id": repo, "sha": server.commit(repo),
                            "siblings": [{"rfilename": name} for name in server.repos[repo]]}
                    return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
                repo, _, rest = path.lstrip("/").partition("/resolve/")
                _revision, _, filename = rest.partition("/")
                files = server.repos.get(repo)
                if files is None:
                    return self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, body)
                if filename not in files:
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, body)
                data = files[filename]
                headers = {"X-Repo-Commit": server.commit(repo),
                           "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                           "Content-Type": "application/octet-stream"}
                self._send(200, data, headers, body)

            def _send(self, status, data, headers, body):
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def commit(self, repo: str) -> str:
        """A 40-hex commit hash that changes whenever the repository's files do."""
        digest = hashlib.sha1(repo.encode())
        for name in sorted(self.repos[repo]):
            digest.update(name.encode() + hashlib.sha1(self.repos[repo][name]).digest())
        return digest.hexdigest()

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

"""A local stand-in for the Hugging Face Hub's file API, enough for huggingface_hub 2.x.

It serves what ``hf_hub_download``, ``snapshot_download`` and ``HfApi.list_repo_files`` ask for:

    GET  /api/models/{repo}[/revision/{rev}]        model info (id, sha, siblings)
    GET  /api/models/{repo}/tree/{rev}[/{path}]     file listing (recursive)
    HEAD /{repo}/resolve/{rev}/{file}               metadata: ETag, X-Repo-Commit, Content-Length
    GET  /{repo}/resolve/{rev}/{file}               the bytes, with Range support (206)

and fails the way the hub does: 404 with ``X-Error-Code: RepoNotFound`` / ``EntryNotFound`` /
``RevisionNotFound``, 401 with ``X-Error-Code: GatedRepo`` for a gated repo without a token.
It binds 127.0.0.1 on an ephemeral port and records every request (method, path, headers), and
can drop the connection part-way through a file once, to exercise resumed downloads.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    files: dict[str, bytes]
    sha: str = "0123456789abcdef0123456789abcdef01234567"  # the commit every revision resolves to
    token: str | None = None  # gated: only this bearer token may read it


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    # (repo, file) -> bytes to send before dropping the connection, on the next GET only
    drop_once: dict[tuple[str, str], int] = field(default_factory=dict)

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            state = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-hub",
                                       daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def file_gets(self, name: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + name)
                and "/resolve/" in r.path]


_API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(?:/(.*))?)?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class _Handler(BaseHTTPRequestHandler):
    state: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.state.requests.append(Request(self.command, path, dict(self.headers.items())))
        api = _API.match(path)
        resolve = _RESOLVE.match(path)
        match = api or resolve
        if match is None:
            return self._error(404, None, "no such route", body)
        repo_id = match.group(1)
        repo = self.state.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found", body)
        if repo.token and self.headers.get("authorization") != f"Bearer {repo.token}":
            return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted", body)
        if api:
            return self._api(repo_id, repo, api.group(2), api.group(3), body)
        revision, name = resolve.group(2), resolve.group(3)
        if revision not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
        if name not in repo.files:
            return self._error(404, "EntryNotFound", f"{name} does not exist", body,
                               {"X-Repo-Commit": repo.sha})
        self._file(repo_id, repo, name, body)

    def _api(self, repo_id: str, repo: Repo, kind: str | None, revision: str | None,
             body: bool) -> None:
        if revision is not None and revision not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
        if kind == "tree":
            data: object = [{"type": "file", "path": name, "size": len(content),
                             "oid": hashlib.sha1(content).hexdigest()}
                            for name, content in sorted(repo.files.items())]
        else:
            data = {"id": repo_id, "sha": repo.sha, "private": False,
                    "gated": "auto" if repo.token else False,
                    "siblings": [{"rfilename": name} for name in sorted(repo.files)]}
        raw = json.dumps(data).encode()
        self._send(200, {"Content-Type": "application/json", "Content-Length": str(len(raw))},
                   raw if body else b"")

    def _file(self, repo_id: str, repo: Repo, name: str, body: bool) -> None:
        content = repo.files[name]
        headers = {"ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                   "X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if body and wanted:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            if m is None or int(m.group(1)) >= len(content):
                return self._error(416, None, f"bad range {wanted}", body)
            start, status = int(m.group(1)), 206
            end = int(m.group(2)) + 1 if m.group(2) else len(content)
            content = content[start:end]
            headers["Content-Range"] = f"bytes {start}-{start + len(content) - 1}/" \
                                       f"{len(repo.files[name])}"
        headers["Content-Length"] = str(len(content))
        drop = self.state.drop_once.pop((repo_id, name), None) if body else None
        if drop is not None:
            # announce the whole file, send part of it, hang up: a network drop mid-download
            self._send(status, headers, content[:drop])
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self._send(status, headers, content if body else b"")

    def _error(self, status: int, code: str | None, message: str, body: bool,
               extra: dict[str, str] | None = None) -> None:
        raw = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(raw)),
                   "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, headers, raw if body else b"")

    def _send(self, status: int, headers: dict[str, str], raw: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if raw:
            self.wfile.write(raw)

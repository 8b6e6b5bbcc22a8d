"""An in-process fake of the Hugging Face Hub, served to ``huggingface_hub`` through its client
factory (``huggingface_hub.set_client_factory``) as an ``httpx2.MockTransport``.

It speaks the subset of the Hub's HTTP API that ``HfApi`` (create_repo, create_commit with
preupload + LFS batch/upload/verify, tags, branches, tree listings, paths-info, repo info,
YAML validation), ``hf_hub_download``/``snapshot_download`` (HEAD/GET ``resolve`` with ranges)
and ``datasets``' ``HfFileSystem`` use, so the real ``zoo push`` and the real
``datasets.load_dataset("user/name")`` (also ``streaming=True``) run against it, offline.

State: repos with commits (path -> blob), branches and tags; an LFS object store; a log of
every request (``requests``) and of what each commit added (``commits``). ``fail(route, n)``
makes the next ``n`` calls of a route fail (HTTP status or a network error) to test retries.
Not a test module (no ``test_`` prefix): ``tests/test_hub.py`` uses it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

import httpx2
import yaml

ENDPOINT = "https://huggingface.co"
LFS_SUFFIXES = (".parquet", ".safetensors", ".png", ".arrow", ".npy")
SIZE_CATEGORIES = [
    "n<1K",
    "1K<n<10K",
    "10K<n<100K",
    "100K<n<1M",
    "1M<n<10M",
    "10M<n<100M",
    "100M<n<1B",
    "1B<n<10B",
    "10B<n<100B",
    "100B<n<1T",
    "n>1T",
]


@dataclass(frozen=True)
class Blob:
    """A file's content and how the Hub stores it (LFS pointer or plain git blob)."""

    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)  # oid -> files
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> str | None:
        rev = rev or "main"
        if rev in self.commits:
            return rev
        return self.branches.get(rev) or self.tags.get(rev)


@dataclass(frozen=True)
class Request:
    """One request as the fake received it (the Authorization header kept apart)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    authorization: str | None


class HubHTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _error(status, message, code=None):
    return HubHTTPError(status, message, code)


class FakeHub:
    """The fake Hub. ``tokens`` maps token -> (user, "write" | "read")."""

    def __init__(self, tokens: dict[str, tuple[str, str]]):
        self.tokens = dict(tokens)
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content
        self.requests: list[Request] = []
        self.commits: list[dict] = []  # {"repo", "message", "added", "deleted"}
        self.lfs_puts: list[str] = []  # sha256 of every LFS upload
        self.unhandled: list[str] = []  # huggingface.co routes the fake lacks
        self.elsewhere: list[str] = []  # requests to other hosts (answered 404)
        self._failures: dict[str, list] = {}
        self._counter = 0
        self.routes = [
            ("GET", r"/api/whoami-v2", self.whoami),
            ("GET", r"/api/agent-harnesses", self.not_served),  # best-effort telemetry
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            (
                "GET",
                r"/api/datasets/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?",
                self.repo_info,
            ),
            (
                "GET",
                r"/api/datasets/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?",
                self.tree,
            ),
            (
                "POST",
                r"/api/datasets/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)",
                self.paths_info,
            ),
            ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/refs", self.refs),
            (
                "POST",
                r"/api/datasets/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)",
                self.preupload,
            ),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", self.commit),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/tag/(?P<rev>[^/]+)", self.tag),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/branch/(?P<branch>[^/]+)", self.branch),
            (
                "POST",
                r"/datasets/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch",
                self.lfs_batch,
            ),
            ("PUT", r"/fake-lfs/(?P<oid>[0-9a-f]{64})", self.lfs_put),
            ("POST", r"/fake-lfs/(?P<oid>[0-9a-f]{64})/verify", self.lfs_verify),
            (
                "HEAD",
                r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
                self.resolve,
            ),
            (
                "GET",
                r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
                self.resolve,
            ),
        ]

    # -- plumbing ---------------------------------------------------------------------------

    def client(self) -> httpx2.Client:
        """A client like ``huggingface_hub``'s default one, served by this fake."""
        from huggingface_hub.utils._http import hf_request_event_hook

        return httpx2.Client(
            transport=httpx2.MockTransport(self.handle),
            event_hooks={"request": [hf_request_event_hook]},
            follow_redirects=True,
            timeout=None,
        )

    def fail(self, route: str, times: int, status: int | None = 503) -> None:
        """Make the next ``times`` calls of handler ``route`` fail: HTTP ``status``, or a
        network error (``httpx2.ConnectError``) when ``status`` is None."""
        self._failures[route] = [status] * times

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        auth = request.headers.get("authorization")
        self.requests.append(Request(request.method, str(request.url), headers, body, auth))
        if request.url.host != "huggingface.co":  # download counters, the viewer's API
            self.elsewhere.append(f"{request.method} {request.url}")
            return _json({"error": "fake hub: host not served"}, 404)
        path = request.url.raw_path.decode().split("?")[0]  # segments stay percent-encoded
        for method, pattern, handler in self.routes:
            match = re.fullmatch(pattern, path)
            if method == request.method and match:
                return self._call(handler, request, body, match)
        self.unhandled.append(f"{request.method} {request.url}")
        return _json({"error": f"fake hub: no route for {request.method} {path}"}, 404)

    def _call(self, handler, request, body, match) -> httpx2.Response:
        pending = self._failures.get(handler.__name__)
        if pending:
            status = pending.pop(0)
            if status is None:
                raise httpx2.ConnectError("fake hub: connection refused", request=request)
            return _json({"error": "fake hub: injected failure"}, status)
        params = {k: unquote(v) if v else v for k, v in match.groupdict().items()}
        try:
            user = self._user(request)
            return handler(request=request, body=body, user=user, **params)
        except HubHTTPError as err:
            headers = {"X-Error-Code": err.code} if err.code else {}
            if err.status == 401 and err.code is None:
                headers["X-Error-Message"] = err.message
            return _json({"error": err.message}, err.status, headers)

    def _user(self, request) -> tuple[str, str] | None:
        auth = request.headers.get("authorization")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise _error(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _repo(self, repo_id: str, user, write: bool = False) -> Repo:
        repo = self.repos.get(repo_id)
        visible = repo is not None and (not repo.private or (user and user[0] == _ns(repo_id)))
        if not visible:  # as the Hub: 401 to a request without a token, 404 with one
            status = 404 if user else 401
            raise _error(status, f"Repository not found: {repo_id}", "RepoNotFound")
        if write:
            self._check_write(repo_id, user)
        return repo

    def _check_write(self, repo_id: str, user) -> None:
        if user is None:
            raise _error(401, "You must be authenticated to write", "RepoNotFound")
        if user[1] != "write" or user[0] != _ns(repo_id):
            raise _error(403, f"You don't have the rights to write to {repo_id}")

    def _files(self, repo: Repo, rev: str) -> tuple[str, dict[str, Blob]]:
        oid = repo.resolve(rev)
        if oid is None:
            raise _error(404, f"Revision not found: {rev}", "RevisionNotFound")
        return oid, repo.commits[oid]

    def _new_commit(self, repo: Repo, files: dict[str, Blob]) -> str:
        self._counter += 1
        oid = hashlib.sha1(f"{repo.repo_id}:{self._counter}".encode()).hexdigest()
        repo.commits[oid] = files
        return oid

    # -- API --------------------------------------------------------------------------------

    def not_served(self, request, body, user):
        return _json({"error": "fake hub: not served"}, 404)

    def whoami(self, request, body, user):
        if user is None:
            raise _error(401, "Invalid credentials in Authorization header")
        return _json({"type": "user", "name": user[0], "auth": {"accessToken": {"role": user[1]}}})

    def create_repo(self, request, body, user):
        data = json.loads(body)
        repo_id = f"{data.get('organization') or (user or ('',))[0]}/{data['name']}"
        self._check_write(repo_id, user)
        if repo_id in self.repos:  # the Hub names the existing repo's url in its 409
            return _json(
                {
                    "error": "You already created this dataset repo",
                    "url": f"{ENDPOINT}/datasets/{repo_id}",
                },
                409,
            )
        repo = Repo(repo_id, data.get("visibility") == "private")
        attrs = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)
        repo.branches["main"] = self._new_commit(
            repo, {".gitattributes": Blob(attrs.encode(), False)}
        )
        self.repos[repo_id] = repo
        return _json({"url": f"{ENDPOINT}/datasets/{repo_id}", "name": repo_id})

    def validate_yaml(self, request, body, user):
        content = json.loads(body)["content"]
        meta = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else {}
        errors = [
            f"size_categories: {c!r} is not allowed"
            for c in meta.get("size_categories", [])
            if c not in SIZE_CATEGORIES
        ]
        for config in meta.get("configs", []):
            if "config_name" not in config or "data_files" not in config:
                errors.append(f"configs: {config} needs config_name and data_files")
        if errors:
            return _json({"errors": [{"message": e} for e in errors]}, 400)
        return _json({"errors": [], "warnings": []})

    def repo_info(self, request, body, user, repo, rev=None):
        r = self._repo(repo, user)
        oid, files = self._files(r, rev or "main")
        card = {}
        if "README.md" in files:
            text = files["README.md"].data.decode()
            card = yaml.safe_load(text.split("---")[1]) if text.startswith("---") else {}
        return _json(
            {
                "id": repo,
                "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
                "author": _ns(repo),
                "sha": oid,
                "private": r.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": card.get("tags", []),
                "cardData": card,
                "lastModified": "2025-01-01T00:00:00.000Z",
                "createdAt": "2025-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": p} for p in sorted(files)],
            }
        )

    def _entries(self, files: dict[str, Blob], prefix: str, recursive: bool) -> list[dict]:
        out, dirs = [], set()
        base = prefix.strip("/") + "/" if prefix.strip("/") else ""
        for path in sorted(files):
            if not path.startswith(base):
                continue
            parts = path[len(base) :].split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    dirs.add(base + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                out.append(_file_entry(path, files[path]))
        out += [
            {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
            for d in sorted(dirs)
        ]
        return out

    def tree(self, request, body, user, repo, rev, path=None):
        _, files = self._files(self._repo(repo, user), rev)
        path = path or ""
        if path and path in files:
            raise _error(400, f"{path} is a file, not a folder")
        if path and not any(p.startswith(path.strip("/") + "/") for p in files):
            raise _error(404, f"Entry not found: {path}", "EntryNotFound")
        recursive = request.url.params.get("recursive", "").lower() in ("1", "true")
        return _json(self._entries(files, path, recursive))

    def paths_info(self, request, body, user, repo, rev):
        _, files = self._files(self._repo(repo, user), rev)
        paths = parse_qs(body.decode()).get("paths", [])
        out = []
        for p in paths:
            p = p.strip("/")
            if p in files:
                out.append(_file_entry(p, files[p]))
            elif any(f.startswith(p + "/") for f in files):
                out.append(
                    {
                        "type": "directory",
                        "oid": hashlib.sha1(p.encode()).hexdigest(),
                        "size": 0,
                        "path": p,
                    }
                )
        return _json(out)

    def refs(self, request, body, user, repo):
        r = self._repo(repo, user)
        return _json(
            {
                "branches": [
                    {"name": b, "ref": f"refs/heads/{b}", "targetCommit": c}
                    for b, c in r.branches.items()
                ],
                "tags": [
                    {"name": t, "ref": f"refs/tags/{t}", "targetCommit": c}
                    for t, c in r.tags.items()
                ],
                "converts": [],
            }
        )

    def preupload(self, request, body, user, repo, rev):
        r = self._repo(repo, user, write=True)
        _, files = self._files(r, rev)
        out = []
        for f in json.loads(body)["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10 * 2**20
            old = files.get(f["path"])
            out.append(
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": old.etag if old else None,
                }
            )
        return _json({"files": out, "commitOid": r.resolve(rev)})

    def commit(self, request, body, user, repo, rev):
        r = self._repo(repo, user, write=True)
        parent, files = self._files(r, rev)
        if rev in r.tags or rev in r.commits:
            raise _error(400, f"cannot commit to {rev}: not a branch")
        files, log = dict(files), {"repo": repo, "message": "", "added": [], "deleted": []}
        for line in body.decode().splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                log["message"] = value["summary"]
                if value.get("parentCommit") not in (None, parent):
                    raise _error(412, "parent commit is not the head of the branch")
            elif key in ("file", "lfsFile"):
                files[value["path"]] = self._blob(key, value)
                log["added"].append(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                log["deleted"] += _delete(files, value["path"])
        log["oid"] = r.branches[rev] = self._new_commit(r, files)
        self.commits.append(log)
        return _json(
            {
                "commitUrl": f"{ENDPOINT}/datasets/{repo}/commit/{log['oid']}",
                "commitOid": log["oid"],
                "pullRequestUrl": None,
            }
        )

    def _blob(self, key: str, value: dict) -> Blob:
        if key == "file":
            return Blob(base64.b64decode(value["content"]), False)
        if value["oid"] not in self.lfs:
            raise _error(422, f"LFS object {value['oid']} was not uploaded")
        return Blob(self.lfs[value["oid"]], True)

    def tag(self, request, body, user, repo, rev):
        r = self._repo(repo, user, write=True)
        oid, _ = self._files(r, rev)
        name = json.loads(body)["tag"]
        if name in r.tags:
            raise _error(409, f"Tag {name} already exists")
        r.tags[name] = oid
        return _json({})

    def branch(self, request, body, user, repo, branch):
        r = self._repo(repo, user, write=True)
        if branch in r.branches:
            raise _error(409, f"Branch {branch} already exists")
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        r.branches[branch], _ = self._files(r, start)
        return _json({})

    def lfs_batch(self, request, body, user, repo):
        self._repo(repo, user, write=True)
        out = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs:
                href = f"{ENDPOINT}/fake-lfs/{obj['oid']}"
                entry["actions"] = {"upload": {"href": href}, "verify": {"href": href + "/verify"}}
            out.append(entry)
        return _json({"transfer": "basic", "objects": out})

    def lfs_put(self, request, body, user, oid):
        if hashlib.sha256(body).hexdigest() != oid:
            raise _error(400, "sha256 mismatch")
        self.lfs[oid] = body
        self.lfs_puts.append(oid)
        return httpx2.Response(200)

    def lfs_verify(self, request, body, user, oid):
        if oid not in self.lfs:
            raise _error(404, "object not found")
        return _json({})

    def resolve(self, request, body, user, repo, rev, path):
        oid, files = self._files(self._repo(repo, user), rev)
        if path not in files:
            raise _error(404, f"Entry not found: {path}", "EntryNotFound")
        blob = files[path]
        headers = {
            "X-Repo-Commit": oid,
            "ETag": f'"{blob.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Length": str(len(blob.data)),
        }
        if request.method == "HEAD":
            return httpx2.Response(200, headers=headers)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
        if match is None:
            return httpx2.Response(200, headers=headers, content=blob.data)
        start = int(match[1])
        end = min(int(match[2]) if match[2] else len(blob.data) - 1, len(blob.data) - 1)
        part = blob.data[start : end + 1]
        headers.update(
            {
                "Content-Range": f"bytes {start}-{end}/{len(blob.data)}",
                "Content-Length": str(len(part)),
            }
        )
        return httpx2.Response(206, headers=headers, content=part)

    # -- views for tests --------------------------------------------------------------------

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision: path -> bytes."""
        repo = self.repos[repo_id]
        return {p: b.data for p, b in repo.commits[repo.resolve(rev)].items()}


def _ns(repo_id: str) -> str:
    return repo_id.split("/")[0]


def _delete(files: dict[str, Blob], path: str) -> list[str]:
    gone = [p for p in files if p == path or p.startswith(path.rstrip("/") + "/")]
    if not gone:
        raise _error(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
    for p in gone:
        del files[p]
    return gone


def _file_entry(path: str, blob: Blob) -> dict:
    entry = {"type": "file", "oid": blob.git_oid, "size": len(blob.data), "path": path}
    if blob.lfs:
        entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": 134}
    return entry


def _json(obj, status: int = 200, headers: dict | None = None) -> httpx2.Response:
    return httpx2.Response(status, json=obj, headers=headers)

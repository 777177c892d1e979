#!/usr/bin/env python3
"""A local stand-in for the Hugging Face Hub, for testing `swiftlet pull` offline.

Serves the repositories under --root (ROOT/USER/REPO/FILES) through the Hub's routes:
  GET /api/models/USER/REPO[/revision/REV][?blobs=true]   model info: sha, siblings (lfs.sha256, lfs.size)
  GET /USER/REPO/resolve/REV/PATH                         302 to /cdn/USER/REPO/PATH, as the Hub sends files to its CDN
  GET /cdn/USER/REPO/PATH                                 the bytes, with Range support (206, Content-Range)

It is also an HTTP proxy: CONNECT to any host:port tunnels to the stand-in itself, so a
client that honours https_proxy reaches it under any name. Faults for the tests: --token (401 without 'Authorization: Bearer TOKEN'), --drop-after N
(the first --drop-times CDN answers close the connection after N bytes of the body),
--corrupt (the CDN flips one byte in the middle of every file) and --ignore-range (200 with the
whole file whatever Range says). Every request is appended to --log as a JSON line
(method, path, range, authorization present). Prints the port on stdout once listening.
"""
import argparse
import hashlib
import json
import os
import select
import socket
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token")
    p.add_argument("--drop-after", type=int)
    p.add_argument("--drop-times", type=int, default=1)
    p.add_argument("--corrupt", action="store_true")
    p.add_argument("--ignore-range", action="store_true")
    p.add_argument("--log")
    return p.parse_args()


ARGS = parse_args()
LOCK = threading.Lock()
DROPS_LEFT = [ARGS.drop_times if ARGS.drop_after is not None else 0]


def repo_files(repo_dir):
    files = []
    for folder, _, names in os.walk(repo_dir):
        for name in names:
            full = os.path.join(folder, name)
            files.append((os.path.relpath(full, repo_dir).replace(os.sep, "/"), full))
    return sorted(files)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self):
        if not ARGS.log:
            return
        entry = {"method": self.command, "path": self.path, "range": self.headers.get("Range"),
                 "authorized": self.headers.get("Authorization") is not None,
                 "user_agent": self.headers.get("User-Agent")}
        with LOCK, open(ARGS.log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def send_json(self, status, obj, extra=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def authorized(self):
        if ARGS.token is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {ARGS.token}":
            return True
        self.send_json(401, {"error": "Invalid credentials in Authorization header"})
        return False

    def repo_dir(self, user, repo):
        path = os.path.join(ARGS.root, user, repo)
        return path if os.path.isdir(path) else None

    def do_GET(self):
        self.record()
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        if len(parts) >= 4 and parts[0] == "api" and parts[1] == "models":
            return self.model_info(parts[2], parts[3], url.query)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve(parts[0], parts[1], "/".join(parts[4:]))
        if len(parts) >= 4 and parts[0] == "cdn":
            return self.cdn(parts[1], parts[2], "/".join(parts[3:]))
        self.send_json(404, {"error": "Not Found"})

    def do_CONNECT(self):
        self.record()
        upstream = socket.create_connection(("127.0.0.1", self.server.server_address[1]))
        self.send_response(200, "Connection Established")
        self.end_headers()
        self.wfile.flush()
        sockets = [self.connection, upstream]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 30)
                if not readable:
                    break
                for s in readable:
                    data = s.recv(1 << 16)
                    if not data:
                        return
                    (upstream if s is self.connection else self.connection).sendall(data)
        finally:
            upstream.close()
            self.close_connection = True

    def commit(self, repo_dir):
        digest = hashlib.sha1()
        for rel, full in repo_files(repo_dir):
            digest.update(f"{rel}:{os.path.getsize(full)}\n".encode())
        return digest.hexdigest()

    def model_info(self, user, repo, query):
        if not self.authorized():
            return
        repo_dir = self.repo_dir(user, repo)
        if repo_dir is None:
            return self.send_json(404, {"error": "Repository not found"})
        blobs = "blobs=true" in query.lower()
        siblings = []
        for rel, full in repo_files(repo_dir):
            entry = {"rfilename": rel}
            if blobs:
                size = os.path.getsize(full)
                entry["size"] = size
                if rel.endswith(".gguf"):
                    entry["lfs"] = {"sha256": sha256_of(full), "size": size, "pointerSize": 134}
            siblings.append(entry)
        self.send_json(200, {"id": f"{user}/{repo}", "modelId": f"{user}/{repo}", "sha": self.commit(repo_dir),
                             "private": ARGS.token is not None, "siblings": siblings})

    def resolve(self, user, repo, path):
        if not self.authorized():
            return
        repo_dir = self.repo_dir(user, repo)
        full = repo_dir and os.path.join(repo_dir, path)
        if not full or not os.path.isfile(full):
            return self.send_json(404, {"error": "Entry not found"})
        location = "/cdn/" + "/".join(urllib.parse.quote(p) for p in [user, repo] + path.split("/"))
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("X-Repo-Commit", self.commit(repo_dir))
        self.send_header("X-Linked-Size", str(os.path.getsize(full)))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def cdn(self, user, repo, path):
        repo_dir = self.repo_dir(user, repo)
        full = repo_dir and os.path.join(repo_dir, path)
        if not full or not os.path.isfile(full):
            return self.send_json(404, {"error": "Entry not found"})
        with open(full, "rb") as f:
            data = bytearray(f.read())
        if ARGS.corrupt and data:
            data[len(data) // 2] ^= 0xFF
        start = 0
        requested = self.headers.get("Range")
        if requested and not ARGS.ignore_range:
            start = int(requested.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with LOCK:
            drop = DROPS_LEFT[0] > 0
            if drop:
                DROPS_LEFT[0] -= 1
        if drop:
            # Half a body, then the connection goes away: what a flaky network does.
            self.wfile.write(data[start:start + ARGS.drop_after])
            self.wfile.flush()
            # FIN after the bytes written (not RST, which could discard them): the client gets
            # exactly --drop-after bytes, then an early end of the body.
            self.connection.shutdown(socket.SHUT_WR)
            self.close_connection = True
            return
        self.wfile.write(data[start:])


def main():
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())

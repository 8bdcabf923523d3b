"""Run a pasted snippet (imgread.answer.snippets) in a fresh interpreter and check what it
delivered: the count, shape and dtype of every item, and the first image's pixels against the
project's decode of the same file with the same decoder and crop (within check.MAE_LIMIT)."""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import numpy as np

from imgread.answer.snippets import parse
from imgread.decoders import get_decoder
from imgread.phases.dataloader.pipelines.check import MAE_LIMIT, to_hwc_uint8_levels

# Appended to each snippet: its result, whichever of the three it leaves, to an .npz.
HARNESS = """

if __name__ == "__main__":
    import numpy as _np

    _g = globals()
    _kind = next(k for k in ("images", "shapes", "blobs") if k in _g)
    _items = list(_g[_kind])
    _save = dict(kind=_kind, count=len(_items))
    if _kind == "blobs":
        _save["first"] = _np.frombuffer(_items[0], _np.uint8)
    elif _kind == "shapes":
        _save["shapes"] = _np.array([tuple(s) for s in _items])
    else:
        _save["shapes"] = _np.array([_np.asarray(x).shape for x in _items])
        _save["dtypes"] = _np.array(sorted({str(_np.asarray(x).dtype) for x in _items}))
        _save["first"] = _np.asarray(_items[0])
    _np.savez(_g["_OUT"] if "_OUT" in _g else __import__("os").environ["SNIPPET_OUT"], **_save)
"""
BLOCK = re.compile(r"^### (?P<title>.+?)\n\n```python\n(?P<code>.*?)\n```", re.S | re.M)


def blocks(markdown: str) -> list[tuple[str, str]]:
    """(title, code) of every fenced python block of a recommendation.md."""
    return [(m["title"], m["code"]) for m in BLOCK.finditer(markdown)]


def run(code: str, data: Path, out: Path, timeout: float = 120, env: dict | None = None):
    """Run ``code`` + the harness in a fresh interpreter over ``data``; the .npz it wrote."""
    script = out.with_suffix(".py")
    script.write_text(code + HARNESS)
    full = {**os.environ, "IMGREAD_DATA": str(data), "SNIPPET_OUT": str(out), **(env or {})}
    full.pop("PYTHONPATH", None)  # no imgread: the snippet stands alone
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=out.parent,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-3000:]}"
    return dict(np.load(out, allow_pickle=False))


def check(title: str, result: dict, files: list[Path]) -> None:
    """The result of a snippet titled ``title`` (snippets.title) over ``files``, checked."""
    phase, job, _, settings = title.split(" | ")
    p = {**parse(job), **parse(settings)}
    assert int(result["count"]) == len(files), (title, int(result["count"]), len(files))
    kind = str(result["kind"])
    if kind == "blobs":
        assert result["first"].tobytes() == files[0].read_bytes(), title
        return
    output = p.get("output", "full") if phase == "decode" else "crop224"
    ref = [get_decoder(p.get("decoder", "pillow")).decode(str(f), output) for f in files]
    if kind == "shapes":
        assert [tuple(s) for s in result["shapes"]] == [r.shape for r in ref], title
        return
    first = result["first"]
    if phase == "dataloader":
        assert list(result["dtypes"]) == ["float32"], (title, result["dtypes"])
        layout = "NCHW" if first.shape[0] == 3 else "NHWC"
        want = (3, 224, 224) if layout == "NCHW" else (224, 224, 3)
        assert all(tuple(s) == want for s in result["shapes"]), (title, result["shapes"])
        levels = to_hwc_uint8_levels(first, layout)
    else:
        assert list(result["dtypes"]) == ["uint8"], (title, result["dtypes"])
        assert [tuple(s) for s in result["shapes"]] == [r.shape for r in ref], title
        levels = first.astype(np.float32)
    mae = float(np.abs(levels - ref[0].astype(np.float32)).mean())
    assert mae <= MAE_LIMIT, f"{title}: the first image differs by {mae:.2f} levels"


class _Objects(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of /<bucket>/<key> (Range too): the S3 clients' unsigned, path-style reads
    of the files under the server's ``root``."""

    protocol_version = "HTTP/1.1"
    root: Path = Path(".")

    def log_message(self, *args):  # quiet
        pass

    def _object(self) -> bytes | None:
        parts = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        bucket, _, key = parts.partition("/")
        path = self.root / key
        return path.read_bytes() if bucket == BUCKET and key and path.is_file() else None

    def _send(self, body: bytes | None, head: bool) -> None:
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, rng = 200, self.headers.get("Range")
        if rng:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            end = min(int(last) if last else len(body) - 1, len(body) - 1)
            status, total = 206, len(body)
            body = body[int(first) : end + 1]
        self.send_response(status)
        if rng:
            self.send_header("Content-Range", f"bytes {first}-{end}/{total}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", '"0"')
        self.send_header("Last-Modified", "Mon, 07 Dec 2026 00:00:00 GMT")
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's name)
        self._send(self._object(), head=False)

    def do_HEAD(self):  # noqa: N802
        self._send(self._object(), head=True)


BUCKET = "images"


@contextlib.contextmanager
def object_store(root: Path):
    """A local object store of the files under ``root`` (bucket ``images``); yields the env
    a snippet reads it with (IMGREAD_ENDPOINT, IMGREAD_BUCKET, IMGREAD_REGION)."""
    handler = type("Objects", (_Objects,), {"root": Path(root)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {
            "IMGREAD_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
            "IMGREAD_BUCKET": BUCKET,
            "IMGREAD_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1",
        }
    finally:
        server.shutdown()
        server.server_close()

"""``dass serve``: a local web page to look at what a model hears in a recording.

Drop or pick an audio file (or name a file under the server's ``root``), and the page shows the top
tags, the timeline heat map of the classes with the highest peaks (0.32 s steps; zoom and scroll),
the event list (:mod:`dass.events`), and plays the audio with a cursor; clicking an event or a heat
map cell seeks there.

The stack is the Python standard library (:class:`http.server.ThreadingHTTPServer`) and one plain
HTML / JS / CSS page in ``dass/serve/static``: nothing to install, nothing loaded from the network
at run time (docs/archive.md says why not Gradio or FastAPI). Files are analysed one at a time in a
background thread, through the same code as ``dass tag --events`` (:class:`dass.batch.pipeline.Tagger`:
the exact tiled engine for long inputs); the page polls the job and shows its progress.

Progress: the feature extraction and the tiled engine report through tqdm bars. While a job runs, the
server's :class:`_ReportingBar` (installed as ``tqdm.auto.tqdm`` in the serving process only) sends
those bars' counts to the job instead of a terminal.

HTTP API (JSON): ``GET /api/info``; ``POST /api/upload`` (the file as the body, its name in
``X-Filename``) and ``POST /api/path`` (``{"path": ...}``) -> ``{"job": id}``; ``GET /api/jobs/<id>``
-> ``{"state", "phase", "progress", "error", "result"}``; ``GET /api/jobs/<id>/audio`` (byte ranges).
"""

from __future__ import annotations

import json
import mimetypes
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote

from ..errors import DassError

__all__ = ["Analyzer", "make_server", "serve"]

STATIC = Path(__file__).with_name("static")
HEATMAP_CLASSES = 20  # timeline rows sent to the page: the classes with the highest peaks
_local = threading.local()


def _install_progress_hook() -> None:
    """Route tqdm bars created on a job's thread to that job (see the module docstring)."""
    import tqdm.auto

    if getattr(tqdm.auto.tqdm, "_dass_reporting", False):
        return
    base = tqdm.auto.tqdm

    class _ReportingBar(base):  # type: ignore[misc, valid-type]
        _dass_reporting = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._job = getattr(_local, "job", None)
            if self._job is not None:
                kwargs["disable"] = False
                kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
            super().__init__(*args, **kwargs)

        def update(self, n: float = 1) -> Any:
            result = super().update(n)
            if self._job is not None:
                self._job.report(str(self.desc or ""), self.n, self.total)
            return result

        def close(self) -> None:
            handle = self.fp if self._job is not None else None
            super().close()
            if handle is not None:
                handle.close()

    tqdm.auto.tqdm = _ReportingBar


class Job:
    """One analysis: its state (``queued``, ``running``, ``done``, ``error``), phase, progress, result."""

    def __init__(self, name: str, path: Path, owned: bool) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.name, self.path, self.owned = name, path, owned
        self.state, self.phase, self.progress = "queued", "waiting", 0.0
        self.error: str | None = None
        self.result: dict[str, Any] | None = None
        self._lock = threading.Lock()

    # the phases and their share of the bar: decoding + features, then the model
    _SPAN: ClassVar[dict[str, tuple[float, float]]] = {"features": (0.0, 0.3), "DASS": (0.3, 0.98)}

    def report(self, desc: str, done: float, total: float | None) -> None:
        lo, hi = self._SPAN.get(desc, (self.progress, self.progress))
        with self._lock:
            self.phase = {"features": "decoding and features", "DASS": "model"}.get(desc, desc)
            if total:
                self.progress = max(self.progress, lo + (hi - lo) * min(1.0, done / total))

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"job": self.id, "name": self.name, "state": self.state, "phase": self.phase,
                    "progress": round(self.progress, 4), "error": self.error, "result": self.result}


class Analyzer:
    """A model, its settings and a queue of :class:`Job`s run one at a time on a background thread."""

    def __init__(self, model: Any, names: list[str] | None, model_name: str = "model",
                 root: str | os.PathLike | None = None, events: Any = None, heatmap_classes: int = HEATMAP_CLASSES,
                 min_frames: int = 1024) -> None:
        from ..batch.pipeline import Tagger, TagOptions
        from ..events import EventParams

        self.tagger = Tagger(model, names, TagOptions(top_k=10, events=events or EventParams(), min_frames=min_frames))
        self.model_name = model_name
        self.root = Path(root).resolve() if root is not None else None
        self.heatmap_classes = int(heatmap_classes)
        self.jobs: dict[str, Job] = {}
        self.uploads = Path(tempfile.mkdtemp(prefix="dass-serve-"))
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="dass-serve-analyzer", daemon=True)
        _install_progress_hook()
        self._thread.start()

    def info(self) -> dict[str, Any]:
        return {"model": self.model_name, "classes": self.tagger.num_classes, "labels": self.tagger.columns,
                "root": str(self.root) if self.root else None, "events": _params_dict(self.tagger.options.events)}

    def submit(self, name: str, path: Path, owned: bool) -> Job:
        job = Job(name, path, owned)
        self.jobs[job.id] = job
        self._queue.put(job)
        return job

    def server_path(self, requested: str) -> Path:
        """A file under ``root`` (the only server files the page may open)."""
        if self.root is None:
            raise PermissionError("this server does not open server paths (start it with --root DIR)")
        target = (self.root / requested).resolve()
        if not target.is_relative_to(self.root):
            raise PermissionError(f"{requested}: outside the server's folder {self.root}")
        if not target.is_file():
            raise FileNotFoundError(f"{requested}: no such file under {self.root}")
        return target

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
        shutil.rmtree(self.uploads, ignore_errors=True)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            job.state = "running"
            _local.job = job
            try:
                job.result = self.analyse(job)
                job.progress, job.phase, job.state = 1.0, "done", "done"
            except DassError as e:
                job.error, job.state = str(e), "error"
            except Exception as e:  # noqa: BLE001 - reported on the page, the server goes on
                traceback.print_exc(file=sys.stderr)
                job.error, job.state = f"{type(e).__name__}: {e}", "error"
            finally:
                _local.job = None

    def analyse(self, job: Job) -> dict[str, Any]:
        """Top tags, the heat map of the classes with the highest peaks, and the events of one file."""
        import torch

        from ..batch.pipeline import prepare

        start = time.perf_counter()
        options = self.tagger.options
        item = prepare(str(job.path), options.min_frames, options.max_frames, progress=True)
        if item.error is not None:
            raise DassError(item.error.replace(str(job.path), job.name))
        clip, times_s, scores = self.tagger.timeline(item, progress=True)
        row = self.tagger.row(item, clip, self.tagger.events(times_s, scores))
        k = min(self.heatmap_classes, scores.shape[1])
        order = torch.argsort(scores.max(dim=0).values, descending=True, stable=True)[:k].tolist()
        return {"file": job.name, "duration_s": row["duration_s"], "frames": row["frames"], "top": row["top"],
                "events": row["events"], "step_s": 0.32, "times": [[round(a, 3), round(b, 3)] for a, b in times_s.tolist()],
                "heatmap": {"labels": [self.tagger.columns[i] for i in order], "classes": order,
                            "scores": [[round(v, 3) for v in scores[:, i].tolist()] for i in order]},
                "seconds": round(time.perf_counter() - start, 2)}


def _params_dict(params: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in asdict(params).items()}


class _Handler(BaseHTTPRequestHandler):
    analyzer: Analyzer
    server_version = "dass-serve"

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("DASS_SERVE_LOG"):
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, document: Any) -> None:
        self._send(status, json.dumps(document).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        if path == "/api/info":
            return self._json(200, self.analyzer.info())
        match = re.fullmatch(r"/api/jobs/([0-9a-f]+)(/audio)?", path)
        if match:
            job = self.analyzer.jobs.get(match.group(1))
            if job is None:
                return self._error(404, "no such job")
            return self._audio(job) if match.group(2) else self._json(200, job.status())
        self._error(404, f"{path}: not found")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        if path == "/api/upload":
            name = os.path.basename(unquote(self.headers.get("X-Filename") or "")) or "upload"
            folder = Path(tempfile.mkdtemp(dir=self.analyzer.uploads))
            target = folder / name
            with open(target, "wb") as handle:
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    handle.write(chunk)
                    remaining -= len(chunk)
            if remaining:
                return self._error(400, "the upload ended early")
            return self._json(200, {"job": self.analyzer.submit(name, target, owned=True).id})
        if path == "/api/path":
            try:
                requested = json.loads(self.rfile.read(length) or b"{}").get("path", "")
                target = self.analyzer.server_path(str(requested))
            except (ValueError, AttributeError):
                return self._error(400, 'expected {"path": "..."}')
            except PermissionError as e:
                return self._error(403, str(e))
            except FileNotFoundError as e:
                return self._error(404, str(e))
            return self._json(200, {"job": self.analyzer.submit(str(requested), target, owned=False).id})
        self._error(404, f"{path}: not found")

    def _static(self, name: str) -> None:
        target = (STATIC / name).resolve()
        if not target.is_relative_to(STATIC.resolve()) or not target.is_file():
            return self._error(404, f"{name}: not found")
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self._send(200, target.read_bytes(), f"{kind}; charset=utf-8" if kind.startswith("text/") or
                   kind.endswith("javascript") else kind)

    def _audio(self, job: Job) -> None:
        """The file itself, with byte ranges (the browser's player seeks with them)."""
        size = job.path.stat().st_size
        kind = mimetypes.guess_type(job.name)[0] or "application/octet-stream"
        first, last, status = 0, size - 1, HTTPStatus.OK
        wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if wanted and size > 0:
            a, b = wanted.groups()
            if a:
                first, last = int(a), min(int(b), size - 1) if b else size - 1
            elif b:
                first = max(0, size - int(b))
            if first > last:
                return self._send(416, b"", kind, {"Content-Range": f"bytes */{size}"})
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(max(0, last - first + 1)))
        self.send_header("Accept-Ranges", "bytes")
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(job.path, "rb") as handle:  # streamed: an hour of audio is not read into memory
            handle.seek(first)
            remaining = last - first + 1
            try:
                while remaining > 0:
                    chunk = handle.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):  # the player moved on to another range
                pass


def make_server(analyzer: Analyzer, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server for ``analyzer`` (``port=0``: a free port; see ``server.server_address``)."""
    handler = type("Handler", (_Handler,), {"analyzer": analyzer})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(analyzer: Analyzer, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted; prints the address first."""
    server = make_server(analyzer, host, port)
    address, actual = server.server_address[:2]
    print(f"dass serve: http://{address}:{actual}/  (model {analyzer.model_name}; Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        analyzer.close()

"""Tagging whole archives: many files in one resumable job, locally or on a Ray cluster.

Example::

    import dass, dass.batch
    model = dass.from_pretrained("my_dass")
    paths = dass.batch.collect_paths(["recordings/"], glob="*.flac")
    summary = dass.batch.tag(paths, model, output="tags.jsonl", workers=2, batch_size=8)
    rows = list(dass.batch.read_rows("tags.jsonl"))        # one row per file (see dass.batch.store)

- :mod:`dass.batch.collect`: folders, lists and datafiles -> paths;
- :mod:`dass.batch.pipeline`: decoding in worker processes, batches through the model, rows;
- :mod:`dass.batch.store`: the resumable JSONL / CSV / Parquet output;
- :mod:`dass.batch.job`: :func:`tag`, one job with either engine;
- :mod:`dass.batch.ray_engine`: the same job on Ray Data (``engine="ray"``);
- :mod:`dass.batch.cli`: ``dass tag`` over collections (``--output``, ``--events``, ``--ray``, ...).

Names are imported lazily, so that ``dass --help`` (which reads :mod:`dass.batch.cli`) stays fast.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "tag": "job", "Summary": "job", "TagOptions": "pipeline", "collect_paths": "collect", "read_rows": "store",
}

__all__ = ["Summary", "TagOptions", "collect_paths", "read_rows", "tag"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dass.batch' has no attribute {name!r}")

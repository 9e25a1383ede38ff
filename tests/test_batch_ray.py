"""dass.batch on Ray Data: a local 2-worker cluster gives the rows of the local engine, resumably."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from dass.batch import read_rows, tag
from dass.models.dass import DASS, DASSConfig

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "dass[ray]")')


def test_ray_local_cluster_equals_local_engine(tmp_path) -> None:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(12):
        path = tmp_path / f"{i:02d}.wav"
        sf.write(path, (0.2 * rng.standard_normal(int(16000 * (1 + i % 3 + (12 if i == 5 else 0))))).astype(np.float32),
                 16000)
        paths.append(str(path))
    (tmp_path / "03.wav").write_bytes(b"corrupt")
    torch.manual_seed(0)
    model = DASS(DASSConfig(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=4,
                            labels=["a", "b", "c", "d"])).eval()
    local = tag(paths, model, tmp_path / "local.jsonl", workers=0, batch_size=3, threads=1)
    # half the files first (as an interrupted job), then the rest on a fresh 2-worker cluster
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        first = tag(paths[:5], model, tmp_path / "ray.jsonl", engine="ray", workers=2, batch_size=3, threads=1)
        rest = tag(paths, model, tmp_path / "ray.jsonl", engine="ray", workers=2, batch_size=3, threads=1)
    finally:
        ray.shutdown()
    assert (first.tagged + first.failed, rest.skipped, rest.tagged + rest.failed) == (5, 5, 7)
    assert local.failed == 1 and first.failed + rest.failed == 1
    a, b = list(read_rows(tmp_path / "local.jsonl")), list(read_rows(tmp_path / "ray.jsonl"))
    assert [r["file"] for r in a] == [r["file"] for r in b] == paths
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k not in ("scores", "top")} == \
            {k: v for k, v in y.items() if k not in ("scores", "top")}
        if x["scores"] is not None:
            np.testing.assert_allclose(x["scores"], y["scores"], atol=1e-5, rtol=0)
            assert [t["index"] for t in x["top"]] == [t["index"] for t in y["top"]]

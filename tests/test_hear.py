"""dass.hear against the HEAR API's contract: shapes, dtypes, timestamps in ms and increasing, batch
independence, determinism, the declared sizes, for SSAMBA, SSAST and DASS checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dass.errors import AudioError, CheckpointError

torch.set_num_threads(1)
MODELS = {
    "ssamba": ("ssamba_nano", {"embed_dim": 32, "depth": 2, "fstride": 16, "tstride": 16, "input_tdim": 100}),
    "ssast": (
        "ssast_nano",
        {"embed_dim": 32, "depth": 1, "num_heads": 2, "fstride": 10, "tstride": 10, "input_tdim": 100},
    ),
    "dass": ("dass_tiny", {"dims": [8, 16, 16, 16], "depths": [1, 1, 1, 1]}),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def checkpoint(request, tmp_path_factory) -> tuple[str, Path]:
    from dass.checkpoints import save_pretrained
    from dass.models.registry import create_model

    torch.manual_seed(0)
    name, args = MODELS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    save_pretrained(create_model(name, num_classes=3, **args), folder)
    return request.param, folder


def audio(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    tone = torch.sin(2 * torch.pi * (300 + 400 * torch.rand(n, 1, generator=g)) * t)
    return (0.3 * tone + 0.05 * torch.randn(n, t.numel(), generator=g)).float()


def test_hear_contract(checkpoint) -> None:
    import dass.hear as hear

    kind, folder = checkpoint
    model = hear.load_model(str(folder))
    assert model.sample_rate == 16000
    assert isinstance(model.scene_embedding_size, int) and isinstance(model.timestamp_embedding_size, int)
    x = audio(3, 1.3)
    emb, ts = hear.get_timestamp_embeddings(x, model)
    scene = hear.get_scene_embeddings(x, model)
    n_columns = emb.shape[1]
    assert emb.shape == (3, n_columns, model.timestamp_embedding_size) and n_columns >= 2
    assert ts.shape == (3, n_columns) and scene.shape == (3, model.scene_embedding_size)
    assert emb.dtype == ts.dtype == scene.dtype == torch.float32
    assert torch.isfinite(emb).all() and torch.isfinite(scene).all()
    # timestamps in milliseconds, increasing, within the audio, the same for every clip
    assert (ts[:, 1:] > ts[:, :-1]).all() and (ts >= 0).all() and (ts <= 1300).all()
    assert torch.equal(ts[0], ts[2])
    frames = 129  # 1.3 s: (20800 - 400) // 160 + 1
    if kind == "ssamba":  # stride 16: column t is frames [16t, 16t + 16), centre 16t + 7.5
        assert n_columns == (frames - 16) // 16 + 1
        torch.testing.assert_close(ts[0], 10.0 * (16 * torch.arange(n_columns) + 7.5) + 12.5)
        assert model.timestamp_embedding_size == 8 * 32 and model.scene_embedding_size == 32
    elif kind == "ssast":  # stride 10
        assert n_columns == (frames - 16) // 10 + 1
        torch.testing.assert_close(ts[0], 10.0 * (10 * torch.arange(n_columns) + 7.5) + 12.5)
        assert model.timestamp_embedding_size == 12 * 32
    else:
        assert model.scene_embedding_size == 16 and model.timestamp_embedding_size == 4 * 16
    # batch independence and determinism
    alone = hear.get_timestamp_embeddings(x[1:2], model)[0]
    torch.testing.assert_close(alone[0], emb[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hear.get_scene_embeddings(x[2:3], model)[0], scene[2], rtol=1e-4, atol=1e-5)
    again, _ = hear.get_timestamp_embeddings(x, model)
    assert torch.equal(again, emb)
    model.batch_size = 2  # mini-batching does not change anything either
    torch.testing.assert_close(hear.get_scene_embeddings(x, model), scene, rtol=1e-4, atol=1e-5)


def test_scene_embedding_is_the_models_pooled_vector(checkpoint) -> None:
    import dass.hear as hear
    from dass.checkpoints import from_pretrained
    from dass.features import FeatureExtractor

    kind, folder = checkpoint
    model, reference = hear.load_model(str(folder)), from_pretrained(folder)
    x = audio(2, 1.0, seed=1)
    features = FeatureExtractor(max_length=None)(x)["input_values"]
    with torch.no_grad():
        if kind == "ssamba":
            want = reference.pool(reference.forward_features(features))
        elif kind == "ssast":
            want = reference.forward_features(features)
        else:
            want = reference.pool(reference.forward_features(features))
    torch.testing.assert_close(hear.get_scene_embeddings(x, model), want, rtol=1e-4, atol=1e-5)
    if kind == "ssamba":  # a timestamp embedding is the column's 8 frequency tokens, concatenated
        with torch.no_grad():
            tokens = reference.forward_features(features)[:, 1:]  # (2, 8 * T', 32), frequency-major
        t_cols = tokens.shape[1] // 8
        emb, _ = hear.get_timestamp_embeddings(x, model)
        want_col = torch.cat([tokens[:, f * t_cols + 3] for f in range(8)], dim=-1)
        torch.testing.assert_close(emb[:, 3], want_col, rtol=1e-4, atol=1e-5)


def test_hear_loads_ssl_checkpoints_and_refuses_bad_input(tmp_path: Path) -> None:
    import dass.hear as hear
    from dass.models.registry import create_model
    from dass.pretrain.checkpoint import export_authors, save_ssl
    from dass.pretrain.model import MaskedPatchModel

    torch.manual_seed(0)
    encoder = create_model("ssamba_nano", num_classes=1, embed_dim=32, depth=2, fstride=16, tstride=16, input_tdim=64)
    save_ssl(MaskedPatchModel(encoder), tmp_path / "ssl")
    pth = export_authors(tmp_path / "ssl", tmp_path / "ssl.pth")
    x = audio(2, 0.8)
    ours = hear.get_scene_embeddings(x, hear.load_model(str(tmp_path / "ssl")))
    theirs = hear.get_scene_embeddings(x, hear.load_model(str(pth)))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="needs a checkpoint path"):
        hear.load_model()
    model = hear.load_model(str(tmp_path / "ssl"))
    with pytest.raises(AudioError, match=r"\(n_sounds, n_samples\) tensor, got shape \(16000,\)"):
        hear.get_scene_embeddings(torch.zeros(16000), model)
    bad = x.clone()
    bad[0, 5] = float("nan")
    with pytest.raises(AudioError, match="NaN"):
        hear.get_scene_embeddings(bad, model)

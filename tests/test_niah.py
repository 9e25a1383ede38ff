"""Audio Needle-In-A-Haystack: needle placement, noise SNR, CSV resumption, failing models, plots."""

from __future__ import annotations

import csv
import json
import math
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from dass.errors import CheckpointError, ConfigError, DassError
from dass.features import AUDIOSET_MEAN, AUDIOSET_STD, FeatureExtractor, kaldi_fbank, normalize
from dass.niah import (CSV_COLUMNS, NiahEvalSet, load_eval_set, load_niah_model, needle_start, parse_haystacks,
                       parse_length, parse_lengths, parse_positions, place_needle, run_niah)
from dass.niah.haystack import (BabblePool, FillerBuilder, HaystackSpec, clip_seed, default_fbank_fn,
                                noise_waveform_chunks, samples_for_frames)
from dass.niah.models import HFAudioClassifier, MaxPositionsExceeded
from dass.niah.plots import make_plots, read_rows
from dass.niah.runner import ResultsCSV, classify_failure

torch.set_num_threads(1)

POSITIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
NUM_CLASSES = 3


# --------------------------------------------------------------------------------------------------
# Stand-ins: a small eval set and tiny models (B, T, F) -> (B, classes)
# --------------------------------------------------------------------------------------------------


def make_eval_set(num_clips: int = 4, seconds: float = 10.0, seed: int = 0) -> NiahEvalSet:
    """Clips whose class k is a tone at (k+1)·500 Hz over noise, so a model can find the needle."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    waveforms, targets = [], torch.zeros(num_clips, NUM_CLASSES)
    for i in range(num_clips):
        k = i % NUM_CLASSES
        wave = 0.02 * torch.randn(t.shape[0], generator=g) + 0.3 * torch.sin(2 * math.pi * 500 * (k + 1) * t)
        waveforms.append(wave * (0.5 + i / num_clips))
        targets[i, k] = 1
    return NiahEvalSet.from_waveforms(waveforms, targets)


class MeanLinear(nn.Module):
    """Mean over time of the features, then a fixed linear layer; counts the haystacks it sees."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.linear = nn.Linear(128, NUM_CLASSES)
        self.calls = 0
        self.lengths: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.lengths.append(x.shape[1])
        return self.linear(x.mean(dim=1))


class Recorder(MeanLinear):
    """Keeps every input it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return super().forward(x)


class FailsAbove(MeanLinear):
    """Raises ``error`` for inputs longer than ``max_frames`` (or for batches > 1 if ``batch_only``)."""

    def __init__(self, max_frames: int, error: Exception, batch_only: bool = False) -> None:
        super().__init__()
        self.max_frames, self.error, self.batch_only = max_frames, error, batch_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        too_big = x.shape[1] > self.max_frames and (not self.batch_only or x.shape[0] > 1)
        if too_big:
            self.calls += 1
            self.lengths.append(x.shape[1])
            raise self.error
        return super().forward(x)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------------------------------
# Needle placement
# --------------------------------------------------------------------------------------------------


def reference_start(length: int, position: float) -> int:
    """round(p · (L − 1024)) with halves rounded up, in exact decimal arithmetic."""
    value = Decimal(repr(position)) * (length - 1024) + Decimal("0.5")
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


@pytest.mark.parametrize("length", [1024, 1025, 1027, 1500, 3001, 4099])
def test_needle_placement_all_positions(length: int) -> None:
    g = torch.Generator().manual_seed(length)
    needle = torch.randn(2, 1024, 128, generator=g)
    filler = torch.randn(2, length - 1024, 128, generator=g)
    for p in POSITIONS:
        start = needle_start(length, p)
        assert start == reference_start(length, p)
        haystack = place_needle(filler, needle, p)
        assert haystack.shape == (2, length, 128)
        assert torch.equal(haystack[:, start:start + 1024], needle)  # bit-identical
        rest = torch.cat([haystack[:, :start], haystack[:, start + 1024:]], dim=1)
        assert torch.equal(rest, filler)  # the filler, in order, around the needle
    assert needle_start(length, 0.0) == 0 and needle_start(length, 1.0) == length - 1024


def test_needle_start_rounds_halves_up_and_rejects_bad_input() -> None:
    assert needle_start(1025, 0.5) == 1  # 0.5 -> 1 (Python's round() would give 0)
    assert needle_start(1027, 0.5) == 2  # 1.5 -> 2
    assert needle_start(1030, 0.25) == 2  # 1.5 -> 2
    with pytest.raises(ConfigError, match=r"needle position must be in \[0, 1\], got 1.5"):
        needle_start(2000, 1.5)
    with pytest.raises(ConfigError, match="haystack length 1000 frames is shorter than the 1024-frame needle"):
        needle_start(1000, 0.0)


def test_constant_fillers_zeros_and_silence() -> None:
    fbank_fn = default_fbank_fn()
    zeros = FillerBuilder(HaystackSpec("zeros"), fbank_fn)
    assert zeros.is_constant and torch.equal(zeros.constant(2, 5), torch.zeros(2, 5, 128))
    silence = FillerBuilder(HaystackSpec("silence"), fbank_fn).constant(1, 7)[0]
    reference = normalize(kaldi_fbank(torch.zeros(samples_for_frames(7))))  # the full computation
    assert torch.equal(silence, reference)
    expected = (math.log(float(torch.finfo(torch.float32).eps)) - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)
    assert torch.allclose(silence, torch.full((7, 128), expected), atol=1e-5)


@pytest.mark.parametrize("kind", ["zeros", "silence", "white"])
def test_runner_feeds_bit_identical_needles_at_every_position(tmp_path: Path, kind: str) -> None:
    eval_set = make_eval_set(num_clips=3)
    model = Recorder()
    length = 1700
    run_niah({"rec": model}, eval_set, [length], POSITIONS, [kind], [5.0], tmp_path, batch_size=8,
             progress=False)
    big = [x for x in model.inputs if x.shape[1] == length]
    assert len(big) == len(POSITIONS)  # 8·1024 // 1700 = 4 clips per batch: all 3 clips at once
    fillers = []
    for p, x in zip(POSITIONS, big):
        start = reference_start(length, p)
        assert x.shape == (3, length, 128)
        assert torch.equal(x[:, start:start + 1024], eval_set.needles)  # bit-identical
        fillers.append(torch.cat([x[:, :start], x[:, start + 1024:]], dim=1))
    for f in fillers[1:]:
        assert torch.equal(f, fillers[0])  # one filler per clip, reused for every position
    if kind == "white":
        assert not torch.equal(fillers[0][0], fillers[0][1])  # each clip gets its own noise


# --------------------------------------------------------------------------------------------------
# Noise haystacks: SNR, spectrum, chunking
# --------------------------------------------------------------------------------------------------


def write_babble(path: Path, seconds: float = 3.0) -> Path:
    rng = np.random.default_rng(3)
    t = np.arange(int(seconds * 16000)) / 16000
    wave = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    sf.write(path, (wave + 0.1).astype(np.float32), 16000)  # a DC offset that must be removed
    return path


def stream_from_chunks(kind: str, chunks: list[tuple[int, torch.Tensor]]) -> np.ndarray:
    """The waveform behind the frames: white/pink chunks are independent, babble chunks overlap by 240."""
    overlap = 400 - 160 if kind == "babble" else 0
    parts = [chunks[0][1]] + [w[overlap:] for _, w in chunks[1:]]
    return torch.cat(parts).double().numpy()


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("snr_db", [20.0, 10.0, 0.0, -5.0])
def test_noise_snr_within_0_1_db(tmp_path: Path, kind: str, snr_db: float) -> None:
    eval_set = make_eval_set(num_clips=2)
    needle_rms = float(eval_set.needle_rms[1])
    babble = BabblePool([str(write_babble(tmp_path / "b.wav"))]) if kind == "babble" else None
    frames = 9000  # 90 s, longer than the 3 s babble recording: it loops
    chunks = list(noise_waveform_chunks(kind, frames, needle_rms * 10 ** (-snr_db / 20), seed=7, babble=babble,
                                        chunk_frames=2500))
    assert [n for n, _ in chunks] == [2500, 2500, 2500, 1500]
    assert all(w.shape == (samples_for_frames(n),) for n, w in chunks)
    noise = stream_from_chunks(kind, chunks)
    expected_size = samples_for_frames(frames) if kind == "babble" else sum(samples_for_frames(n) for n, _ in chunks)
    assert noise.size == expected_size
    measured = 20 * np.log10(needle_rms / np.sqrt(np.mean((noise - noise.mean()) ** 2)))
    assert abs(measured - snr_db) < 0.1
    assert abs(noise.mean()) < 1e-6 * needle_rms


def test_needle_rms_is_the_mean_removed_waveform_rms() -> None:
    wave = torch.randn(160000, generator=torch.Generator().manual_seed(0)) * 0.3 + 0.25
    eval_set = NiahEvalSet.from_waveforms([wave], torch.ones(1, 1))
    w = wave.double().numpy()
    assert float(eval_set.needle_rms[0]) == pytest.approx(np.sqrt(np.mean((w - w.mean()) ** 2)), rel=1e-9)


def test_pink_noise_falls_3_db_per_octave() -> None:
    (_, wave), = noise_waveform_chunks("pink", 2000, 0.1, seed=1)
    spectrum = np.abs(np.fft.rfft(wave.double().numpy())) ** 2
    freqs = np.fft.rfftfreq(wave.shape[0], 1 / 16000)
    octave_powers = [10 * np.log10(spectrum[(freqs >= lo) & (freqs < 2 * lo)].mean())
                     for lo in 50 * 2.0 ** np.arange(7)]  # 50 Hz ... 6.4 kHz
    slope = np.polyfit(np.arange(7), octave_powers, 1)[0]
    assert -3.5 < slope < -2.5
    (_, white), = noise_waveform_chunks("white", 2000, 0.1, seed=1)
    white_spectrum = np.abs(np.fft.rfft(white.double().numpy())) ** 2
    white_powers = [10 * np.log10(white_spectrum[(freqs >= lo) & (freqs < 2 * lo)].mean())
                    for lo in 50 * 2.0 ** np.arange(7)]
    assert abs(np.polyfit(np.arange(7), white_powers, 1)[0]) < 0.5


def test_babble_filler_in_chunks_equals_fbank_of_the_whole_stream(tmp_path: Path) -> None:
    spec = parse_haystacks(f"babble:{write_babble(tmp_path / 'b.wav')}")[0]
    frames, needle_rms, snr = 2300, 0.05, 10.0
    builder = FillerBuilder(spec, default_fbank_fn(), seed=3, chunk_frames=700)  # 4 chunks
    chunked = builder.noise(frames, needle_rms, snr, clip_index=2)
    chunks = list(noise_waveform_chunks("babble", frames, needle_rms * 10 ** (-snr / 20),
                                        seed=clip_seed(3, "babble", 2),
                                        babble=builder.babble, chunk_frames=700))
    stream = torch.from_numpy(stream_from_chunks("babble", chunks)).float()
    reference = normalize(kaldi_fbank(stream))  # one fbank over the whole waveform
    assert chunked.shape == reference.shape == (frames, 128)
    assert torch.allclose(chunked, reference, atol=1e-4)
    # Looping: read() and stats() agree with a plain numpy tiling of the pool.
    pool = builder.babble.pool.double().numpy()
    tiled = np.tile(pool, 3)[1234:1234 + 2 * pool.size + 77]
    assert np.array_equal(builder.babble.read(1234, tiled.size).double().numpy(), tiled.astype(np.float32))
    mean, rms = builder.babble.stats(1234, tiled.size)
    assert mean == pytest.approx(tiled.mean(), rel=1e-9)
    assert rms == pytest.approx(tiled.std(), rel=1e-9)


# --------------------------------------------------------------------------------------------------
# Option parsing
# --------------------------------------------------------------------------------------------------


def test_length_parsing() -> None:
    expected = {"10s": 1024, "10.24s": 1024, "30s": 3000, "50s": 5000, "5min": 30000, "1h": 360000,
                "2.5h": 900000, "3000f": 3000, "3000": 3000, "1024f": 1024, " 0.5min ": 3000, "1.5H": 540000}
    for text, frames in expected.items():
        assert parse_length(text) == frames, text
    assert parse_lengths("5min,10s,30s,3000f") == [1024, 3000, 30000]
    with pytest.raises(ConfigError, match=r"length '5s' is shorter than the 10 s needle"):
        parse_length("5s")
    with pytest.raises(ConfigError, match=r"length 1000f is shorter than the needle \(1024 frames = 10 s\)"):
        parse_length("1000f")
    with pytest.raises(ConfigError, match=r"cannot read length '10 sec'"):
        parse_length("10 sec")
    with pytest.raises(ConfigError, match="a frame count must be a whole number"):
        parse_length("3000.5f")


def test_position_and_haystack_parsing(tmp_path: Path) -> None:
    assert parse_positions("0,0.25,0.5,0.75,1") == list(POSITIONS)
    with pytest.raises(ConfigError, match=r"needle position must be in \[0, 1\], got 1.5"):
        parse_positions("0,1.5")
    assert [h.name for h in parse_haystacks(["zeros,white", "pink"])] == ["zeros", "white", "pink"]
    babble = write_babble(tmp_path / "x.flac")
    spec = parse_haystacks(f"silence,babble:{tmp_path}")[1]
    assert spec.kind == "babble" and spec.files == (str(babble),) and spec.uses_snr
    with pytest.raises(ConfigError, match="haystack 'babble' needs recordings: babble:PATH"):
        parse_haystacks("babble")
    assert parse_haystacks("babble", default_babble=tmp_path)[0].files == (str(babble),)
    with pytest.raises(ConfigError, match="haystack 'babble' needs recordings: babble:PATH"):
        parse_haystacks("babble", default_babble=tmp_path / "not_there")
    with pytest.raises(ConfigError, match=r"unknown haystack 'brown'; choose from zeros, silence, white, pink, babble"):
        parse_haystacks("zeros,brown")
    with pytest.raises(ConfigError, match="haystack 'white' given twice"):
        parse_haystacks(["white", "white"])
    with pytest.raises(ConfigError, match="babble haystack: no audio files found at"):
        parse_haystacks(f"babble:{tmp_path}/nothing*.wav")


# --------------------------------------------------------------------------------------------------
# The CSV: columns, resumption, torn lines
# --------------------------------------------------------------------------------------------------


def test_csv_rows_and_resumption(tmp_path: Path) -> None:
    eval_set = make_eval_set(num_clips=4)
    model = MeanLinear()
    args = dict(positions=[0.0, 1.0], haystacks=["zeros", "white"], snrs=[10.0, 0.0], out_dir=tmp_path,
                batch_size=4, progress=False)
    path = run_niah({"m": model}, eval_set, ["10s", "3000f"], **args)
    rows = read_csv(path)
    assert tuple(rows[0]) == CSV_COLUMNS
    # (zeros + white at 2 SNRs) × 2 lengths × 2 positions
    assert len(rows) == 3 * 2 * 2 and all(r["status"] == "ok" for r in rows)
    assert {(r["haystack"], r["snr_db"]) for r in rows} == {("zeros", ""), ("white", "10"), ("white", "0")}
    # calls: 1 baseline batch (4 clips at 10 s) + 3 (haystack, snr) × 2 positions × 4 batches
    # (4 · 1024 // 3000 = 1 clip per batch at 3000 frames)
    assert model.calls == 1 + 3 * 2 * 4
    base = [r for r in rows if r["length_frames"] == "1024"]
    assert len({r["mAP"] for r in base}) == 1 and all(float(r["rel_drop"]) == 0.0 for r in base)
    for r in rows:
        assert float(r["length_s"]) == int(r["length_frames"]) / 100 and r["clips"] == "4"
        expected_drop = (float(base[0]["mAP"]) - float(r["mAP"])) / float(base[0]["mAP"])
        assert float(r["rel_drop"]) == pytest.approx(expected_drop, abs=1e-9)
        assert float(r["seconds"]) > 0 and 0 <= float(r["mAUC"]) <= 1
    before = path.read_text()

    model.calls = 0  # a second run: everything is there, nothing is computed
    run_niah({"m": model}, eval_set, ["10s", "3000f"], **args)
    assert model.calls == 0 and path.read_text() == before

    # A torn last line (a crash while writing) is dropped, and only the missing rows are computed.
    lines = before.splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:20])
    run_niah({"m": model}, eval_set, ["10s", "3000f", "2000f"], **args)
    new_rows = read_csv(path)
    assert len(new_rows) == len(rows) + 3 * 2
    assert new_rows[:len(rows) - 1] == rows[:-1]
    redone = new_rows[-1]  # lengths are run in increasing order: 2000 frames first, then the torn row
    assert {k: v for k, v in redone.items() if k not in ("seconds", "peak_mem_mb")} == \
        {k: v for k, v in rows[-1].items() if k not in ("seconds", "peak_mem_mb")}  # same noise, same score
    # baseline read from the CSV, not recomputed: the torn row (4 batches of 1 clip at 3000 frames)
    # + 3 (haystack, snr) × 2 positions × 2 batches of 2 clips at 2000 frames
    assert model.calls == 4 + 3 * 2 * 2
    assert all(r["rel_drop"] != "" for r in new_rows)

    with pytest.raises(ConfigError, match=r"holds results of another run \(clips: 4, this run: 2\)"):
        run_niah({"m": model}, make_eval_set(num_clips=2), ["10s"], **args)
    with pytest.raises(ConfigError, match=r"holds results of another run \(eval_set_sha256: "):
        run_niah({"m": model}, make_eval_set(num_clips=4, seed=1), ["10s"], **args)
    with pytest.raises(ConfigError, match=r"holds results of another run \(seed: 0, this run: 5\)"):
        run_niah({"m": model}, eval_set, ["10s"], **args, seed=5)
    with pytest.raises(ConfigError, match=r"holds results on 4 clips, this run has 2"):
        ResultsCSV(path, clips=2)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="not a NIAH results file"):
        ResultsCSV(tmp_path / "other.csv", clips=4)


def test_scores_do_not_depend_on_batching(tmp_path: Path) -> None:
    """Batched haystacks (several clips per forward) give the rows of one-clip-at-a-time runs."""
    eval_set = make_eval_set(num_clips=5)
    rows = {}
    for batch_size in (1, 8):
        path = run_niah({"m": MeanLinear()}, eval_set, ["10s", "1300f"], [0.0, 0.5], ["silence", "pink"], [5.0],
                        tmp_path / str(batch_size), batch_size=batch_size, progress=False)
        rows[batch_size] = [(r["haystack"], r["length_frames"], r["position"], float(r["mAP"]), float(r["mAUC"]))
                            for r in read_csv(path)]
    assert len(rows[1]) == 2 * 2 * 2
    for one, batched in zip(rows[1], rows[8]):
        assert one[:3] == batched[:3] and one[3:] == pytest.approx(batched[3:], abs=1e-12)


class InterruptedAfter(MeanLinear):
    """Stops the whole run (like Ctrl-C) on its ``calls_left``-th call at ``length`` frames."""

    def __init__(self, length: int, calls_left: int) -> None:
        super().__init__()
        self.length, self.calls_left = length, calls_left

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.length:
            self.calls_left -= 1
            if self.calls_left == 0:
                raise KeyboardInterrupt
        return super().forward(x)


def test_interrupted_group_resumes_from_its_saved_batches(tmp_path: Path) -> None:
    eval_set = make_eval_set(num_clips=5)
    args = dict(positions=[0.0, 1.0], haystacks=["pink"], snrs=[0.0], batch_size=2, progress=False,
                checkpoint_every_s=0.0)
    reference = read_csv(run_niah({"m": MeanLinear()}, eval_set, ["10s", "2000f"], out_dir=tmp_path / "ref", **args))
    # 2000 frames: 1 clip per batch, 2 positions -> 10 calls; stop on the 7th (clips 0-2 saved)
    interrupted = InterruptedAfter(2000, calls_left=7)
    with pytest.raises(KeyboardInterrupt):
        run_niah({"m": interrupted}, eval_set, ["10s", "2000f"], out_dir=tmp_path / "run", **args)
    assert [r["length_frames"] for r in read_csv(tmp_path / "run" / "niah.csv")] == ["1024", "1024"]
    assert len(list((tmp_path / "run" / ".niah_partial").glob("*.npz"))) == 1
    resumed = MeanLinear()
    rows = read_csv(run_niah({"m": resumed}, eval_set, ["10s", "2000f"], out_dir=tmp_path / "run", **args))
    assert resumed.lengths == [2000] * 4  # clips 3 and 4 at both positions
    drop = ("seconds", "peak_mem_mb")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows] == \
        [{k: v for k, v in r.items() if k not in drop} for r in reference]
    assert list((tmp_path / "run" / ".niah_partial").glob("*.npz")) == []


# --------------------------------------------------------------------------------------------------
# Models that fail a length
# --------------------------------------------------------------------------------------------------


def test_failing_models_get_status_rows_not_a_crash(tmp_path: Path) -> None:
    eval_set = make_eval_set(num_clips=2)
    oom = FailsAbove(2000, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB"))
    positions = FailsAbove(1024, MaxPositionsExceeded("max positions exceeded: takes exactly 1024 frames"))
    broken = FailsAbove(2000, RuntimeError("mat1 and mat2 shapes cannot be multiplied\nmore text"))
    batch_oom = FailsAbove(1024, RuntimeError("DefaultCPUAllocator: can't allocate memory"), batch_only=True)
    fine = MeanLinear()
    dass_error = FailsAbove(1500, ConfigError("features of shape (1, 3000, 128) not accepted"))
    models = {"oom": oom, "pos": positions, "broken": broken, "batch_oom": batch_oom, "fine": fine,
              "dass_error": dass_error}
    path = run_niah(models, eval_set, ["10s", "1500f", "3000f", "5000f"], [0.0, 1.0], ["zeros", "white"], [0.0],
                    tmp_path, batch_size=4, progress=False)
    status = {(r["model"], r["haystack"], int(r["length_frames"])): r["status"] for r in read_csv(path)}
    assert len(status) == 6 * 2 * 4
    assert status["dass_error", "zeros", 3000] == "error: ConfigError: features of shape (1, 3000, 128) not accepted"
    for haystack in ("zeros", "white"):
        assert status["oom", haystack, 1500] == "ok"
        assert status["pos", haystack, 1024] == "ok"
        assert status["broken", haystack, 1500] == "ok"
        assert status["broken", haystack, 3000] == ("error: RuntimeError: mat1 and mat2 shapes cannot be "
                                                    "multiplied")
        for length in (1024, 1500, 3000, 5000):
            assert status["fine", haystack, length] == "ok"
            assert status["batch_oom", haystack, length] == "ok"  # retried one clip at a time
    assert status["oom", "zeros", 3000] == "oom"
    assert status["pos", "zeros", 1500] == "max positions exceeded"
    # not run again once out of memory / out of positions: at longer lengths and on other haystacks
    assert status["oom", "white", 3000] == status["oom", "zeros", 5000] == "oom (not run: failed at 3000 frames)"
    assert status["pos", "white", 5000] == "max positions exceeded (not run: failed at 1500 frames)"
    assert oom.lengths.count(3000) == 1 and max(oom.lengths) == 3000
    assert positions.lengths.count(1500) == 1 and max(positions.lengths) == 1500
    assert status["broken", "white", 5000].startswith("error: RuntimeError")  # other errors: tried each time
    failed_rows = [r for r in read_csv(path) if r["status"] != "ok"]
    assert all(r["mAP"] == "" and r["rel_drop"] == "" for r in failed_rows)

    # Resumed with a longer length: the failures are read back, the failed models are not run again.
    oom.lengths.clear(), positions.lengths.clear(), fine.lengths.clear()
    run_niah(models, eval_set, ["10s", "1500f", "3000f", "5000f", "8000f"], [0.0, 1.0], ["zeros", "white"],
             [0.0], tmp_path, batch_size=4, progress=False)
    assert oom.lengths == [] and positions.lengths == [] and set(fine.lengths) == {8000}
    status = {(r["model"], r["haystack"], int(r["length_frames"])): r["status"] for r in read_csv(path)}
    assert status["oom", "white", 8000] == "oom (not run: failed at 3000 frames)"
    assert status["pos", "zeros", 8000] == "max positions exceeded (not run: failed at 1500 frames)"


def test_classify_failure_messages() -> None:
    assert classify_failure(torch.OutOfMemoryError("CUDA out of memory")) == "oom"
    assert classify_failure(MemoryError()) == "oom"
    assert classify_failure(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                         "can't allocate memory: you tried to allocate 1 bytes")) == "oom"
    assert classify_failure(ValueError("sequence exceeds the maximum positions")) == "max positions exceeded"
    assert classify_failure(KeyError("x")) == "error: KeyError: 'x'"


def test_wrong_class_count_is_a_clear_error(tmp_path: Path) -> None:
    class FiveClasses(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=1)[:, :5]

    with pytest.raises(ConfigError, match=r"model 'five' returned logits of shape \(2, 5\), expected \(2, 3\)"):
        run_niah({"five": FiveClasses()}, make_eval_set(2), ["10s"], [0.0], ["zeros"], [], tmp_path, progress=False)


# --------------------------------------------------------------------------------------------------
# Loading models: Hugging Face transformers folders, registered names + weights
# --------------------------------------------------------------------------------------------------


def tiny_hf_ast(tmp_path: Path) -> tuple[Path, nn.Module]:
    from transformers import ASTConfig, ASTForAudioClassification

    torch.manual_seed(0)
    config = ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       max_length=1024, num_mel_bins=128, num_labels=NUM_CLASSES)
    model = ASTForAudioClassification(config).eval()
    model.save_pretrained(tmp_path / "hf_ast")
    return tmp_path / "hf_ast", model


def test_hf_model_wrapped_and_limited_to_its_positions(tmp_path: Path) -> None:
    folder, hf_model = tiny_hf_ast(tmp_path)
    x = make_eval_set(2).needles
    for spec in (str(folder), f"hf:{folder}", f"teacher=hf:{folder}"):
        label, model = load_niah_model(spec)
        assert isinstance(model, HFAudioClassifier)
        assert label == ("teacher" if spec.startswith("teacher") else "hf_ast")
        with torch.no_grad():
            assert torch.allclose(model(x), hf_model(input_values=x).logits, atol=1e-6)
    with pytest.raises(MaxPositionsExceeded, match=r"max positions exceeded: the model takes exactly 1024 frames \(positional embeddings\), got 1500"):
        model(torch.zeros(1, 1500, 128))
    label, converted = load_niah_model(f"hf-ast:{folder}")  # dass's AST: interpolates its positions
    assert label == "hf_ast"
    with torch.no_grad():
        assert torch.allclose(converted(x), hf_model(input_values=x).logits, atol=1e-5)
        assert converted(torch.zeros(1, 1500, 128)).shape == (1, NUM_CLASSES)
    with pytest.raises(CheckpointError, match="cannot load with AutoModelForAudioClassification"):
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "config.json").write_text(json.dumps({"model_type": "bert"}))
        load_niah_model(str(tmp_path / "junk"))


def test_registered_name_with_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from dass.models.registry import create_model

    torch.manual_seed(0)
    reference = create_model("ast_tiny", num_classes=NUM_CLASSES).eval()
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    label, model = load_niah_model(f"ast_tiny@{tmp_path / 'w.safetensors'}")
    assert label == "ast_tiny" and not model.training
    x = torch.randn(1, 1024, 128)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    with pytest.raises(CheckpointError, match="does not fit model 'dass_tiny'"):
        load_niah_model(f"dass_tiny@{tmp_path / 'w.safetensors'}")
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_niah_model(f"ast_tiny@{tmp_path / 'missing.safetensors'}")
    # our checkpoint folder (dass.checkpoints.from_pretrained), labelled by its folder name
    from dass.checkpoints import save_pretrained

    save_pretrained(reference, tmp_path / "teacher")
    label, model = load_niah_model(str(tmp_path / "teacher"))
    assert label == "teacher"
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    label, model = load_niah_model("dass_tiny", num_classes=NUM_CLASSES)  # random weights, sized head
    assert label == "dass_tiny" and model.config.num_classes == NUM_CLASSES


# --------------------------------------------------------------------------------------------------
# Eval set from an AST JSON datafile; the CLI end to end
# --------------------------------------------------------------------------------------------------


def write_datafile(tmp_path: Path, num_clips: int = 3) -> Path:
    from dass.data.labels import LabelInfo, write_class_labels_csv

    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    labels = [LabelInfo(0, "/m/a", "A"), LabelInfo(1, "/m/b", "B"), LabelInfo(2, "/m/c", "C")]
    write_class_labels_csv(corpus / "class_labels_indices.csv", labels)
    rng = np.random.default_rng(0)
    entries = []
    for i in range(num_clips):
        sf.write(corpus / "audio" / f"{i}.wav", (0.1 * (i + 1) * rng.standard_normal(160000)).astype(np.float32), 16000)
        entries.append({"wav": f"audio/{i}.wav", "labels": ["/m/a", "/m/b,/m/c", "/m/c"][i % 3]})
    (corpus / "eval.json").write_text(json.dumps({"data": entries}))
    return corpus / "eval.json"


def test_load_eval_set_from_datafile(tmp_path: Path) -> None:
    datafile = write_datafile(tmp_path)
    eval_set = load_eval_set(datafile, max_clips=2)
    assert len(eval_set) == 2 and eval_set.needles.shape == (2, 1024, 128)
    assert eval_set.targets.tolist() == [[1, 0, 0], [0, 1, 1]]
    wave = sf.read(datafile.parent / "audio" / "1.wav", dtype="float32")[0]
    expected = FeatureExtractor()(torch.from_numpy(wave))["input_values"][0]
    assert torch.equal(eval_set.needles[1], expected)
    w = wave.astype(np.float64)
    assert float(eval_set.needle_rms[1]) == pytest.approx(np.sqrt(np.mean((w - w.mean()) ** 2)), rel=1e-6)
    bad = json.loads(datafile.read_text())
    bad["data"][0]["labels"] = "/m/zzz"
    (datafile.parent / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DassError, match=r"bad.json: entry 0 \(audio/0.wav\): unknown label '/m/zzz'"):
        load_eval_set(datafile.parent / "bad.json")
    with pytest.raises(ConfigError, match="missing.json: no class_labels_indices.csv beside it"):
        load_eval_set(tmp_path / "missing.json")
    with pytest.raises(DassError, match="missing.json: no such datafile"):
        load_eval_set(datafile.parent / "missing.json")


def test_cli_niah_and_niah_plot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dass.cli import main

    datafile = write_datafile(tmp_path)
    (datafile.parent / "haystacks" / "babble").mkdir(parents=True)  # as `dass synth --haystacks` writes it
    write_babble(datafile.parent / "haystacks" / "babble" / "babble_00.flac")
    folder, _ = tiny_hf_ast(tmp_path)
    out = tmp_path / "niah"
    argv = ["niah", "--model", f"ast=hf:{folder}", "--data", str(datafile), "--lengths", "10s,15s",
            "--positions", "0,1", "--haystack", "zeros", "--haystack", "white,babble", "--snr", "10",
            "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    rows = read_csv(out / "niah.csv")
    not_run = "max positions exceeded (not run: failed at 1500 frames)"
    assert [(r["haystack"], r["length_frames"], r["status"]) for r in rows] == [
        ("zeros", "1024", "ok"), ("zeros", "1024", "ok"), ("white", "1024", "ok"), ("white", "1024", "ok"),
        ("babble", "1024", "ok"), ("babble", "1024", "ok"),
        ("zeros", "1500", "max positions exceeded"), ("zeros", "1500", "max positions exceeded"),
        ("white", "1500", not_run), ("white", "1500", not_run), ("babble", "1500", not_run),
        ("babble", "1500", not_run)]
    assert (out / "niah_length.png").is_file() and (out / "summary.md").is_file()
    assert main(["niah", "--model", "nonexistent_model_xyz", "--data", str(datafile), "--out", str(out)]) == 1
    assert "nonexistent_model_xyz" in capsys.readouterr().err
    assert main(["niah-plot", str(tmp_path / "empty")]) == 1
    assert "no NIAH results file" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------


def write_results_csv(path: Path, with_noise: bool = True) -> None:
    rows = []
    for model, base in (("dass", 0.50), ("ast", 0.40)):
        for haystack, snrs in (("zeros", [""]), ("white", ["20", "0"]) if with_noise else (None, [])):
            if haystack is None:
                continue
            for snr in snrs:
                for length in (1024, 3000, 30000):
                    for p in (0.0, 0.5, 1.0):
                        failed = model == "ast" and length == 30000
                        drop = 0.0 if length == 1024 else (0.02 if model == "dass" else 0.6) * (1 + p) * (1 + (snr == "0"))
                        m_ap = base * (1 - drop)
                        rows.append(dict(model=model, haystack=haystack, snr_db=snr, length_frames=length,
                                         length_s=length / 100, position=p, clips=10,
                                         mAP="" if failed else m_ap, mAUC="" if failed else 0.9,
                                         rel_drop="" if failed else drop, seconds=1.0, peak_mem_mb=100,
                                         status="oom" if failed else "ok"))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def test_plots_from_a_small_csv(tmp_path: Path) -> None:
    write_results_csv(tmp_path / "niah.csv")
    written = make_plots(tmp_path)
    assert [p.name for p in written] == ["niah_length.png", "niah_position.png", "niah_snr.png",
                                         "niah_noise_length.png", "summary.md"]
    for p in written[:-1]:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    summary = (tmp_path / "summary.md").read_text()
    # dass on zeros at 30 s: mean over positions of 0.5 · (1 − 0.02 · (1 + p)) for p in 0, 0.5, 1
    assert "| dass | 0.5000 | 0.4850 (3.0% drop) | 0.4850 (3.0% drop) |" in summary
    assert "| ast | 0.4000 | 0.0400 (90.0% drop) | oom |" in summary
    assert "## white, SNR 0 dB" in summary
    assert len(read_rows(tmp_path / "niah.csv")) == 2 * 3 * 3 * 3


def test_plots_skip_figures_without_data(tmp_path: Path) -> None:
    write_results_csv(tmp_path / "niah.csv", with_noise=False)
    written = make_plots(tmp_path)
    assert [p.name for p in written] == ["niah_length.png", "niah_position.png", "summary.md"]
    assert not (tmp_path / "niah_snr.png").exists()


def test_dass_models_run_through_the_fast_engine_with_the_same_logits() -> None:
    """The runner's forward for DASS on CPU (dass.inference.predict: tiled engine) equals model.forward."""
    import dass
    from dass.niah.runner import _forward

    torch.manual_seed(0)
    model = dass.create_model("dass_tiny", num_classes=7, dims=(8, 16, 16, 32), depths=(1, 1, 1, 1)).eval()
    x = torch.randn(2, 1500, 128)
    with torch.no_grad():
        expected = model(x)
    got = _forward(model, x)
    assert got.shape == (2, 7)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

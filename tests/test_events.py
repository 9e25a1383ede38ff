"""dass.events: event detection on hand-made frame scores, the loop reference, and each export format
parsed back by an independent reader (pandas; the Audacity and Raven column conventions)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dass.errors import ConfigError
from dass.events import (
    RAVEN_COLUMNS,
    Event,
    EventParams,
    detect_events,
    detect_events_reference,
    format_events_text,
    median_filter,
    write_events,
)

STEP = 0.32


def frames(n: int) -> np.ndarray:
    """Times of ``n`` frames of 0.32 s: ``(n, 2)``."""
    start = np.arange(n) * STEP
    return np.stack([start, start + STEP], axis=1)


def one_class(values, **params) -> list[tuple[float, float]]:
    scores = np.asarray(values, dtype=float)[:, None]
    base = {"median_frames": 1, "min_duration_s": 0.0, "min_gap_s": 0.0}
    events = detect_events(frames(len(values)), scores, ["x"], EventParams(**{**base, **params}))
    reference = detect_events_reference(frames(len(values)), scores, ["x"], EventParams(**{**base, **params}))
    assert events == reference
    return [(round(e.onset_s, 6), round(e.offset_s, 6)) for e in events]


def test_hysteresis_keeps_runs_above_off_that_reach_on() -> None:
    #          0    1     2    3    4    5     6    7    8
    values = [0.1, 0.35, 0.6, 0.4, 0.2, 0.45, 0.1, 0.5, 0.3]
    # frames 1-3: >= 0.3 and reach 0.6 -> one event; frame 5 reaches only 0.45 -> none; frames 7-8: 0.5 then 0.3
    assert one_class(values, on_threshold=0.5, off_threshold=0.3) == [(0.32, 1.28), (2.24, 2.88)]
    # without hysteresis (off = on) only the frames >= 0.5 remain
    assert one_class(values, on_threshold=0.5, off_threshold=0.5) == [(0.64, 0.96), (2.24, 2.56)]


def test_median_filter_removes_a_one_frame_spike_keeps_a_two_frame_event() -> None:
    spike = [0, 0, 0.9, 0, 0, 0, 0.9, 0.9, 0, 0]
    assert one_class(spike, median_frames=1) == [(0.64, 0.96), (1.92, 2.56)]
    assert one_class(spike, median_frames=3) == [(1.92, 2.56)]  # medians: the lone spike -> 0, the pair stays
    np.testing.assert_allclose(median_filter(np.array([[1.0], [0], [0], [5], [5]]), 3)[:, 0], [1, 0, 0, 5, 5])


def test_min_duration_and_min_gap() -> None:
    values = [0.9, 0, 0.9, 0.9, 0, 0, 0, 0.9, 0.9, 0.9]  # events of 1, 2 and 3 frames, gaps of 1 and 3 frames
    assert one_class(values) == [(0.0, 0.32), (0.64, 1.28), (2.24, 3.2)]
    assert one_class(values, min_duration_s=0.5) == [(0.64, 1.28), (2.24, 3.2)]  # 0.32 s < 0.5 s dropped
    assert one_class(values, min_gap_s=0.5) == [(0.0, 1.28), (2.24, 3.2)]  # the 0.32 s gap is bridged
    # gaps are bridged first, then durations checked: the joined 1.28 s event survives min_duration 1.0
    assert one_class(values, min_gap_s=0.5, min_duration_s=1.0) == [(0.0, 1.28)]


def test_per_class_parameters_and_labels() -> None:
    scores = np.array([[0.4, 0.4], [0.45, 0.45], [0.1, 0.1]])
    base = {"median_frames": 1, "min_duration_s": 0.0, "min_gap_s": 0.0, "off_threshold": 0.3}
    events = detect_events(frames(3), scores, ["Dog", "Siren"], EventParams(on_threshold={"*": 0.5, "Siren": 0.42},
                                                                            **base))
    assert [(e.label, e.class_index, e.onset_s, e.offset_s, e.peak) for e in events] == [("Siren", 1, 0.0, 0.64, 0.45)]
    by_sequence = detect_events(frames(3), scores, None, EventParams(on_threshold=[0.44, 0.5], **base))
    assert [(e.label, e.class_index) for e in by_sequence] == [("class_0", 0)]
    with pytest.raises(ConfigError, match="unknown class 'Cat'"):
        detect_events(frames(3), scores, ["Dog", "Siren"], EventParams(on_threshold={"Cat": 0.1}))
    with pytest.raises(ConfigError, match="off_threshold must be <= on_threshold"):
        detect_events(frames(3), scores, None, EventParams(on_threshold=0.3, off_threshold=0.5))
    with pytest.raises(ConfigError, match="odd"):
        detect_events(frames(3), scores, None, EventParams(median_frames=2))
    with pytest.raises(ConfigError, match="NaN"):
        detect_events(frames(3), scores * np.nan, None)
    with pytest.raises(ConfigError, match="2 values for 3 classes"):
        detect_events(frames(3), np.zeros((3, 3)), None, EventParams(on_threshold=[0.5, 0.5]))


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_equals_the_loop_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, classes = int(rng.integers(1, 90)), int(rng.integers(1, 7))
    # smooth-ish random scores so that events of many lengths occur
    scores = np.clip(np.cumsum(rng.normal(0, 0.15, (n, classes)), axis=0) % 1.0, 0, 1)
    on = rng.uniform(0.4, 0.9, classes)
    params = EventParams(on_threshold=on, off_threshold=on * rng.uniform(0.3, 1.0, classes),
                         median_frames=rng.choice([1, 3, 5, 7], classes), min_duration_s=rng.uniform(0, 1.5, classes),
                         min_gap_s=rng.uniform(0, 1.5, classes))
    times = frames(n)
    times[-1, 1] = times[-1, 0] + 0.1  # a short last frame, as at the end of a file
    fast = detect_events(times, scores, None, params, file="f.wav")
    slow = detect_events_reference(times, scores, None, params, file="f.wav")
    assert fast == slow
    assert all(e.offset_s > e.onset_s and e.file == "f.wav" for e in fast)


EVENTS = [Event(0.32, 1.6, "Siren", 4, 0.91234, "a/x.wav"), Event(2.24, 3.52, "Dog bark", 1, 0.7, "a/x.wav"),
          Event(5.0, 5.96, "Speech, male", 0, 0.55, "b.flac")]


def test_csv_and_jsonl_read_back_with_pandas(tmp_path) -> None:
    frame = pd.read_csv(write_events(tmp_path / "e.events.csv", EVENTS))
    assert list(frame.columns) == ["file", "onset_s", "offset_s", "label", "class_index", "peak"]
    assert frame["label"].tolist() == ["Siren", "Dog bark", "Speech, male"]  # the comma is quoted
    np.testing.assert_allclose(frame["onset_s"], [0.32, 2.24, 5.0])
    np.testing.assert_allclose(frame["offset_s"], [1.6, 3.52, 5.96])
    np.testing.assert_allclose(frame["peak"], [0.91234, 0.7, 0.55])
    lines = pd.read_json(write_events(tmp_path / "e.events.jsonl", EVENTS), lines=True)
    assert lines["file"].tolist() == ["a/x.wav", "a/x.wav", "b.flac"] and lines["class_index"].tolist() == [4, 1, 0]


def test_dcase_tsv(tmp_path) -> None:
    """The DCASE / sed_eval event list: tab-separated, header filename onset offset event_label."""
    path = write_events(tmp_path / "e.events.tsv", EVENTS)
    frame = pd.read_csv(path, sep="\t")
    assert list(frame.columns) == ["filename", "onset", "offset", "event_label"]
    assert frame["event_label"].tolist() == ["Siren", "Dog bark", "Speech, male"]
    np.testing.assert_allclose(frame[["onset", "offset"]].to_numpy(), [[0.32, 1.6], [2.24, 3.52], [5.0, 5.96]])
    single = pd.read_csv(write_events(tmp_path / "one.tsv", [Event(1.0, 2.5, "Siren", 0, 0.9)], "tsv"), sep="\t")
    assert list(single.columns) == ["onset", "offset", "event_label"]  # no file: no filename column
    with pytest.raises(ConfigError, match="tab or newline"):
        write_events(tmp_path / "bad.tsv", [Event(1.0, 2.0, "a\tb", 0, 0.9)], "tsv")


def test_audacity_label_track(tmp_path) -> None:
    """Audacity's label format: start<TAB>end<TAB>label per line, seconds, no header."""
    path = write_events(tmp_path / "x.labels.txt", EVENTS)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    parsed = [line.split("\t") for line in lines]
    assert all(len(fields) == 3 for fields in parsed)
    assert [(float(a), float(b), label) for a, b, label in parsed] == [
        (0.32, 1.6, "Siren"), (2.24, 3.52, "Dog bark"), (5.0, 5.96, "Speech, male")]


def test_raven_selection_table(tmp_path) -> None:
    path = write_events(tmp_path / "x.selections.txt", EVENTS)
    frame = pd.read_csv(path, sep="\t")
    assert tuple(frame.columns) == RAVEN_COLUMNS
    assert frame["Selection"].tolist() == [1, 2, 3]
    assert set(frame["View"]) == {"Spectrogram 1"} and set(frame["Channel"]) == {1}
    np.testing.assert_allclose(frame["Begin Time (s)"], [0.32, 2.24, 5.0])
    np.testing.assert_allclose(frame["End Time (s)"], [1.6, 3.52, 5.96])
    assert set(frame["Low Freq (Hz)"]) == {0.0} and set(frame["High Freq (Hz)"]) == {8000.0}
    assert frame["Annotation"].tolist() == ["Siren", "Dog bark", "Speech, male"]


def test_format_from_name_and_text_listing(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot tell the event format"):
        write_events(tmp_path / "x.dat", EVENTS)
    rows = [json.loads(line) for line in write_events(tmp_path / "a.jsonl", EVENTS).read_text().splitlines()]
    assert rows[0] == {"file": "a/x.wav", "onset_s": 0.32, "offset_s": 1.6, "label": "Siren", "class_index": 4,
                       "peak": 0.91234}
    text = format_events_text(EVENTS[:2])
    assert text.splitlines() == ["  0.32-1.60 s  (  1.28 s)  0.912  Siren", "  2.24-3.52 s  (  1.28 s)  0.700  Dog bark"]
    assert format_events_text([]) == "  (no events)"

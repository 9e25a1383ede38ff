"""AudioSet class labels: the ontology subset used by ``dass synth`` and the ``class_labels_indices.csv`` format.

AudioSet ships its 527 classes as ``class_labels_indices.csv``::

    index,mid,display_name
    0,/m/09x0r,"Speech"
    1,/m/05zppz,"Male speech, man speaking"

where ``index`` is the model's output unit, ``mid`` the ontology id (``/m/...``, ``/t/...`` or
``/g/...``) and ``display_name`` the human-readable name. :func:`read_class_labels_csv` reads any file in
that format (AudioSet's own, or the one ``dass synth`` writes) and :func:`write_class_labels_csv` writes it.

:data:`SYNTH_CLASSES` is the subset of the real AudioSet ontology that the synthetic corpus uses, with the
exact AudioSet ids, display names and index in AudioSet's 527-class list (so a model trained on
AudioSet, e.g. an AST teacher, can be mapped onto the corpus' classes).
"""

from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DassError

CSV_HEADER = ("index", "mid", "display_name")


@dataclass(frozen=True)
class LabelInfo:
    """One row of a ``class_labels_indices.csv``: output index, ontology id, display name."""

    index: int
    mid: str
    display_name: str


@dataclass(frozen=True)
class AudioSetClass:
    """An AudioSet class: ontology id, display name and index in AudioSet's 527-class list."""

    mid: str
    display_name: str
    audioset_index: int


# The classes the synthetic corpus can produce, in the order their corpus indices are assigned
# (a corpus built from fewer sources keeps this order, minus the classes it cannot produce).
# Ids, names and indices are AudioSet's (class_labels_indices.csv of the 527-class release).
SYNTH_CLASSES: tuple[AudioSetClass, ...] = (
    # Human voice
    AudioSetClass("/m/09x0r", "Speech", 0),
    AudioSetClass("/m/05zppz", "Male speech, man speaking", 1),
    AudioSetClass("/m/02zsn", "Female speech, woman speaking", 2),
    AudioSetClass("/m/07qfr4h", "Hubbub, speech noise, speech babble", 70),
    AudioSetClass("/m/0lyf6", "Breathing", 41),
    AudioSetClass("/m/028ght", "Applause", 67),
    # Music: parents
    AudioSetClass("/m/04rlf", "Music", 137),
    AudioSetClass("/m/04szw", "Musical instrument", 138),
    AudioSetClass("/m/0fx80y", "Plucked string instrument", 139),
    AudioSetClass("/m/0342h", "Guitar", 140),
    AudioSetClass("/m/05148p4", "Keyboard (musical)", 152),
    AudioSetClass("/m/0l14md", "Percussion", 161),
    AudioSetClass("/m/01kcd", "Brass instrument", 185),
    AudioSetClass("/m/0l14_3", "Bowed string instrument", 189),
    AudioSetClass("/m/085jw", "Wind instrument, woodwind instrument", 195),
    # Music: instruments
    AudioSetClass("/m/05r5c", "Piano", 153),
    AudioSetClass("/m/013y1f", "Organ", 155),
    AudioSetClass("/m/0l14qv", "Synthesizer", 158),
    AudioSetClass("/m/042v_gx", "Acoustic guitar", 143),
    AudioSetClass("/m/02sgy", "Electric guitar", 141),
    AudioSetClass("/m/018vs", "Bass guitar", 142),
    AudioSetClass("/m/018j2", "Banjo", 147),
    AudioSetClass("/m/0jtg0", "Sitar", 148),
    AudioSetClass("/m/03m5k", "Harp", 199),
    AudioSetClass("/m/07y_7", "Violin, fiddle", 191),
    AudioSetClass("/m/02qmj0d", "String section", 190),
    AudioSetClass("/m/07gql", "Trumpet", 187),
    AudioSetClass("/m/0319l", "French horn", 186),
    AudioSetClass("/m/0l14j_", "Flute", 196),
    AudioSetClass("/m/01wy6", "Clarinet", 198),
    AudioSetClass("/m/06ncr", "Saxophone", 197),
    AudioSetClass("/m/0dwsp", "Marimba, xylophone", 180),
    AudioSetClass("/m/0l156b", "Steelpan", 183),
    AudioSetClass("/m/0mkg", "Accordion", 209),
    AudioSetClass("/m/03qjg", "Harmonica", 208),
    AudioSetClass("/m/0192l", "Bagpipes", 210),
    AudioSetClass("/m/0l14jd", "Choir", 28),
    AudioSetClass("/m/02hnl", "Drum kit", 162),
    # Animals, vehicles, nature, explosions
    AudioSetClass("/m/015p6", "Bird", 111),
    AudioSetClass("/m/07pggtn", "Chirp, tweet", 113),
    AudioSetClass("/m/09ct_", "Helicopter", 339),
    AudioSetClass("/m/034srq", "Waves, surf", 295),
    AudioSetClass("/m/032s66", "Gunshot, gunfire", 427),
    # Telephone, alarms, signals
    AudioSetClass("/m/07cx4", "Telephone", 389),
    AudioSetClass("/m/07pp8cl", "Telephone bell ringing", 390),
    AudioSetClass("/m/02c8p", "Telephone dialing, DTMF", 392),
    AudioSetClass("/m/015jpf", "Dial tone", 393),
    AudioSetClass("/m/01z47d", "Busy signal", 394),
    AudioSetClass("/m/03kmc9", "Siren", 396),
    AudioSetClass("/m/02fs_r", "Beep, bleep", 481),
    AudioSetClass("/m/0395lw", "Bell", 200),
    AudioSetClass("/m/07qjznl", "Tick-tock", 408),
    AudioSetClass("/m/07qc9xj", "Clicking", 491),
    # Synthetic tones and noise
    AudioSetClass("/m/01v_m0", "Sine wave", 501),
    AudioSetClass("/m/0hdsk", "Chirp tone", 503),
    AudioSetClass("/m/096m7z", "Noise", 513),
    AudioSetClass("/m/06xkwv", "Mains hum", 516),
    AudioSetClass("/m/0chx_", "White noise", 520),
    AudioSetClass("/m/0cj0r", "Pink noise", 521),
)

#: AudioSet class by display name (the key the source table in :mod:`dass.data.synth_sources` uses).
SYNTH_CLASS_BY_NAME: dict[str, AudioSetClass] = {c.display_name: c for c in SYNTH_CLASSES}


def synth_labels(display_names: set[str] | frozenset[str] | None = None) -> list[LabelInfo]:
    """The corpus' label list: :data:`SYNTH_CLASSES` (optionally only ``display_names``), indexed 0..K-1."""
    unknown = set(display_names or ()) - set(SYNTH_CLASS_BY_NAME)
    if unknown:
        raise DassError(f"not classes of the synthetic corpus: {sorted(unknown)}")
    chosen = [c for c in SYNTH_CLASSES if display_names is None or c.display_name in display_names]
    return [LabelInfo(i, c.mid, c.display_name) for i, c in enumerate(chosen)]


def read_class_labels_csv(path: str | os.PathLike) -> list[LabelInfo]:
    """Read an AudioSet-format ``class_labels_indices.csv`` (header ``index,mid,display_name``).

    Returns the rows in file order. The indices must be exactly 0, 1, ..., K-1 in that order and the
    mids unique; anything else raises :class:`DassError` naming the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DassError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DassError(f"{path}: cannot read labels file ({e})") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or tuple(cell.strip() for cell in rows[0]) != CSV_HEADER:
        got = ",".join(rows[0]) if rows else "an empty file"
        raise DassError(f"{path}: line 1: expected the header 'index,mid,display_name', got {got!r}")
    labels: list[LabelInfo] = []
    seen_mids: dict[str, int] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue  # blank lines (e.g. a trailing newline) are allowed
        if len(row) != 3:
            raise DassError(f"{path}: line {line_no}: expected 3 fields (index,mid,display_name), "
                            f"got {len(row)}: {','.join(row)!r}")
        index_text, mid, name = (cell.strip() for cell in row)
        try:
            index = int(index_text)
        except ValueError:
            raise DassError(f"{path}: line {line_no}: index {index_text!r} is not an integer") from None
        if index != len(labels):
            raise DassError(f"{path}: line {line_no}: expected index {len(labels)}, got {index} "
                            "(indices must be 0, 1, 2, ... in order)")
        if not mid.startswith("/"):
            raise DassError(f"{path}: line {line_no}: mid {mid!r} is not an ontology id like /m/09x0r")
        if not name:
            raise DassError(f"{path}: line {line_no}: empty display_name")
        if mid in seen_mids:
            raise DassError(f"{path}: line {line_no}: mid {mid} repeats line {seen_mids[mid]}")
        seen_mids[mid] = line_no
        labels.append(LabelInfo(index, mid, name))
    if not labels:
        raise DassError(f"{path}: no classes (only a header)")
    return labels


def write_class_labels_csv(path: str | os.PathLike, labels: list[LabelInfo]) -> None:
    """Write ``labels`` as an AudioSet-format ``class_labels_indices.csv`` (atomically; names quoted)."""
    path = Path(path)
    for position, label in enumerate(labels):
        if label.index != position:
            raise DassError(f"{path}: label {label.display_name!r} has index {label.index}, expected {position}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(",".join(CSV_HEADER) + "\n")
            for label in labels:
                escaped = label.display_name.replace('"', '""')
                f.write(f'{label.index},{label.mid},"{escaped}"\n')
        os.chmod(tmp_name, 0o644)  # mkstemp makes files private (0600)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise

"""The resumable result file of a batch job: one row per audio file, JSONL, CSV or Parquet.

How a killed job loses at most the file in flight:

* **JSONL and CSV** are the journal themselves. Each finished file's row is appended with a single
  ``write`` on a file opened for appending, then ``fsync``-ed, before the next file's row. A SIGKILL
  (or power loss) can leave at most one partial row at the end. On the next run the file is read
  back: only complete rows count (a row is complete when it ends with a newline and parses: a JSON
  object per line; a CSV record with the header's number of fields), the tail after the last
  complete row is cut off, and the files named in the complete rows are skipped. As rows are
  written in the job's input order and each row is a deterministic function of its file, the result
  of a killed-then-resumed job is byte-identical to an uninterrupted run's.
* **Parquet** cannot be appended to. Rows go to a journal beside it (``<output>.journal.jsonl``, the
  JSONL rules above); when the job ends, the Parquet file is rewritten atomically with its previous
  rows plus the journal's, and the journal is deleted. A rerun reads both. The result is
  row-identical to an uninterrupted run's (Parquet's bytes carry writer metadata; compare tables).

The row (:data:`BASE_COLUMNS`, then one score column per class):

``file`` (the key), ``status`` (``ok`` or ``error``), ``error`` (the message), ``duration_s``,
``frames`` (audio frames), ``model_frames`` (frames the model saw, with padding), ``top`` (the top
classes), ``events`` (detected events, or none), then the per-class probabilities (rounded to 6
decimals). JSONL keeps ``top`` / ``events`` as lists and the scores as a ``scores`` object; CSV and
Parquet hold ``top`` / ``events`` as JSON text and one column per class.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import DassError

__all__ = ["BASE_COLUMNS", "OUTPUT_FORMATS", "ResultStore", "atomic_write_bytes", "atomic_write_text",
           "read_rows", "score_columns"]

BASE_COLUMNS = ("file", "status", "error", "duration_s", "frames", "model_frames", "top", "events")
OUTPUT_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}

try:  # the project's one atomic write (dass.fileio); until it lands, the same contract here
    from ..fileio import atomic_write_bytes, atomic_write_text  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the merge order
    import tempfile

    def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
        """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8",
                          newline: str | None = None) -> Path:
        """:func:`atomic_write_bytes` of ``text`` (``newline=""``: written as is)."""
        if newline not in (None, ""):
            text = text.replace("\n", newline)
        return atomic_write_bytes(path, text.encode(encoding))


def score_columns(names: Sequence[str | None] | None, num_classes: int) -> list[str]:
    """One distinct column name per class: its label (``class_<i>`` if none), made unique if needed."""
    columns: list[str] = []
    taken = set(BASE_COLUMNS) | {"scores"}
    for i in range(num_classes):
        name = names[i] if names and names[i] else f"class_{i}"
        if name in taken:
            name = f"{name} ({i})"
        taken.add(name)
        columns.append(name)
    return columns


# ------------------------------------------------------------------------------------------ codecs


def _jsonl_line(row: dict[str, Any], columns: Sequence[str]) -> str:
    scores = row.get("scores")
    record = {key: row.get(key) for key in BASE_COLUMNS}
    record["scores"] = None if scores is None else dict(zip(columns, scores))
    return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"


def _from_jsonl(record: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    scores = record.get("scores")
    row = {key: record.get(key) for key in BASE_COLUMNS}
    row["scores"] = None if scores is None else [scores[c] for c in columns]
    return row


def _flat(row: dict[str, Any], columns: Sequence[str]) -> list[Any]:
    """A row as CSV / Parquet cells: ``top`` / ``events`` as JSON text, one cell per class."""
    cells: list[Any] = [row.get("file"), row.get("status"), row.get("error"), row.get("duration_s"),
                        row.get("frames"), row.get("model_frames")]
    for key in ("top", "events"):
        cells.append(None if row.get(key) is None else json.dumps(row[key], ensure_ascii=False, allow_nan=False))
    scores = row.get("scores")
    cells.extend([None] * len(columns) if scores is None else scores)
    return cells


def _unflat(cells: Sequence[Any], columns: Sequence[str], from_text: bool) -> dict[str, Any]:
    def number(value: Any, kind: type) -> Any:
        if value is None or (from_text and value == ""):
            return None
        return kind(value)

    def text(value: Any) -> Any:
        return None if value is None or (from_text and value == "") else str(value)

    row = {"file": text(cells[0]), "status": text(cells[1]), "error": text(cells[2]),
           "duration_s": number(cells[3], float), "frames": number(cells[4], int),
           "model_frames": number(cells[5], int)}
    for key, value in zip(("top", "events"), cells[6:8]):
        row[key] = None if text(value) is None else json.loads(value)
    scores = cells[8:]
    row["scores"] = None if all(text(s) is None for s in scores) else [float(s) for s in scores]
    return row


def _csv_line(cells: Sequence[Any]) -> str:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerow(["" if c is None else c for c in cells])
    return buffer.getvalue()


# -------------------------------------------------------------------------------- reading the tail


def _complete_jsonl(data: bytes, name: str, columns: Sequence[str]) -> tuple[list[dict[str, Any]], int]:
    """Complete rows of a JSONL journal and the byte length they take (the rest is a torn tail)."""
    rows, end = [], 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1]):  # the last piece has no newline: torn or empty
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "file" not in record:
                raise ValueError("not a row")
        except ValueError:
            if number == len(lines) - 2:  # a damaged last line: treated like a torn one
                break
            raise DassError(f"{name}: line {number + 1} is not a result row; is this the output of dass tag?") from None
        if list(record) != [*BASE_COLUMNS, "scores"] or (record["scores"] is not None
                                                          and list(record["scores"]) != list(columns)):
            raise DassError(f"{name}: rows of another model or class list (line {number + 1}); "
                            "write to a new --output or delete this file")
        rows.append(_from_jsonl(record, columns))
        end += len(line) + 1
    return rows, end


def _complete_csv(data: bytes, name: str, columns: Sequence[str]) -> tuple[list[dict[str, Any]], int]:
    """Complete rows of a CSV result file and the byte length of the header plus those rows."""
    text = data.decode("utf-8")
    records = list(csv.reader(io.StringIO(text, newline="")))
    header = [*BASE_COLUMNS, *columns]
    if not records:
        return [], 0
    if records[0] != header:
        if not text.endswith("\n") and len(records) == 1:  # a torn header: start again
            return [], 0
        raise DassError(f"{name}: its columns are not those of this job (another model or class list); "
                        "write to a new --output or delete this file")
    body = records[1:]
    if body and (not text.endswith("\n") or len(body[-1]) != len(header)):
        body = body[:-1]  # the torn last record
    # Only the final record may be damaged: the rows kept must re-serialise to the file's first bytes.
    kept = _csv_line(header) + "".join(_csv_line(r) for r in body)
    damaged = DassError(f"{name}: damaged in the middle (not only a torn last row); cannot resume")
    if not text.startswith(kept) or any(len(r) != len(header) for r in body):
        raise damaged
    try:
        return [_unflat(r, columns, from_text=True) for r in body], len(kept.encode("utf-8"))
    except ValueError:
        raise damaged from None


# ------------------------------------------------------------------------------------------- store


class ResultStore:
    """Append-only, resumable rows of a batch job (see the module docstring).

    ``store = ResultStore(path, columns)``; ``store.done`` (file keys already recorded);
    ``store.append(row)`` per finished file; ``store.close()`` at the end (Parquet: writes the file).
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str], fsync: bool = True,
                 retry_errors: bool = False) -> None:
        self.path = Path(path)
        self.format = OUTPUT_FORMATS.get(self.path.suffix.lower())
        if self.format is None:
            raise DassError(f"{self.path}: the output must end in .jsonl, .csv or .parquet")
        if self.path.is_dir():
            raise DassError(f"{self.path}: is a folder; --output names a file")
        self.columns = list(columns)
        self.fsync = fsync
        self.journal = self.path.with_name(self.path.name + ".journal.jsonl") if self.format == "parquet" else self.path
        self.previous: list[dict[str, Any]] = []  # Parquet: the rows of the file as it was
        if self.format == "parquet" and self.path.exists():
            self.previous = _read_parquet(self.path, self.columns)
        self.rows = self._recover()
        if retry_errors:
            self._drop_errors()
        self.done = {row["file"] for row in self.previous + self.rows}
        self.appended = 0

    def _recover(self) -> list[dict[str, Any]]:
        """Rows already in the journal; cuts a torn tail off it."""
        journal = self.journal
        if not journal.exists():
            journal.parent.mkdir(parents=True, exist_ok=True)
            return []
        data = journal.read_bytes()
        reader = _complete_csv if self.format == "csv" else _complete_jsonl
        rows, end = reader(data, str(journal), self.columns)
        if end < len(data):
            with open(journal, "r+b") as handle:
                handle.truncate(end)
                os.fsync(handle.fileno())
        return rows

    def _drop_errors(self) -> None:
        """Forget the files that failed before, so that this run tags them again (rewrites atomically)."""
        self.previous = [r for r in self.previous if r["status"] != "error"]
        kept = [r for r in self.rows if r["status"] != "error"]
        if len(kept) != len(self.rows):
            self.rows = kept
            atomic_write_text(self.journal, self._header() + "".join(self._encode(r) for r in kept), newline="")
        if self.format == "parquet" and self.path.exists():
            _write_parquet(self.path, self.previous, self.columns)

    def _header(self) -> str:
        return _csv_line([*BASE_COLUMNS, *self.columns]) if self.format == "csv" else ""

    def _encode(self, row: dict[str, Any]) -> str:
        return _csv_line(_flat(row, self.columns)) if self.format == "csv" else _jsonl_line(row, self.columns)

    def _append_text(self, text: str) -> None:
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = text.encode("utf-8")
            written = os.write(fd, data)
            while written < len(data):  # a short write (rare: signals, full pipes) continues
                written += os.write(fd, data[written:])
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, row: dict[str, Any]) -> None:
        """Record one finished file (one ``write`` + ``fsync``)."""
        if row["file"] in self.done:
            raise DassError(f"{row['file']}: already in {self.path}")
        text = self._encode(row)
        if self.format == "csv" and (not self.journal.exists() or self.journal.stat().st_size == 0):
            text = self._header() + text
        self._append_text(text)
        self.done.add(row["file"])
        self.rows.append(row)
        self.appended += 1

    def all_rows(self) -> list[dict[str, Any]]:
        """Every row of the output (earlier runs' and this one's), in file order."""
        return self.previous + self.rows

    def close(self) -> None:
        """Parquet: write the table atomically (previous rows + journal), then delete the journal."""
        if self.format == "parquet" and (self.journal.exists() or not self.path.exists()):
            _write_parquet(self.path, self.all_rows(), self.columns)
            self.journal.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------- parquet


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DassError("Parquet output needs pyarrow: pip install pyarrow (or write .jsonl / .csv)") from None
    return pyarrow


def _write_parquet(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    pa = _pyarrow()
    names = [*BASE_COLUMNS, *columns]
    types = [pa.string(), pa.string(), pa.string(), pa.float64(), pa.int64(), pa.int64(), pa.string(),
             pa.string()] + [pa.float64()] * len(columns)
    cells = [_flat(r, columns) for r in rows]
    arrays = [pa.array([c[i] for c in cells], type=t) for i, t in enumerate(types)]
    table = pa.Table.from_arrays(arrays, names=names)
    buffer = pa.BufferOutputStream()
    pa.parquet.write_table(table, buffer)
    atomic_write_bytes(path, buffer.getvalue().to_pybytes())


def _read_parquet(path: Path, columns: Sequence[str]) -> list[dict[str, Any]]:
    pa = _pyarrow()
    try:
        table = pa.parquet.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise DassError(f"{path}: cannot read the Parquet file ({e})") from None
    if table.column_names != [*BASE_COLUMNS, *columns]:
        raise DassError(f"{path}: its columns are not those of this job (another model or class list); "
                        "write to a new --output or delete this file")
    return [_unflat(list(r.values()), columns, from_text=False) for r in table.to_pylist()]


def read_rows(path: str | os.PathLike, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """The complete rows of a result file (any of the three formats), as written by :class:`ResultStore`.

    ``columns``: the score columns (default: read from the file itself).
    """
    target = Path(path)
    fmt = OUTPUT_FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise DassError(f"{target}: not a result file (.jsonl, .csv or .parquet)")
    if fmt == "parquet":
        if columns is None:
            columns = _pyarrow().parquet.read_schema(target).names[len(BASE_COLUMNS):]
        rows = _read_parquet(target, columns) if target.exists() else []
        journal = target.with_name(target.name + ".journal.jsonl")
        if journal.exists():
            rows += _complete_jsonl(journal.read_bytes(), str(journal), columns)[0]
        yield from rows
        return
    if not target.exists():
        raise DassError(f"{target}: no such result file")
    data = target.read_bytes()
    if columns is None:
        if fmt == "csv":
            first = next(csv.reader(io.StringIO(data.decode("utf-8"), newline="")), [])
            columns = first[len(BASE_COLUMNS):]
        else:
            columns = []
            for line in data.split(b"\n")[:-1]:  # the first row with scores names the columns
                scores = json.loads(line).get("scores")
                if scores is not None:
                    columns = list(scores)
                    break
    reader = _complete_csv if fmt == "csv" else _complete_jsonl
    yield from reader(data, str(target), columns)[0]

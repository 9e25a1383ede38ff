"""The audio files of a batch job: from paths, folders (recursive), text lists and AST JSON datafiles."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import DassError

__all__ = ["AUDIO_SUFFIXES", "collect_paths", "datafile_paths", "list_file_paths", "scan_folder"]

# What a folder scan picks up without --glob (libsndfile and PyAV formats; case-insensitive).
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".oga", ".m4a", ".aac", ".mp4", ".webm", ".aif",
                  ".aiff", ".au", ".caf", ".w64", ".wma", ".mka", ".mkv")


def scan_folder(folder: str | os.PathLike, glob: str | None = None) -> list[str]:
    """Audio files under ``folder`` (recursive, sorted by relative path, hidden entries skipped).

    ``glob``: keep the files whose relative path (``sub/dir/name.ext``) or name matches this
    ``fnmatch`` pattern (e.g. ``*.flac``, ``2024-*/*.wav``); default: the :data:`AUDIO_SUFFIXES`.
    """
    root = Path(folder)
    found = []
    for directory, subdirs, files in os.walk(root, onerror=None, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            if glob is not None:
                if not (fnmatch.fnmatchcase(relative, glob) or fnmatch.fnmatchcase(name, glob)):
                    continue
            elif path.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            found.append((relative, str(path)))
    return [path for _, path in sorted(found)]


def list_file_paths(list_file: str | os.PathLike) -> list[str]:
    """Paths in a text file, one per line (blank lines and ``#`` comments skipped); relative paths
    are resolved against the list's folder."""
    source = Path(list_file)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DassError(f"{source}: no such list of files") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DassError(f"{source}: cannot read the list of files ({e})") from None
    base = source.resolve().parent
    paths = []
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            paths.append(os.path.normpath(entry if os.path.isabs(entry) else base / entry))
    return paths


def datafile_paths(datafile: str | os.PathLike) -> list[str]:
    """The ``wav`` paths of an AST JSON datafile (``{"data": [{"wav": ...}, ...]}``), resolved as
    :func:`dass.data.dataset.read_datafile` does (relative to the JSON file's folder); labels are ignored."""
    from ..data.dataset import datafile_entries

    source = Path(datafile)
    entries = datafile_entries(source)
    base = source.resolve().parent
    paths = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("wav"), str):
            raise DassError(f"{source}: entry {i}: expected {{\"wav\": str, ...}}, got {entry!r}")
        wav = entry["wav"]
        paths.append(os.path.normpath(wav if os.path.isabs(wav) else base / wav))
    return paths


def collect_paths(inputs: Sequence[str | os.PathLike] = (), glob: str | None = None,
                  lists: Iterable[str | os.PathLike] = (), datafiles: Iterable[str | os.PathLike] = ()) -> list[str]:
    """Every file of a job, in order, each once: ``inputs`` (files as given, folders scanned with
    :func:`scan_folder`), then the paths of each list file and datafile.

    A path that does not exist is kept (the job records it as failed); a folder with no matching file
    raises :class:`DassError`.
    """
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = scan_folder(item, glob)
            if not found:
                wanted = f"matching {glob!r}" if glob else "with an audio suffix"
                raise DassError(f"{item}: no files {wanted} in this folder")
            paths.extend(found)
        else:
            paths.append(os.fspath(item))
    for list_file in lists:
        paths.extend(list_file_paths(list_file))
    for datafile in datafiles:
        paths.extend(datafile_paths(datafile))
    seen: set[str] = set()
    unique = []
    for path in paths:
        key = os.path.normpath(path)
        if key not in seen:
            seen.add(key)
            unique.append(key)
    return unique

"""Read (source, target) pairs lazily from TSV, JSONL or two aligned text files.

A corpus may be larger than memory, so every reader is a generator that holds one line
at a time. Every problem with the data is a `DataError` that names the file and line, so
a user can open the file at the right place instead of reading a traceback.

Files are UTF-8; a byte-order mark at the start and CRLF line endings are tolerated, and
a path ending in ``.gz`` is decompressed on the fly.
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import zlib
from dataclasses import dataclass
from typing import IO, Iterator

PathLike = str | os.PathLike

ON_EMPTY_CHOICES = ("skip", "error")
FORMATS = ("tsv", "jsonl")
_EXTENSION_FORMATS = {".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
_JSON_TYPE_NAMES = {
    dict: "object", list: "array", str: "string", int: "number",
    float: "number", bool: "boolean", type(None): "null",
}


class DataError(ValueError):
    """A problem in an input file, reported as one ``path:line: problem`` line."""

    def __init__(self, path: PathLike, line: int | None, problem: str):
        self.path = os.fspath(path)
        self.line = line
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}")


@dataclass
class Pair:
    """One training example and the (1-based) line it came from, for error messages."""

    source: str
    target: str
    line: int


@dataclass
class ReadStats:
    """Counts filled in while a reader is iterated, so callers can report what was dropped."""

    pairs: int = 0
    skipped_empty: int = 0


# ---------------------------------------------------------------------------- public readers


def read_tsv(path: PathLike, *, on_empty: str = "skip",
             stats: ReadStats | None = None) -> Iterator[Pair]:
    """Yield pairs from a file of ``source<TAB>target`` lines; blank lines are ignored."""
    name = _check_args(path, on_empty)
    return _tsv_pairs(name, on_empty, stats)


def read_jsonl(path: PathLike, *, source_field: str = "source", target_field: str = "target",
               on_empty: str = "skip", stats: ReadStats | None = None) -> Iterator[Pair]:
    """Yield pairs from a file with one JSON object per line; blank lines are ignored."""
    name = _check_args(path, on_empty)
    return _jsonl_pairs(name, source_field, target_field, on_empty, stats)


def read_parallel(source_path: PathLike, target_path: PathLike, *, on_empty: str = "skip",
                  stats: ReadStats | None = None) -> Iterator[Pair]:
    """Yield pairs from two aligned files, line N of one paired with line N of the other.

    A line that is blank in both files is ignored. Files of different lengths are an
    error naming the shorter file (trailing blank lines in the longer one are tolerated).
    """
    src_name = _check_args(source_path, on_empty)
    tgt_name = _check_args(target_path, on_empty)
    return _parallel_pairs(src_name, tgt_name, on_empty, stats)


def read_pairs(path: PathLike, *, fmt: str | None = None, target_path: PathLike | None = None,
               source_field: str = "source", target_field: str = "target",
               on_empty: str = "skip", stats: ReadStats | None = None) -> Iterator[Pair]:
    """Read pairs in whatever layout the data has, so callers need one entry point.

    With `target_path`, `path` holds the sources and `target_path` the targets (and `fmt`
    is not used). Otherwise `fmt` is "tsv" or "jsonl", or is inferred from the extension
    (.tsv/.txt → tsv, .jsonl/.json → jsonl, each optionally followed by .gz).
    """
    if target_path is not None:
        return read_parallel(path, target_path, on_empty=on_empty, stats=stats)
    fmt = fmt if fmt is not None else infer_format(path)
    if fmt == "tsv":
        return read_tsv(path, on_empty=on_empty, stats=stats)
    if fmt == "jsonl":
        return read_jsonl(path, source_field=source_field, target_field=target_field,
                          on_empty=on_empty, stats=stats)
    raise DataError(path, None, f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def read_lines(path: PathLike | None = None, stream: IO[bytes] | None = None) -> Iterator[str]:
    """Plain text lines (sources to translate) from a file or a binary stream such as stdin,
    with the same UTF-8, BOM and CRLF handling and errors as the pair readers."""
    if stream is not None:
        for lineno, raw in enumerate(stream, 1):
            yield _decode_line("<stdin>", lineno, raw)
        return
    for _, text in _read_lines(_check_args(path, "skip")):
        yield text


def infer_format(path: PathLike) -> str:
    """Return "tsv" or "jsonl" from the file extension (ignoring a final .gz)."""
    name = os.fspath(path)
    base = name[:-3] if name.endswith(".gz") else name
    ext = os.path.splitext(base)[1].lower()
    if ext not in _EXTENSION_FORMATS:
        known = ", ".join(sorted(_EXTENSION_FORMATS))
        raise DataError(name, None, f"cannot infer the format from extension {ext or '(none)'!r}; "
                                    f"use one of {known} or give the format explicitly")
    return _EXTENSION_FORMATS[ext]


# ---------------------------------------------------------------------------- generators


def _tsv_pairs(name: str, on_empty: str, stats: ReadStats | None) -> Iterator[Pair]:
    counter = _Counter(name, stats)
    for lineno, text in _read_lines(name):
        if not text:
            continue
        fields = text.split("\t")
        if len(fields) != 2:
            raise DataError(name, lineno, "expected 2 tab-separated fields (source<TAB>target), "
                                          f"found {len(fields)}")
        pair = counter.accept(lineno, fields[0], fields[1], on_empty)
        if pair is not None:
            yield pair
    counter.finish()


def _jsonl_pairs(name: str, source_field: str, target_field: str, on_empty: str,
                 stats: ReadStats | None) -> Iterator[Pair]:
    counter = _Counter(name, stats)
    for lineno, text in _read_lines(name):
        if not text:
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(name, lineno, f"malformed JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(record, dict):
            raise DataError(name, lineno, f"expected a JSON object, found {_json_type(record)}")
        source = _string_field(name, lineno, record, source_field)
        target = _string_field(name, lineno, record, target_field)
        pair = counter.accept(lineno, source, target, on_empty)
        if pair is not None:
            yield pair
    counter.finish()


def _parallel_pairs(src_name: str, tgt_name: str, on_empty: str,
                    stats: ReadStats | None) -> Iterator[Pair]:
    counter = _Counter(src_name, stats)
    src_lines, tgt_lines = _read_lines(src_name), _read_lines(tgt_name)
    try:
        lineno = 0
        while True:
            src, tgt = next(src_lines, None), next(tgt_lines, None)
            if src is None and tgt is None:
                break
            if src is None or tgt is None:
                _check_rest_blank(src_name, tgt_name, lineno, src_lines if tgt is None else tgt_lines,
                                  shorter_is_source=src is None, first=src or tgt)
                break
            lineno = src[0]
            if not src[1] and not tgt[1]:
                continue
            pair = counter.accept(lineno, src[1], tgt[1], on_empty)
            if pair is not None:
                yield pair
    finally:
        src_lines.close()
        tgt_lines.close()
    counter.finish()


def _check_rest_blank(src_name: str, tgt_name: str, count: int, rest: Iterator[tuple[int, str]],
                      *, shorter_is_source: bool, first: tuple[int, str]) -> None:
    """Raise unless the longer file has only blank lines after the shorter one ended."""
    shorter, longer = (src_name, tgt_name) if shorter_is_source else (tgt_name, src_name)
    lineno, text = first
    while not text:
        nxt = next(rest, None)
        if nxt is None:
            return
        lineno, text = nxt
    raise DataError(shorter, count + 1,
                    f"ends after {count} lines but {longer} continues (line {lineno})")


# ---------------------------------------------------------------------------- helpers


class _Counter:
    """Applies the on_empty policy and keeps the counts for one file (and the caller's stats)."""

    def __init__(self, name: str, stats: ReadStats | None):
        self.name, self.stats = name, stats
        self.pairs = self.skipped = 0

    def accept(self, lineno: int, source: str, target: str, on_empty: str) -> Pair | None:
        source, target = source.strip(), target.strip()
        if not source or not target:
            if on_empty == "error":
                raise DataError(self.name, lineno, "empty source" if not source else "empty target")
            self.skipped += 1
            if self.stats is not None:
                self.stats.skipped_empty += 1
            return None
        self.pairs += 1
        if self.stats is not None:
            self.stats.pairs += 1
        return Pair(source, target, lineno)

    def finish(self) -> None:
        """An input that yields nothing is an error: training on it would silently do nothing."""
        if self.pairs:
            return
        if self.skipped:
            raise DataError(self.name, None, f"no pairs found (all {self.skipped} had an empty "
                                             "source or target)")
        raise DataError(self.name, None, "no pairs found (empty file)")


def _check_args(path: PathLike, on_empty: str) -> str:
    """Fail at call time on a bad argument or path, before any iteration."""
    if on_empty not in ON_EMPTY_CHOICES:
        raise ValueError(f"on_empty must be one of {ON_EMPTY_CHOICES}, got {on_empty!r}")
    name = os.fspath(path)
    if os.path.isdir(name):
        raise DataError(name, None, "is a directory")
    if not os.path.exists(name):
        raise DataError(name, None, "file not found")
    return name


def _open_binary(name: str) -> IO[bytes]:
    try:
        return gzip.open(name, "rb") if name.endswith(".gz") else open(name, "rb")
    except FileNotFoundError:
        raise DataError(name, None, "file not found") from None
    except IsADirectoryError:
        raise DataError(name, None, "is a directory") from None
    except OSError as err:
        raise DataError(name, None, f"cannot open: {err.strerror or err}") from None


def _read_lines(name: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, decoded text without line ending), one line in memory at a time."""
    lineno = 0
    with _open_binary(name) as stream:
        try:
            for lineno, raw in enumerate(stream, 1):
                yield lineno, _decode_line(name, lineno, raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(name, lineno + 1, f"cannot read: {err}") from None


def _decode_line(name: str, lineno: int, raw: bytes) -> str:
    if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(name, lineno, f"invalid UTF-8 at byte {err.start + 1} of the line "
                                      f"(0x{raw[err.start]:02x})") from None


def _string_field(name: str, lineno: int, record: dict, field: str) -> str:
    if field not in record:
        raise DataError(name, lineno, f"missing field {field!r}")
    value = record[field]
    if not isinstance(value, str):
        raise DataError(name, lineno, f"field {field!r} must be a string, found {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)

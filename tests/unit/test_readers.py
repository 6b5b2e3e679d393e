import gzip

import pytest

from transduce.data.readers import (
    DataError,
    Pair,
    ReadStats,
    read_jsonl,
    read_pairs,
    read_parallel,
    read_tsv,
)


def write(path, text):
    path.write_bytes(text.encode("utf-8"))
    return path


def error_of(reader, *args, **kwargs):
    with pytest.raises(DataError) as info:
        list(reader(*args, **kwargs))
    return info.value


# ---------------------------------------------------------------- DataError


def test_data_error_message_is_one_line():
    err = DataError("a.tsv", 3, "empty source")
    assert (err.path, err.line, err.problem) == ("a.tsv", 3, "empty source")
    assert str(err) == "a.tsv:3: empty source"
    assert str(DataError("a.tsv", None, "file not found")) == "a.tsv: file not found"
    assert isinstance(err, ValueError)


# ---------------------------------------------------------------- TSV


def test_tsv_reads_pairs_with_line_numbers(tmp_path):
    path = write(tmp_path / "d.tsv", "a b\tx y\n\nc\t z \n")
    assert list(read_tsv(path)) == [Pair("a b", "x y", 1), Pair("c", "z", 3)]


def test_tsv_keeps_internal_whitespace(tmp_path):
    path = write(tmp_path / "d.tsv", "  a   b \tx\u3000 y\n")
    assert list(read_tsv(path)) == [Pair("a   b", "x\u3000 y", 1)]


def test_tsv_bom_and_crlf(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes(b"\xef\xbb\xbfa\tb\r\nc\td\r\n\r\n")
    assert list(read_tsv(path)) == [Pair("a", "b", 1), Pair("c", "d", 2)]


def test_tsv_missing_tab(tmp_path):
    path = write(tmp_path / "d.tsv", "a\tb\nno tab here\n")
    err = error_of(read_tsv, path)
    assert (err.path, err.line) == (str(path), 2)
    assert err.problem == "expected 2 tab-separated fields (source<TAB>target), found 1"


def test_tsv_extra_column(tmp_path):
    err = error_of(read_tsv, write(tmp_path / "d.tsv", "a\tb\tc\n"))
    assert err.line == 1
    assert err.problem.endswith("found 3")


def test_tsv_invalid_utf8(tmp_path):
    path = tmp_path / "d.tsv"
    with open(path, "wb") as f:
        f.write(b"a\tb\nok\tbad \xff byte\n")
    err = error_of(read_tsv, path)
    assert err.line == 2
    assert "invalid UTF-8" in err.problem and "byte 8" in err.problem


def test_tsv_empty_fields_skipped_and_counted(tmp_path):
    path = write(tmp_path / "d.tsv", "a\tb\n\tb\na\t  \nc\td\n")
    stats = ReadStats()
    assert [p.line for p in read_tsv(path, stats=stats)] == [1, 4]
    assert stats == ReadStats(pairs=2, skipped_empty=2)


def test_tsv_empty_fields_error(tmp_path):
    path = write(tmp_path / "d.tsv", "a\tb\n \tb\n")
    err = error_of(read_tsv, path, on_empty="error")
    assert (err.line, err.problem) == (2, "empty source")
    err = error_of(read_tsv, write(tmp_path / "e.tsv", "a\t\n"), on_empty="error")
    assert (err.line, err.problem) == (1, "empty target")


def test_bad_on_empty_value(tmp_path):
    with pytest.raises(ValueError, match="on_empty"):
        read_tsv(write(tmp_path / "d.tsv", "a\tb\n"), on_empty="drop")


def test_stats_fill_in_while_iterating(tmp_path):
    path = write(tmp_path / "d.tsv", "a\tb\nc\td\n")
    stats = ReadStats()
    pairs = read_tsv(path, stats=stats)
    next(pairs)
    assert stats.pairs == 1


def test_tsv_is_lazy(tmp_path):
    path = write(tmp_path / "d.tsv", "a\tb\n" + "broken line\n")
    pairs = read_tsv(path)
    assert next(pairs) == Pair("a", "b", 1)
    with pytest.raises(DataError):
        next(pairs)


def test_gzip_tsv(tmp_path):
    path = tmp_path / "d.tsv.gz"
    with gzip.open(path, "wb") as f:
        f.write("\ufeffé\tè\r\n".encode("utf-8"))
    assert list(read_pairs(path)) == [Pair("é", "è", 1)]


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "d.tsv.gz"
    path.write_bytes(b"this is not gzip\tdata\n")
    err = error_of(read_tsv, path)
    assert err.path == str(path)


# ---------------------------------------------------------------- files that are not there or empty


@pytest.mark.parametrize("reader", [read_tsv, read_jsonl, read_pairs])
def test_missing_file(tmp_path, reader):
    path = tmp_path / "nope.tsv"
    with pytest.raises(DataError) as info:
        list(reader(path))
    assert (info.value.path, info.value.line, info.value.problem) == (str(path), None,
                                                                      "file not found")


def test_directory(tmp_path):
    err = error_of(read_tsv, tmp_path)
    assert (err.line, err.problem) == (None, "is a directory")


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\xef\xbb\xbf"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    for reader in (read_tsv, read_jsonl):
        err = error_of(reader, path)
        assert (err.path, err.line, err.problem) == (str(path), None, "no pairs found (empty file)")


def test_all_pairs_skipped_is_an_error(tmp_path):
    err = error_of(read_tsv, write(tmp_path / "d.tsv", "\tb\na\t\n"))
    assert err.line is None and err.problem.startswith("no pairs found")


# ---------------------------------------------------------------- JSONL


def test_jsonl_reads_pairs(tmp_path):
    path = write(tmp_path / "d.jsonl",
                 '{"source": " 你好 世界 ", "target": "hi", "id": 1}\n\n{"target": "b", "source": "a"}\n')
    assert list(read_jsonl(path)) == [Pair("你好 世界", "hi", 1), Pair("a", "b", 3)]


def test_jsonl_custom_fields(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"de": "Haus", "en": "house"}\r\n')
    assert list(read_pairs(path, source_field="de", target_field="en")) == [Pair("Haus", "house", 1)]


def test_jsonl_malformed(tmp_path):
    err = error_of(read_jsonl, write(tmp_path / "d.jsonl", '{"source": "a", "target": "b"}\n{"source": \n'))
    assert err.line == 2 and err.problem.startswith("malformed JSON: ")


def test_jsonl_missing_field(tmp_path):
    err = error_of(read_jsonl, write(tmp_path / "d.jsonl", '{"src": "a", "target": "b"}\n'))
    assert (err.line, err.problem) == (1, "missing field 'source'")
    err = error_of(read_jsonl, write(tmp_path / "e.jsonl", '{"source": "a"}\n'))
    assert err.problem == "missing field 'target'"


def test_jsonl_not_an_object(tmp_path):
    err = error_of(read_jsonl, write(tmp_path / "d.jsonl", '["a", "b"]\n'))
    assert err.line == 1 and "object" in err.problem


def test_jsonl_non_string_value(tmp_path):
    err = error_of(read_jsonl, write(tmp_path / "d.jsonl", '{"source": 3, "target": "b"}\n'))
    assert err.line == 1 and "'source'" in err.problem and "string" in err.problem


def test_jsonl_empty_field(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"source": "a", "target": ""}\n{"source": "c", "target": "d"}\n')
    stats = ReadStats()
    assert list(read_jsonl(path, stats=stats)) == [Pair("c", "d", 2)]
    assert stats.skipped_empty == 1
    assert error_of(read_jsonl, path, on_empty="error").problem == "empty target"


def test_jsonl_invalid_utf8(tmp_path):
    path = tmp_path / "d.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"source": "\xc3", "target": "b"}\n')
    err = error_of(read_jsonl, path)
    assert err.line == 1 and "invalid UTF-8" in err.problem


# ---------------------------------------------------------------- two aligned files


def test_parallel_pairs_keep_line_numbers(tmp_path):
    src = write(tmp_path / "s.txt", "a\n\nc\nd\n")
    tgt = write(tmp_path / "t.txt", "\ufeffA\r\n\r\nC\r\n\r\n")
    stats = ReadStats()
    assert list(read_parallel(src, tgt, stats=stats)) == [Pair("a", "A", 1), Pair("c", "C", 3)]
    assert stats == ReadStats(pairs=2, skipped_empty=1)


@pytest.mark.parametrize("source_longer", [True, False])
def test_parallel_different_lengths_name_the_shorter_file(tmp_path, source_longer):
    long_, short = "".join(f"x{i}\n" for i in range(11)), "".join(f"y{i}\n" for i in range(10))
    src = write(tmp_path / "s.txt", long_ if source_longer else short)
    tgt = write(tmp_path / "t.txt", short if source_longer else long_)
    shorter, longer = (tgt, src) if source_longer else (src, tgt)
    err = error_of(read_parallel, src, tgt)
    assert (err.path, err.line) == (str(shorter), 11)
    assert err.problem == f"ends after 10 lines but {longer} continues (line 11)"


def test_parallel_tolerates_trailing_blank_lines(tmp_path):
    src = write(tmp_path / "s.txt", "a\nb\n")
    tgt = write(tmp_path / "t.txt", "A\nB\n\n\r\n")
    assert [p.target for p in read_parallel(src, tgt)] == ["A", "B"]


def test_parallel_is_lazy(tmp_path):
    src = write(tmp_path / "s.txt", "a\nb\nc\n")
    tgt = write(tmp_path / "t.txt", "A\n")
    pairs = read_parallel(src, tgt)
    assert next(pairs) == Pair("a", "A", 1)


def test_parallel_missing_and_empty(tmp_path):
    src = write(tmp_path / "s.txt", "a\n")
    with pytest.raises(DataError, match="file not found"):
        list(read_parallel(src, tmp_path / "missing.txt"))
    empty = write(tmp_path / "e.txt", "")
    assert error_of(read_parallel, empty, write(tmp_path / "e2.txt", "")).problem == (
        "no pairs found (empty file)")
    err = error_of(read_parallel, src, empty)
    assert (err.path, err.line) == (str(empty), 1)


# ---------------------------------------------------------------- dispatch


def test_read_pairs_infers_format(tmp_path):
    tsv = write(tmp_path / "d.txt", "a\tb\n")
    jsonl = write(tmp_path / "d.JSON", '{"source": "a", "target": "b"}\n')
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write('{"source": "a", "target": "b"}\n')
    for path in (tsv, jsonl, gz):
        assert list(read_pairs(path)) == [Pair("a", "b", 1)]


def test_read_pairs_explicit_format_and_parallel(tmp_path):
    path = write(tmp_path / "data", "a\tb\n")
    assert list(read_pairs(path, fmt="tsv")) == [Pair("a", "b", 1)]
    tgt = write(tmp_path / "tgt", "B\n")
    assert list(read_pairs(path, target_path=tgt)) == [Pair("a\tb", "B", 1)]


def test_read_pairs_unknown_format(tmp_path):
    path = write(tmp_path / "d.csv", "a,b\n")
    with pytest.raises(DataError) as info:
        read_pairs(path)
    assert info.value.path == str(path) and "'.csv'" in info.value.problem
    with pytest.raises(DataError, match="unknown format 'xml'"):
        read_pairs(path, fmt="xml")

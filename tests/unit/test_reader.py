"""Parsing and validation of trip files, without a database."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.ingest import reader
from service.ingest import validate as reader_validation
from service.ingest.reader import FileFormatError, TripReader
from service.ingest.validate import PG_EPOCH_US

HEADER = "region,origin_coord,destination_coord,datetime,datasource\n"
GOOD = "Prague,POINT (14.4 50.0),POINT (14.5 50.1),2018-05-28 09:03:41,funny_car\n"


def read_all(path: Path, block: int = 1 << 20):
    rows, rejections, ts, xs = 0, [], [], []
    with TripReader(path, block_bytes=block) as r:
        for b in r:
            rows += b.rows_valid
            rejections += b.rejections
            ts += list(b.ts_us)
            xs += list(b.ox)
    return rows, sorted(rejections), ts, xs


def write(tmp_path: Path, text: str | bytes, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def us(s: str) -> int:
    return int(np.datetime64(s, "us").astype(np.int64)) - PG_EPOCH_US


def test_good_rows_and_line_numbers(tmp_path: Path) -> None:
    bad = "Prague,POINT (200 50),POINT (14.5 50.1),2018-05-28 09:03:41,funny_car\n"
    p = write(
        tmp_path,
        HEADER + GOOD + bad + GOOD + "Turin,POINT (1 2),POINT (1 2),2018-02-30 00:00:00,x\n",
    )
    rows, rej, _, _ = read_all(p)
    assert rows == 2
    assert [(line, reason.split(":")[0]) for line, reason, _ in rej] == [
        (3, "origin_coord"),
        (5, "datetime"),
    ]
    assert "longitude 200.0" in rej[0][1]
    assert rej[0][2] == bad.rstrip("\n")


@pytest.mark.parametrize(
    "value,expected",
    [
        ("2018-05-28 09:03:41", "2018-05-28T09:03:41"),
        ("2018-05-28T09:03:41.5", "2018-05-28T09:03:41.500000"),
        ("2016-02-29 23:59:59.999", "2016-02-29T23:59:59.999"),
        ("2018-05-28 00:00:00.0000004", "2018-05-28T00:00:00"),
        ("2018-05-28 00:00:00.9999996", "2018-05-28T00:00:01"),
    ],
)
def test_timestamps(tmp_path: Path, value: str, expected: str) -> None:
    p = write(tmp_path, HEADER + f"A,POINT(1 2),point (3 4),{value},d\n")
    rows, rej, ts, _ = read_all(p)
    assert rows == 1 and not rej
    assert ts == [us(expected)]


@pytest.mark.parametrize(
    "value,reason",
    [
        ("2018-02-30 10:00:00", "no such date"),
        ("2019-02-29 10:00:00", "no such date"),
        ("2018-01-01 25:00:00", "no such time"),
        ("2018-01-01 10:60:00", "no such time"),
        ("yesterday", "not 'YYYY"),
        ("", "not 'YYYY"),
    ],
)
def test_bad_datetimes(tmp_path: Path, value: str, reason: str) -> None:
    p = write(tmp_path, HEADER + f"A,POINT(1 2),POINT(3 4),{value},d\n")
    rows, rej, _, _ = read_all(p)
    assert rows == 0 and len(rej) == 1 and reason in rej[0][1]


@pytest.mark.parametrize(
    "wkt,reason",
    [
        ("POINT EMPTY", "not a WKT point"),
        ("POINT (1)", "not a WKT point"),
        ('"LINESTRING (1 2, 3 4)"', "not a WKT point"),
        ("POINT (NaN 2)", "finite"),
        ("POINT (1e400 2)", "finite"),
        ("POINT (-180.0001 2)", "longitude"),
        ("POINT (1 95)", "latitude"),
    ],
)
def test_bad_points(tmp_path: Path, wkt: str, reason: str) -> None:
    p = write(tmp_path, HEADER + f"A,{wkt},POINT(3 4),2018-01-01 00:00:00,d\n")
    rows, rej, _, _ = read_all(p)
    assert rows == 0 and reason in rej[0][1]


def test_edges_of_the_world_are_valid(tmp_path: Path) -> None:
    p = write(tmp_path, HEADER + "A,POINT(-180 -90),POINT(180 90),2018-01-01 00:00:00,d\n")
    assert read_all(p)[0] == 1


def test_header_problems(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="lacks column"):
        TripReader(write(tmp_path, "region,origin_coord,datetime,datasource\nA,B,C,D\n"))
    with pytest.raises(FileFormatError, match="empty"):
        TripReader(write(tmp_path, ""))
    with pytest.raises(FileFormatError, match="not CSV text"):
        TripReader(write(tmp_path, b"\x00\x01\x02\xff\xfe binary"))


def test_reordered_extra_columns_bom_crlf_quotes(tmp_path: Path) -> None:
    text = (
        "\ufeffdatasource,datetime,extra,destination_coord,origin_coord,region\r\n"
        'd,2018-01-01 00:00:00,x,POINT(3 4),"POINT (1 2)",Turin\r\n'
        'd,2018-01-01 00:00:00,"multi\nline",POINT(3 4),POINT (1 2),"Tu""rin"\r\n'
        "\r\n"
        "d,2018-01-01 00:00:00,x,POINT(3 4),POINT (1 2)\r\n"
    )
    p = write(tmp_path, text)
    with TripReader(p) as r:
        assert r.header.ignored == ["extra"]
    rows, rej, _, xs = read_all(p)
    assert rows == 2 and xs == [1.0, 1.0]
    assert rej == [
        (6, "expected 6 fields, found 5", "d,2018-01-01 00:00:00,x,POINT(3 4),POINT (1 2)")
    ]


def test_invalid_utf8_rejected_alone(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        HEADER.encode()
        + b"Pr\xffague,POINT(1 2),POINT(3 4),2018-01-01 00:00:00,d\n"
        + GOOD.encode(),
    )
    rows, rej, _, _ = read_all(p)
    assert rows == 1 and rej[0][0] == 2 and "UTF-8" in rej[0][1]


def test_gzip_and_small_blocks_give_same_result(tmp_path: Path) -> None:
    lines = [GOOD] * 500 + ["B,POINT(1 2),POINT(3 4),bad,d\n"] + [GOOD] * 499
    plain = write(tmp_path, HEADER + "".join(lines))
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    a = read_all(plain, block=1000)
    b = read_all(gz)
    assert a[0] == b[0] == 999
    assert a[1] == b[1] and a[1][0][0] == 502


def test_long_line_is_rejected_and_rest_loads(tmp_path: Path) -> None:
    huge = "A," + "x" * (9 << 20) + "\n"
    p = write(tmp_path, HEADER + GOOD + huge + GOOD)
    rows, rej, _, _ = read_all(p, block=1 << 20)
    assert rows == 2 and rej[0][0] == 3 and "longer than" in rej[0][1]


@pytest.mark.parametrize("fails_on", ["threaded", "always"])
def test_pyarrow_internal_failure_loses_no_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails_on: str
) -> None:
    """pyarrow's threaded reader once failed inside ("a chunk failed converting for an unknown
    reason") on a block that parses: the block is read again, on one thread or record by record,
    and gives exactly what an undisturbed read gives."""
    import pyarrow as pa

    from service.ingest import reader

    lines = [GOOD] * 700 + ["B,POINT(1 2),POINT(3 4),bad,d\n"] + [GOOD] * 299
    p = write(tmp_path, HEADER + "".join(lines))
    expected = read_all(p, block=4096)
    original = reader.pacsv.read_csv
    calls = {"failed": 0}

    def flaky(source, read_options, **kw):  # type: ignore[no-untyped-def]
        if fails_on == "always" or read_options.use_threads:
            calls["failed"] += 1
            raise pa.ArrowException("Unknown error: a chunk failed converting")
        return original(source, read_options=read_options, **kw)

    monkeypatch.setattr(reader.pacsv, "read_csv", flaky)
    got = read_all(p, block=4096)
    assert calls["failed"] > 1
    assert got == expected
    assert got[0] == 999 and [r[0] for r in got[1]] == [702]


def test_blocks_parsed_in_parallel_keep_order_and_line_numbers(tmp_path: Path) -> None:
    """Quote-free blocks are parsed on threads while quoted ones are parsed in order: rows come
    out in file order and every rejection keeps its physical line number."""
    assert reader.PARSE_THREADS > 1
    lines, expected_bad, expected_ts = [HEADER], [], []
    line = 2
    for i in range(1, 3001):  # ~210 KB: beyond the header's first read of 64 KiB
        t = f"2018-05-28 {i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
        if i % 37 == 0:
            lines.append(f"Prague,POINT (200 50),POINT (14.5 50.1),{t},x\n")
            expected_bad.append(line)
            line += 1
        elif i % 50 == 0:  # a quoted region with a line break: one record on two lines
            lines.append(f'"Pra\ngue",POINT (14.4 50.0),POINT (14.5 50.1),{t},x\n')
            expected_ts.append(us(t.replace(" ", "T")))
            line += 2
        else:
            lines.append(f"Prague,POINT (14.4 50.0),POINT (14.5 50.1),{t},x\n")
            expected_ts.append(us(t.replace(" ", "T")))
            line += 1
    p = write(tmp_path, "".join(lines))
    for block in (256, 1000, 1 << 20):
        rows, rej, ts, _ = read_all(p, block)
        assert rows == len(expected_ts)
        assert ts == expected_ts  # file order
        assert [r[0] for r in rej] == expected_bad


# Values near the canonical spellings: every byte position mutated to a digit, a separator, a
# letter, a space, a non-ASCII digit or whitespace character; lengths one off.
_NEAR_DATETIME = st.lists(
    st.sampled_from(list("0123456789-: T.xé٣\u00a0\u3000\t")), min_size=17, max_size=21
).map("".join) | st.builds(
    lambda base, k, c: base[:k] + c + base[k + 1 :],
    st.sampled_from(["2018-05-28 09:03:41", "1999-12-31 23:59:59", "0000-00-00 00:00:00"]),
    st.integers(0, 19),
    st.sampled_from(list("0123456789-: T/é٣\u00a0")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_NEAR_DATETIME, min_size=1, max_size=40))
def test_canonical_datetimes_by_position_equal_the_regex(values: list[str]) -> None:
    """_canon_datetimes reads the canonical values by byte position: exactly the values that
    _CANON_DATETIME matches, whatever their lengths (all 19 bytes, or mixed)."""
    col = pa.array(values, pa.string())
    canon, digits = reader_validation._canon_datetimes(col)
    expected = [
        re.fullmatch(reader_validation._CANON_DATETIME.strip("^$"), v) is not None for v in values
    ]
    assert canon.tolist() == expected
    assert [bytes((digits[i] + 48).astype(np.uint8)).decode() for i in range(len(digits))] == [
        v for v, ok in zip(values, expected, strict=True) if ok
    ]
    # a null among them is not canonical, the others unchanged
    canon, _ = reader_validation._canon_datetimes(pa.array([None, *values], pa.string()))
    assert canon.tolist() == [False, *expected]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(st.sampled_from(list("ab é\t\u00a0\u2003\u3000\ufeff\x1f\u0085\u1680")), max_size=6)
        | st.sampled_from(["x" * 200, "é" * 101, "é" * 200, "a" * 201]),
        min_size=1,
        max_size=30,
    )
)
def test_name_checks_on_candidates_equal_the_whole_column(values: list[str]) -> None:
    """_names tests only the values that could fail (empty or starting with a whitespace byte;
    longer in bytes than the limit): the same reasons as testing every value with pyarrow."""
    got = np.full(len(values), None, dtype=object)
    reader_validation._names(pa.array(values, pa.string()), "region", got)
    expected = np.full(len(values), None, dtype=object)
    reader_validation._names(pa.array(values, pa.large_string()), "region", expected)  # every value
    assert got.tolist() == expected.tolist()
    assert all(r is not None for v, r in zip(values, got, strict=True) if v == "" or len(v) > 200)

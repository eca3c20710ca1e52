"""Writes the bad-input corpus next to this file (run once; the files are committed).

``python -m tests.corpus.make_corpus`` from the repository root rewrites every file
deterministically, so a reviewer can see how each binary case (gzip, zip, Parquet) was made.
What each file is and what loading it must do is listed in README.md and checked by
tests/test_corpus.py (``tests.helpers.corpus.FILE_CASES``).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import random
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
T0 = 1_600_000_000  # 2020-09-13


def log(rows: list[tuple], header: str = "user_id,item_id,timestamp", sep: str = ",") -> str:
    lines = [header.replace(",", sep)]
    lines += [sep.join(str(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


# Three users, three items, nine interactions: the shape every "loads" case is checked against.
GOOD_ROWS = [(f"u{u}", f"i{i}", T0 + 100 * u + i) for u in range(1, 4) for i in range(1, 4)]
GOOD = log(GOOD_ROWS)


def parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def zipped(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            # A fixed date keeps the bytes reproducible.
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            archive.writestr(info, content, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def files() -> dict[str, bytes]:
    rng = random.Random(7)
    good = GOOD.encode()
    out: dict[str, bytes] = {
        # --- empty and binary
        "empty.csv": b"",
        "whitespace_only.csv": b"  \n\t\n   \n",
        "only_newlines.csv": b"\n\r\n\n\n",
        "binary_random.csv": bytes(rng.randrange(256) for _ in range(2048)),
        "png_renamed.csv": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64),
        "nul_in_text.csv": good[:40] + b"\x00" + good[40:],
        "pdf_renamed.csv": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        # --- encodings
        "latin1.csv": log([("Jos\xe9", "a", T0), ("Ana", "b", T0)]).encode("latin-1"),
        "cp1252_smart_quotes.csv": log([("u1", "\u201cHat\u201d", T0)]).encode("cp1252"),
        "utf16le_bom.csv": GOOD.encode("utf-16"),  # Python writes little-endian with a BOM
        "utf16be_bom.csv": b"\xfe\xff" + GOOD.encode("utf-16-be"),
        "utf16le_no_bom.csv": GOOD.encode("utf-16-le"),
        "utf8_bom.csv": b"\xef\xbb\xbf" + good,
        "overlong_utf8.csv": log([("u1", "i1", T0)]).encode() + b"u2,\xc0\xaf,1600000001\n",
        # --- delimiters and layout
        "one_column.csv": b"user_id#item_id\n1#a\n2#b\n",
        "mixed_delimiters.csv": b"user_id,item_id,timestamp\n1;a;1600000000\n2;b;1600000001\n",
        "ragged_rows.csv": b"user_id,item_id\nu1,a\nu2,b,extra,fields\nu3,c\n",
        "semicolon_decimal_comma.csv": log(
            [("u1", "a", "4,5"), ("u2", "b", "3,0")], header="user_id;item_id;rating", sep=";"
        ).encode(),
        "tab_named_csv.csv": GOOD.replace(",", "\t").encode(),
        "crlf.csv": GOOD.replace("\n", "\r\n").encode(),
        "cr_only.csv": GOOD.replace("\n", "\r").encode(),
        "mixed_line_endings.csv": GOOD.replace("\n", "\r\n", 4).encode(),
        "quoted_delimiters.csv": (
            b'user_id,item_id,timestamp\n"u,1","i,1",1600000000\n"u,1","i ""2""",1600000001\n'
            b'"u,2","i,1",1600000002\n"u,2","i ""2""",1600000003\n'
        ),
        "unclosed_quote.csv": b'user_id,item_id\nu1,"a\nu2,b\nu3,c\n',
        "headerless_udata.data": b"1\t10\t5\t881250949\n2\t20\t3\t891717742\n1\t20\t4\t878887116\n",
        # --- header problems
        "header_only.csv": b"user_id,item_id,timestamp\n",
        "header_only_crlf.csv": b"user_id,item_id,timestamp\r\n",
        "duplicate_header.csv": b"user_id,item_id,user_id\n1,a,2\n3,b,4\n",
        "duplicate_header_recbole.inter": b"user_id:token\titem_id:token\tuser_id:float\n1\t2\t3\n",
        "missing_user_column.csv": b"shopper,item_id\n1,a\n2,b\n",
        "missing_item_column.csv": b"user_id,thing\n1,a\n2,b\n",
        "missing_both_columns.csv": b"a,b,c\n1,2,3\n4,5,6\n",
        # --- values
        "null_user_id.csv": log([("u1", "a", T0), ("", "b", T0), ("u3", "c", T0)]).encode(),
        "null_item_id.csv": log([("u1", "a", T0), ("u2", "", T0)]).encode(),
        "blank_id_spaces.csv": b"user_id,item_id\nu1,a\n   ,b\n",
        "nonnumeric_rating.csv": b"user_id,item_id,rating\nu1,a,5\nu2,b,five\n",
        "rating_nan.csv": b"user_id,item_id,rating\nu1,a,NaN\nu2,b,4\n",
        "rating_infinite.csv": b"user_id,item_id,rating\nu1,a,4\nu2,b,inf\n",
        "unparseable_timestamp.csv": b"user_id,item_id,timestamp\nu1,a,yesterday\nu2,b,soon\n",
        "mixed_timestamp_garbage.csv": (
            b"user_id,item_id,timestamp\nu1,a,2024-01-31\nu2,b,2024-02-01 10:00\nu3,c,31/31/2024\n"
        ),
        "negative_timestamp.csv": b"user_id,item_id,timestamp\nu1,a,-86400\nu2,b,-1\n",
        "timestamp_year_9999.csv": b"user_id,item_id,timestamp\nu1,a,9999-12-31\nu2,b,9999-01-01\n",
        "timestamp_overflows_int64.csv": (
            b"user_id,item_id,timestamp\nu1,a,99999999999999999999999\nu2,b,1600000000\n"
        ),
        "timestamp_1e300.csv": b"user_id,item_id,timestamp\nu1,a,1e300\nu2,b,1e300\n",
        "ids_overflow_int64.csv": log(
            [
                ("99999999999999999999999", "18446744073709551616", T0),
                ("99999999999999999999998", "18446744073709551616", T0 + 1),
                ("-9223372036854775809", "1", T0 + 2),
            ]
        ).encode(),
        "unknown_event.csv": b"user_id,item_id,event\nu1,a,view\nu2,b,teleport\n",
        # --- too little data
        "single_user.csv": log([("u1", f"i{i}", T0 + i) for i in range(5)]).encode(),
        "single_item.csv": log([(f"u{u}", "i1", T0 + u) for u in range(5)]).encode(),
        "single_user_after_rating_filter.csv": (
            b"user_id,item_id,rating\nu1,a,5\nu1,b,5\nu2,a,1\nu3,b,2\n"
        ),
        "all_filtered_by_kcore.csv": good,
        "no_rating_above_threshold.csv": b"user_id,item_id,rating\nu1,a,1\nu2,b,2\n",
        # --- size
        "over_size_limit.csv": log([(f"u{u}", f"i{u % 7}", T0 + u) for u in range(200)]).encode(),
        # --- archives and compression
        "xlsx_renamed.csv": zipped(
            {
                "[Content_Types].xml": b'<?xml version="1.0"?><Types/>',
                "_rels/.rels": b'<?xml version="1.0"?><Relationships/>',
                "xl/workbook.xml": b'<?xml version="1.0"?><workbook/>',
                "xl/worksheets/sheet1.xml": b'<?xml version="1.0"?><worksheet/>',
            }
        ),
        "xls_renamed.csv": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504),
        "zip_bomb.csv": zipped({"bomb.csv": b"0" * 2_000_000}),
        "gzip_bomb.csv.gz": gz(b"0" * 2_000_000),
        "gzip_truncated.csv.gz": gz(good * 20)[:60],
        "gzip_corrupt.csv.gz": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
        + b"not deflate data" * 4,
        "gzip_twice.csv.gz": gz(gz(good)),
        "gzip_trailing_garbage.csv.gz": gz(good) + b"this is not gzip",
        "gzip_multi_member.csv.gz": gz(GOOD.encode()[:60]) + gz(GOOD.encode()[60:]),
        "bzip2.csv": bz2.compress(good),
        "xz.csv": lzma.compress(good),
        # --- Parquet
        "parquet_list_user.parquet": parquet(
            pa.table({"user_id": pa.array([[1], [2, 3], [4]]), "item_id": [1, 2, 3]})
        ),
        "parquet_struct_item.parquet": parquet(
            pa.table({"user_id": [1, 2, 3], "item_id": pa.array([{"id": 1}, {"id": 2}, {"id": 3}])})
        ),
        "parquet_map_item.parquet": parquet(
            pa.table(
                {
                    "user_id": [1, 2],
                    "item_id": pa.array([[("a", 1)], [("b", 2)]], pa.map_(pa.string(), pa.int64())),
                }
            )
        ),
        "parquet_binary_user.parquet": parquet(
            pa.table({"user_id": pa.array([b"\xff\xfe", b"\x80"]), "item_id": [1, 2]})
        ),
        "parquet_infinite_id.parquet": parquet(
            pa.table({"user_id": [1.0, float("inf")], "item_id": [1, 2]})
        ),
        "parquet_duplicate_columns.parquet": parquet(
            pa.table([pa.array([1, 2]), pa.array([3, 4])], names=["user_id", "user_id"])
        ),
        "parquet_one_column.parquet": parquet(pa.table({"user_id": [1, 2, 3]})),
        "parquet_no_rows.parquet": parquet(
            pa.table({"user_id": pa.array([], pa.int64()), "item_id": pa.array([], pa.int64())})
        ),
        "parquet_binary_text_ids.parquet": parquet(
            pa.table(
                {
                    "user_id": pa.array([b"u1", b"u2", b"u1"]),  # text stored as binary (Spark)
                    "item_id": pa.array([b"i1", b"i2", b"i2"]),
                }
            )
        ),
        "parquet_unmapped_list_column.parquet": parquet(
            pa.table({"user_id": [1, 2, 1], "item_id": [10, 20, 20], "tags": [["a"], [], None]})
        ),
        "parquet_float_ids.parquet": parquet(
            pa.table({"user_id": [1.0, 2.0, 1.0], "item_id": [3.0, 1e30, 3.0]})
        ),
        "parquet_truncated.parquet": parquet(pa.table({"user_id": [1, 2], "item_id": [3, 4]}))[
            :-40
        ],
        "not_parquet.parquet": good,
        # --- hostile but valid text: kept verbatim, never interpreted
        "formula_injection_ids.csv": log(
            [
                ("=cmd|' /C calc'!A0", "+SUM(1)", T0),
                ("@x", "-2+3", T0 + 1),
                ("=cmd|' /C calc'!A0", "-2+3", T0 + 2),
            ]
        ).encode(),
        "html_script_ids.csv": log(
            [
                ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>", T0),
                ("<b>bold</b>", "<img src=x onerror=alert(1)>", T0 + 1),
                ("<b>bold</b>", "[link](javascript:alert(1))", T0 + 2),
            ]
        ).encode(),
        "bidi_and_emoji_ids.csv": log(
            [
                ("\u202eevil\u202c", "\U0001f6d2 cart", T0),
                ("\u7528\u6237", "\U0001f6d2 cart", T0 + 1),
                ("\u7528\u6237", "caf\u00e9", T0 + 2),
            ]
        ).encode(),
        # --- catalogs (paired with good_log.csv by the test)
        "good_log.csv": good,
        "catalog_formula_titles.csv": (
            b"item_id,title,category\n"
            b'i1,"=cmd|\' /C calc\'!A0",=HYPERLINK("http://x")\n'
            b"i2,+SUM(1),@x\n"
            b'i3,-2+3,"=1+1"\n'
        ),
        "catalog_html_titles.csv": (
            b"item_id,title,category\n"
            b"i1,<script>alert(1)</script>,<b>bold</b>\n"
            b'i2,"<img src=x onerror=""alert(1)"">",**markdown**\n'
            b"i3,[click](javascript:alert(1)),$x^2$\n"
        ),
        "catalog_ids_match_nothing.csv": b"item_id,title\nzz1,Hat\nzz2,Socks\n",
        "catalog_no_title_column.csv": b"item_id,colour\ni1,red\ni2,blue\n",
        "catalog_nonnumeric_price.csv": b"item_id,title,price\ni1,Hat,$5\ni2,Socks,4\n",
    }
    out.update(json_lines())
    return out


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def json_lines() -> dict[str, bytes]:
    """JSON Lines cases: the same checks and sentences as CSV, naming the line and field."""
    good = [{"user_id": u, "item_id": i, "timestamp": t} for u, i, t in GOOD_ROWS]
    numeric = [{"user_id": 1, "item_id": 10, "timestamp": T0}, {"user_id": 2, "item_id": 10.0}]
    numeric[1]["timestamp"] = T0 + 1
    numeric.append({"user_id": 1, "item_id": 20, "timestamp": T0 + 2})
    first, second, *rest = good
    return {
        "good_log.jsonl": jsonl(good),
        "good_log.ndjson.gz": gz(jsonl(good)),
        "jsonl_blank_lines_crlf.jsonl": jsonl(good[:4]).replace(b"\n", b"\r\n")
        + b"\n   \n"
        + jsonl(good[4:]),
        "jsonl_numeric_ids.jsonl": jsonl(numeric),
        "jsonl_nested_user.jsonl": jsonl(
            [{**row, "user_id": {"id": row["user_id"]}} for row in good]
        ),
        "jsonl_nested_later.jsonl": jsonl([first, second, {**rest[0], "user_id": {"id": "u9"}}]),
        "jsonl_missing_item.jsonl": jsonl([first]) + b"\n" + jsonl([second, {"user_id": "u3"}]),
        "jsonl_mixed_id_types.jsonl": jsonl([{**first, "user_id": 1}, second]),
        "jsonl_invalid_line.jsonl": jsonl([first]) + b'{"user_id": "u2", "item_id": "i1"\n',
        "json_array.json": json.dumps(good).encode(),
        "jsonl_two_objects_per_line.jsonl": jsonl([first])[:-1] + b" " + jsonl(good[1:]),
        "jsonl_huge_int_ids.jsonl": jsonl(
            [{**row, "item_id": 10**22 + k} for k, row in enumerate(good)]
        ),
        "jsonl_duplicate_field.jsonl": b'{"user_id": "u1", "user_id": "u2", "item_id": "i1"}\n',
        "jsonl_string_lines.jsonl": b'"u1,i1"\n"u2,i2"\n',
        "jsonl_latin1.jsonl": jsonl([first])
        + '{"user_id": "Jos\u00e9", "item_id": "i1"}\n'.encode("latin-1"),
        "jsonl_bad_timestamp.jsonl": jsonl(
            [{**first, "timestamp": "2020-09-13 12:28:21"}, {**second, "timestamp": "yesterday"}]
        ),
        "jsonl_one_field.jsonl": b'{"user_id": "u1"}\n{"user_id": "u2"}\n',
        "jsonl_unknown_event.jsonl": jsonl(
            [{**first, "event": "view"}, {**second, "event": "teleport"}]
        ),
    }


def main() -> None:
    for name, content in files().items():
        (HERE / name).write_bytes(content)
    print(f"wrote {len(files())} files to {HERE}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/seeds/<target>/ (run from anywhere).

The seeds are committed; this script only documents where they came from and can rebuild them.
Layouts: see the header comment of each fuzz/checks/<target>.rs.
"""
import gzip
import io
import os
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

LP = (
    b"# telegraf\n"
    b"cpu,host=server01,region=us-west usage_idle=98.5,usage_user=1.2 1700000000000000000\n"
    b"mem,host=server01 used=1234567i,available_percent=61.3 1700000000000000000\n"
    b"disk,host=server01,path=/var/lib used_percent=42.0\n"
)


def gz(data, name=None, mtime=0, level=6):
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name or "", mode="wb", fileobj=buf, mtime=mtime, compresslevel=level) as f:
        f.write(data)
    return buf.getvalue()


def chunked(*pieces, trailer=b""):
    out = b""
    for p in pieces:
        out += b"%x\r\n" % len(p) + p + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


FORM = b"db=telegraf&q=SHOW+MEASUREMENTS+LIMIT+100&u=a&p=b"
ERR = b'{"error":"unable to parse \'cpu v=\': missing field value"}\n'


def http_head():
    body = LP
    gzbody = gz(LP)
    return {
        "write_content_length": b"POST /write?db=telegraf&precision=ns HTTP/1.1\r\nHost: proxy:6666\r\n"
        b"User-Agent: Telegraf/1.28\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body,
        "write_chunked": b"POST /write?db=telegraf HTTP/1.1\r\nHost: proxy\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(LP[:40], LP[40:97], LP[97:], trailer=b"X-Checksum: abc\r\n"),
        "write_chunked_ext_lf": b"POST /write?db=x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nm v=1\r\nA\nabcdefghij\n0\n\n",
        "write_gzip_expect": b"POST /write?db=x&rp=autogen&u=admin&p=secret HTTP/1.1\r\nHost: proxy\r\n"
        b"Content-Encoding: gzip\r\nExpect: 100-continue\r\nConnection: keep-alive\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunked(gzbody[:10], gzbody[10:]),
        "query_get_grafana": b"GET /query?db=telegraf&epoch=ms&q=SELECT%20mean(%22usage_idle%22)%20FROM%20%22cpu%22"
        b"%20WHERE%20time%20%3E%3D%20now()%20-%201h%20GROUP%20BY%20time(10s)%20fill(null) HTTP/1.1\r\n"
        b"Host: proxy\r\nAuthorization: Basic dXNlcjpwYXNz\r\nAccept: application/json\r\n"
        b"Accept-Encoding: deflate, gzip;q=1.0, *;q=0.5\r\n\r\n",
        "query_post_form": b"POST /query HTTP/1.1\r\nHost: proxy\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(FORM) + FORM,
        "ping_http10": b"GET /ping HTTP/1.0\r\n\r\n",
        "pipelined": b"GET /ping HTTP/1.1\r\nHost: a\r\n\r\nPOST /write?db=x HTTP/1.1\r\nContent-Length: 8\r\n"
        b"Content-Length: 8\r\nConnection: close\r\n\r\nm v=1 1\n",
        "bad_te": b"POST /write HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\nhello",
        "resp_204": b"HTTP/1.1 204 No Content\r\nContent-Type: application/json\r\nRequest-Id: 1b2c\r\n"
        b"X-Influxdb-Build: OSS\r\nX-Influxdb-Version: 1.8.10\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n",
        "resp_chunked_json": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b'{"results":[{"statement_id":0,"series":[{"name":"cpu",', b'"columns":["time","mean"],'
                  b'"values":[[1700000000000,98.5]]}]}]}\n'),
        "resp_http10_close": b"HTTP/1.0 200 OK\r\nContent-Type: text/csv\r\n\r\nname,tags,time,mean\ncpu,,1,2\n",
        "resp_400_length": b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(ERR) + ERR,
        "resp_100_continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    }


def gunzip():
    multi = gz(b"a v=1\n") + gz(b"b v=2\n") + gz(b"c v=3\n" * 500)
    raw_deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    stored = gz(LP, level=0)
    return {
        "raw_telegraf": b"\x00\x00\x00" + gz(LP),
        "raw_with_name": b"\x00\x00\x00" + gz(LP * 20, name="metrics.lp", mtime=1700000000),
        "raw_multi_member": b"\x00\x00\x00" + multi,
        "raw_stored": b"\x00\x00\x00" + stored,
        "raw_empty_member": b"\x00\x00\x00" + gz(b""),
        "raw_small_limit": bytes([0xC0, 0, 4]) + gz(b"x v=1\n" * 2000),
        "raw_not_gzip": b"\x00\x00\x00" + raw_deflate.compress(LP) + raw_deflate.flush(),
        "built_one_member": b"\x01\x06\x00" + LP,
        "built_three_members_level12": bytes([0x05, 0x0C, 0]) + LP,
        "built_repeated_past_limit": bytes([0x01, 0xF1, 0]) + LP * 16,
        "built_exact_limit": bytes([0xE1, 0x01, 0]) + LP,
        "built_one_short_of_limit": bytes([0xE1, 0x01, 1]) + LP,
        "built_truncated": bytes([0x09, 0x06, 3]) + LP,
        "built_trailing_garbage": bytes([0x13, 0x06, ord("x")]) + LP,
        "built_empty": b"\x01\x00\x00",
    }


def lines():
    return {
        "telegraf": LP,
        "crlf_blank_comments": b"\r\n   \n# comment\n  # indented\r\ncpu v=1 10\r\n\t disk v=2\r\n\r\n\x00\n",
        "escapes": b"my\\ m\\,x,tag\\ key=tag\\,value,t2=a\\=b field\\ key=1i 1\n"
        b"cpu,t=a\\\nb v=1\nweird\\\"name v=2\n",
        "quoted_strings": b'log,host=a msg="line one\nline two" 5\nlog msg="a b",n=1 7\n'
        b'm s="say \\"hi\\"" 1\nc"pu,t="x v=1\n',
        "bad_lines": b"cpu\ncpu,host=a\n,t=1 v=1\nm s=\"open\nm\\ x\ncpu   \n",
        "no_final_newline": b"a v=1\nb v=2 3\nc,x=1 y=\"z\" 4",
        "double_cr": b"a v=1\r\r\nb v=2\r",
    }


def line_verdict():
    return {
        "telegraf": LP,
        "every_reason": b"cpu\ncpu \n,t=1 v=1\ncpu,=x v=1\ncpu,a v=1\ncpu,a=b=c v=1\ncpu,a=1,a=2 v=1\n"
        b"cpu =1\ncpu v=\ncpu v=1i2\ncpu v=1u\ncpu v=1e400\ncpu v=tru\nm s=\"open\ncpu v=1,\n"
        b"cpu v=99999999999999999999i\ncpu v=1 x\ncpu v=1 99999999999999999999\ncpu v=1 -\n"
        b"cpu v=1 9223372036854775807\ncpu v=1 1 2\n",
        "values": b"m a=1,b=-1.5,c=.5,d=1.,e=1e-3,f=1E+5,g=-9223372036854775808i,h=t,i=True,j=FALSE,"
        b"k=\"s \\\"q\\\" \\\\\",l=00000000000000000000000000001i 1700000000000000000\n",
        "tags_unsorted": b"m,b=1,a=2,c=3 v=1 -5\nm,z=1,y=2,z=3 v=1\nm,a==b v=1\n",
        "escapes_and_quotes": b"a\\\\,b=c v=1\nmy\\ m\\,x,t\\ k=v\\=w f\\ k=\"x\ny\" 1\n"
        b" m=\"x\ny\" v=1\ncpu,a=b\\ v=1\ncpu v=1\\\n",
        "crlf": b"cpu v=1\r\ncpu v=1 5\r\n\r\n  \r\ncpu v=\r\n",
    }


def influxql():
    return {
        "grafana_timeseries": b'SELECT mean("usage_idle") FROM "telegraf"."autogen"."cpu" WHERE ("host" =~ /^server0[12]$/)'
        b" AND time >= now() - 6h and time <= now() GROUP BY time(1m), \"host\" fill(null) ORDER BY time ASC",
        "grafana_variables": b'SHOW TAG VALUES ON "telegraf" FROM "cpu" WITH KEY = "host" WHERE "region" = \'us-west\' LIMIT 100',
        "two_statements": b"SELECT last(\"value\") FROM \"mem\" WHERE time > now() - 5m; SHOW MEASUREMENTS LIMIT 10 OFFSET 5;",
        "subquery_limit": b"SELECT max(\"m\") FROM (SELECT mean(\"v\") AS \"m\" FROM cpu WHERE time > 1700000000s "
        b"GROUP BY time(1h) LIMIT 5) WHERE time > 0 GROUP BY * LIMIT 2 OFFSET 1 SLIMIT 3 SOFFSET 1 tz('Europe/Paris')",
        "comments_and_regex": b"SELECT a FROM x WHERE c = 'it''s' AND d =~ /a\\/b/ -- c\n/* d */ LIMIT 1",
        "into_and_on": b"SELECT * INTO \"archive\".\"autogen\".:MEASUREMENT FROM \"telegraf\".\"autogen\"./.*/ "
        b"WHERE time > now() - 1d GROUP BY *",
        "admin": b"CREATE RETENTION POLICY \"one_week\" ON \"telegraf\" DURATION 7d REPLICATION 1 DEFAULT; "
        b"DROP SERIES FROM cpu WHERE host = 'a'; SHOW DIAGNOSTICS",
        "explain_params": b"EXPLAIN ANALYZE SELECT count(\"v\") FROM \"c\\\"pu\" WHERE $x > 1 AND \"\xc2\xb5\" = 5\xc2\xb5s",
        "unterminated": b"SELECT \"a FROM b; SELECT 'x",
    }


def varint(n):
    out = b""
    n &= (1 << 64) - 1
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def field(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def label(name, value):
    return field(1, field(1, name) + field(2, value))


def sample(value, ts):
    import struct

    return field(2, b"\x09" + struct.pack("<d", value) + b"\x10" + varint(ts))


def series(labels, samples):
    return field(1, b"".join(label(n, v) for n, v in labels) + b"".join(sample(v, t) for v, t in samples))


def snappy_literal(data):
    """A valid snappy block holding `data` as literals only (no compression needed for seeds)."""
    out = varint(len(data))
    for i in range(0, len(data), 65536):
        chunk = data[i : i + 65536]
        n = len(chunk) - 1
        if n < 60:
            out += bytes([n << 2])
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2, n & 0xFF, n >> 8])
        out += chunk
    return out


PROM_WRITE = (
    series([(b"__name__", b"http_requests_total"), (b"job", b"api"), (b"code", b"200")], [(12.0, 1700000000000), (13.5, 1700000015000)])
    + series([(b"__name__", b"up"), (b"instance", b"a b,c=d"), (b"empty", b"")], [(float("nan"), 1), (1.0, -1)])
    + series([(b"job", b"x"), (b"job", b"y"), (b"", b"v")], [(float("inf"), 2), (1e300, 3)])
)


def prom_write():
    # Layout: [mode, payload]; mode & 1: the payload is also a snappy body.
    return {
        "proto": b"\x00" + PROM_WRITE,
        "snappy": b"\x01" + snappy_literal(PROM_WRITE),
        "snappy_small_limit": b"\x03" + snappy_literal(PROM_WRITE),
        "odd_labels": b"\x00" + series([(b"__name__", b"#c"), (b"t", b"a\\,b")], [(1.0, 1)])
        + series([(b"__name__", b"\tm"), (b"t", b"a\nb")], [(1.0, 1)]),
        "bomb": b"\x01\xff\xff\xff\xff\x0f",
    }


def matcher(kind, name, value):
    return field(3, b"\x08" + varint(kind) + field(2, name) + field(3, value))


def prom_read():
    q1 = b"\x08" + varint(1600000000000) + b"\x10" + varint(1800000000000) + matcher(0, b"__name__", b"up") + matcher(2, b"job", b"a.*")
    q2 = b"\x08" + varint(0) + b"\x10" + varint(1) + matcher(3, b"__name__", b"x|y") + matcher(7, b"k", b"v")
    ts = series([(b"__name__", b"up"), (b"job", b"a")], [(1.0, 10), (2.0, 20)]) + series([(b"job", b"a"), (b"__name__", b"up")], [(3.0, 15), (4.0, 20)])
    return {
        "read_request": field(1, q1) + field(1, q2) + b"\x12\x02\x00\x01",
        "read_response": field(1, ts) + field(1, b""),
    }


def main():
    for target, seeds in [("http_head", http_head()), ("gunzip", gunzip()), ("lines", lines()), ("influxql", influxql()),
                         ("prom_write", prom_write()), ("prom_read", prom_read()),
                         ("line_verdict", line_verdict())]:
        d = os.path.join(HERE, "seeds", target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()

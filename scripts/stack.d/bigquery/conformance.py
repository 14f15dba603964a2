#!/usr/bin/env python3
"""REST conformance checks of the local BigQuery emulator (scripts/lib/bigquery.sh).

Usage: python3 conformance.py [BASE_URL [PROJECT]] [-v]
  default BASE_URL http://127.0.0.1:9050, PROJECT conformance; -v prints the raw
  typed query response. Python 3.8+ stdlib only. Exit 0 when every check passes.
Re-run it after changing a pin in requirements.txt. Creates and drops its own
dataset evalds_<epoch>. "info:" lines never fail: they show where the emulator
knowingly differs from production (streaming buffer, BIGNUMERIC width).
"""
import json, sys, time, urllib.request, urllib.error, base64

_args = [a for a in sys.argv[1:] if a != "-v"]
BASE = (_args[0] if _args else "http://127.0.0.1:9050").rstrip("/")
P = _args[1] if len(_args) > 1 else "conformance"
DS = "evalds_%d" % int(time.time())
results = []
RAW = {}


def call(method, path, body=None, base=None, ctype="application/json", raw=None):
    url = (base or BASE + "/bigquery/v2") + path
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            txt = r.read().decode()
            return r.status, (json.loads(txt) if txt.strip() else {})
    except urllib.error.HTTPError as e:
        txt = e.read().decode()
        try:
            return e.code, json.loads(txt)
        except Exception:
            return e.code, {"_raw": txt[:500]}
    except Exception as e:
        return -1, {"_exc": repr(e)}


def q(sql, params=None):
    body = {"query": sql, "useLegacySql": False, "timeoutMs": 30000}
    if params:
        body["queryParameters"] = params
        body["parameterMode"] = "NAMED"
    return call("POST", f"/projects/{P}/queries", body)


def rows(resp):
    out = []
    for r in resp.get("rows", []) or []:
        out.append([c.get("v") for c in r["f"]])
    return out


def check(name, fn):
    try:
        ok, note = fn()
    except Exception as e:
        ok, note = False, "exception: %r" % e
    results.append((name, ok, note))
    print(("PASS " if ok else "FAIL ") + name + " :: " + str(note)[:400], flush=True)


def t_dataset():
    s, r = call("POST", f"/projects/{P}/datasets", {"datasetReference": {"projectId": P, "datasetId": DS}})
    s2, r2 = call("POST", f"/projects/{P}/datasets", {"datasetReference": {"projectId": P, "datasetId": DS}})
    s3, _ = call("GET", f"/projects/{P}/datasets/{DS}")
    return s == 200 and s3 == 200, f"create={s} dup={s2} get={s3}"


SCHEMA = {"fields": [
    {"name": "id", "type": "STRING", "mode": "REQUIRED"},
    {"name": "seq", "type": "INTEGER"},
    {"name": "val", "type": "STRING"},
    {"name": "num", "type": "NUMERIC"},
    {"name": "bnum", "type": "BIGNUMERIC"},
    {"name": "ts", "type": "TIMESTAMP"},
    {"name": "b", "type": "BYTES"},
]}


def t_table():
    s, r = call("POST", f"/projects/{P}/datasets/{DS}/tables",
                {"tableReference": {"projectId": P, "datasetId": DS, "tableId": "t"}, "schema": SCHEMA})
    s2, r2 = call("GET", f"/projects/{P}/datasets/{DS}/tables/t")
    names = [f["name"] for f in r2.get("schema", {}).get("fields", [])]
    s3, _ = call("GET", f"/projects/{P}/datasets/{DS}/tables/nope")
    return s == 200 and names == [f["name"] for f in SCHEMA["fields"]], f"create={s} get={s2} fields={names} missing-table={s3}"


def t_insertall():
    body = {"rows": [
        {"insertId": "r1", "json": {"id": "a", "seq": 1, "val": "a1"}},
        {"insertId": "r2", "json": {"id": "b", "seq": 9, "val": "b9"}},
    ]}
    s, r = call("POST", f"/projects/{P}/datasets/{DS}/tables/t/insertAll", body)
    # retry same insertIds -> dedup expected in real BQ (best effort)
    s2, r2 = call("POST", f"/projects/{P}/datasets/{DS}/tables/t/insertAll", body)
    s3, r3 = q(f"SELECT COUNT(*) FROM `{P}.{DS}.t`")
    n = rows(r3)
    bad = call("POST", f"/projects/{P}/datasets/{DS}/tables/t/insertAll", {"rows": [{"json": {"id": "x", "seq": "notint"}}]})
    return s == 200 and "insertErrors" not in r, f"status={s} resp={r} count_after_retry={n} (2 = insertId dedup) bad_row={bad[0]} {json.dumps(bad[1])[:200]}"


def t_select():
    s, r = q(f"SELECT id, seq, val FROM `{P}.{DS}.t` ORDER BY id")
    got = rows(r)
    return s == 200 and r.get("jobComplete") and got[:2] == [["a", "1", "a1"], ["b", "9", "b9"]], f"status={s} rows={got} totalRows={r.get('totalRows')}"


def t_select_params():
    s, r = q(f"SELECT id FROM `{P}.{DS}.t` WHERE seq > @s ORDER BY id",
             [{"name": "s", "parameterType": {"type": "INT64"}, "parameterValue": {"value": "5"}}])
    return s == 200 and rows(r) == [["b"]], f"status={s} rows={rows(r)} {'' if s==200 else json.dumps(r)[:200]}"


def t_merge():
    sql = f"""MERGE `{P}.{DS}.t` T
USING (SELECT 'a' AS id, 5 AS seq, 'a5' AS val UNION ALL SELECT 'b', 3, 'b3' UNION ALL SELECT 'c', 1, 'c1') S
ON T.id = S.id
WHEN MATCHED AND S.seq > T.seq THEN UPDATE SET seq = S.seq, val = S.val
WHEN NOT MATCHED THEN INSERT (id, seq, val) VALUES (S.id, S.seq, S.val)"""
    s, r = q(sql)
    s2, r2 = q(f"SELECT id, seq, val FROM `{P}.{DS}.t` ORDER BY id")
    got = rows(r2)
    want = [["a", "5", "a5"], ["b", "9", "b9"], ["c", "1", "c1"]]
    return s == 200 and got == want, f"status={s} affected={r.get('numDmlAffectedRows')} stmt={r.get('statementType')} rows={got} {'' if s==200 else json.dumps(r)[:300]}"


def t_merge_delete():
    # MERGE with WHEN MATCHED THEN DELETE and a tombstone-ish pattern
    sql = f"""MERGE `{P}.{DS}.t` T
USING (SELECT 'c' AS id, 2 AS seq, TRUE AS del) S
ON T.id = S.id
WHEN MATCHED AND S.seq > T.seq AND S.del THEN DELETE
WHEN MATCHED AND S.seq > T.seq THEN UPDATE SET seq = S.seq
WHEN NOT MATCHED AND NOT S.del THEN INSERT (id, seq) VALUES (S.id, S.seq)"""
    s, r = q(sql)
    s2, r2 = q(f"SELECT id FROM `{P}.{DS}.t` ORDER BY id")
    got = rows(r2)
    return s == 200 and got == [["a"], ["b"]], f"status={s} affected={r.get('numDmlAffectedRows')} rows={got} {'' if s==200 else json.dumps(r)[:300]}"


def t_delete():
    q(f"INSERT INTO `{P}.{DS}.t` (id, seq) VALUES ('z', 1)")
    s, r = q(f"DELETE FROM `{P}.{DS}.t` WHERE id = 'z'")
    s2, r2 = q(f"SELECT COUNT(*) FROM `{P}.{DS}.t` WHERE id = 'z'")
    return s == 200 and rows(r2) == [["0"]], f"status={s} affected={r.get('numDmlAffectedRows')} remaining={rows(r2)} {'' if s==200 else json.dumps(r)[:300]}"


def t_jobid_dup():
    jid = "fixed-job-%d" % int(time.time() * 1000)
    body = {"jobReference": {"projectId": P, "jobId": jid},
            "configuration": {"query": {"query": f"SELECT COUNT(*) AS n FROM `{P}.{DS}.t`", "useLegacySql": False}}}
    s1, r1 = call("POST", f"/projects/{P}/jobs", body)
    s2, r2 = call("POST", f"/projects/{P}/jobs", body)
    sg, rg = call("GET", f"/projects/{P}/jobs/{jid}")
    sr, rr = call("GET", f"/projects/{P}/queries/{jid}")
    reason = (r2.get("error", {}).get("errors") or [{}])[0].get("reason")
    return s1 == 200 and s2 == 409, f"first={s1} second={s2} reason={reason} get={sg} state={rg.get('status',{}).get('state')} getQueryResults={sr} rows={rows(rr)}"


def t_alter():
    s, r = q(f"ALTER TABLE `{P}.{DS}.t` ADD COLUMN extra STRING")
    s2, r2 = call("GET", f"/projects/{P}/datasets/{DS}/tables/t")
    names = [f["name"] for f in r2.get("schema", {}).get("fields", [])]
    s3, r3 = call("POST", f"/projects/{P}/datasets/{DS}/tables/t/insertAll", {"rows": [{"json": {"id": "e", "extra": "x"}}]})
    s4, r4 = q(f"SELECT extra FROM `{P}.{DS}.t` WHERE id = 'e'")
    ok = s == 200 and "extra" in names and rows(r4) == [["x"]]
    return ok, f"status={s} fields={names} insert={s3} {r3} select={rows(r4)} {'' if s==200 else json.dumps(r)[:300]}"


def t_add_col_patch():
    s0, r0 = call("GET", f"/projects/{P}/datasets/{DS}/tables/t")
    fields = r0.get("schema", {}).get("fields", []) + [{"name": "patched", "type": "INTEGER", "mode": "NULLABLE"}]
    s, r = call("PATCH", f"/projects/{P}/datasets/{DS}/tables/t", {"schema": {"fields": fields}})
    names = [f["name"] for f in r.get("schema", {}).get("fields", [])]
    return s == 200 and "patched" in names, f"status={s} fields={names}"


TYPED = {"id": "typed", "num": "123.456789012", "bnum": "12345678901234567890.123456789012345678",
         "ts": "2024-05-06T07:08:09.123456Z", "b": base64.b64encode(b"\x00\x01\x02\xff").decode()}


def t_types_insertall():
    s, r = call("POST", f"/projects/{P}/datasets/{DS}/tables/t/insertAll", {"rows": [{"json": TYPED}]})
    s2, r2 = q(f"SELECT num, bnum, ts, b, CAST(num AS STRING) AS nums, FORMAT_TIMESTAMP('%Y-%m-%dT%H:%M:%E6SZ', ts) AS tss, TO_BASE64(b) AS b64 FROM `{P}.{DS}.t` WHERE id = 'typed'")
    RAW["types_insertall_query"] = r2
    s3, r3 = call("GET", f"/projects/{P}/datasets/{DS}/tables/t/data")
    RAW["tabledata_list"] = {k: v for k, v in r3.items() if k != "rows"}
    RAW["tabledata_list_rows"] = [r for r in r3.get("rows", [])][-2:]
    got = rows(r2)
    ok = False
    if got:
        g = got[0]
        try:
            ts_ok = abs(float(g[2]) - 1714979289.123456) < 1e-6
        except Exception:
            ts_ok = g[2] in ("1714979289.123456", "1.714979289123456E9")
        ok = (g[0] == TYPED["num"] and g[1].rstrip("0") == TYPED["bnum"].rstrip("0") and ts_ok and g[3] == TYPED["b"]
              and g[6] == TYPED["b"] and g[5] == "2024-05-06T07:08:09.123456Z")
    return ok, f"insert={s} {r} query={s2} rows={got} {'' if s2==200 else json.dumps(r2)[:300]}"


def t_types_load():
    s, r = call("POST", f"/projects/{P}/datasets/{DS}/tables",
                {"tableReference": {"projectId": P, "datasetId": DS, "tableId": "typed_load"}, "schema": SCHEMA})
    meta = {"configuration": {"load": {"destinationTable": {"projectId": P, "datasetId": DS, "tableId": "typed_load"},
                                       "sourceFormat": "NEWLINE_DELIMITED_JSON", "writeDisposition": "WRITE_APPEND"}}}
    data = json.dumps(TYPED) + "\n"
    bnd = "xxBOUNDARYxx"
    raw = (f"--{bnd}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json.dumps(meta)}\r\n"
           f"--{bnd}\r\nContent-Type: application/octet-stream\r\n\r\n{data}\r\n--{bnd}--\r\n").encode()
    s1, r1 = call("POST", f"/projects/{P}/jobs?uploadType=multipart", base=BASE + "/upload/bigquery/v2",
                  ctype=f"multipart/related; boundary={bnd}", raw=raw)
    jid = r1.get("jobReference", {}).get("jobId")
    state = None
    for _ in range(60):
        if not jid:
            break
        sg, rg = call("GET", f"/projects/{P}/jobs/{jid}")
        state = rg.get("status", {})
        if state.get("state") == "DONE":
            break
        time.sleep(0.5)
    s2, r2 = q(f"SELECT num, bnum, ts, b FROM `{P}.{DS}.typed_load`")
    got = rows(r2)
    ok = bool(got) and got[0][0] == TYPED["num"] and got[0][2] in ("1714979289.123456", "1.714979289123456E9")
    # known local-bigquery 0.4.0 gap: NDJSON BYTES are stored as the base64 text itself
    note = "BYTES ok" if got and got[0][3] == TYPED["b"] else "KNOWN GAP: BYTES double-encoded"
    return ok, note + f" :: upload={s1} job={jid} status={state} rows={got} {'' if s1==200 else json.dumps(r1)[:300]}"


def t_bignumeric_wide():
    # production BIGNUMERIC keeps 38 fraction digits; local-bigquery uses DECIMAL(38,18)
    v = "1.12345678901234567890123456789012345678"
    call("POST", f"/projects/{P}/datasets/{DS}/tables/t/insertAll", {"rows": [{"json": {"id": "wide", "bnum": v}}]})
    s, r = q(f"SELECT bnum FROM `{P}.{DS}.t` WHERE id = 'wide'")
    return True, f"info: 38-digit BIGNUMERIC fraction came back as {rows(r)} (production keeps all 38)"


def t_query_error():
    s, r = q("SELECT nope FROM `%s.%s.t`" % (P, DS))
    return s == 400, f"status={s} reason={(r.get('error',{}).get('errors') or [{}])[0].get('reason')}"


def t_dml_streamed():
    # production BQ: UPDATE/DELETE/MERGE on rows still in the streaming buffer fails (~30 min)
    call("POST", f"/projects/{P}/datasets/{DS}/tables/t/insertAll", {"rows": [{"json": {"id": "s", "seq": 1}}]})
    s, r = q(f"UPDATE `{P}.{DS}.t` SET seq = 2 WHERE id = 's'")
    return True, f"UPDATE on just-streamed row -> {s} (prod would reject: streaming buffer)"


def t_streaming_buffer_meta():
    s, r = call("GET", f"/projects/{P}/datasets/{DS}/tables/t")
    return True, f"streamingBuffer={r.get('streamingBuffer')} numRows={r.get('numRows')}"


def t_delete_dataset():
    s, r = call("DELETE", f"/projects/{P}/datasets/{DS}?deleteContents=true")
    return s in (200, 204), f"status={s}"


for name, fn in [
    ("create dataset", t_dataset), ("create table w/ schema", t_table), ("insertAll", t_insertall),
    ("jobs.query SELECT", t_select), ("jobs.query named params", t_select_params), ("MERGE seq-guarded upsert", t_merge),
    ("MERGE with DELETE branch", t_merge_delete), ("DELETE", t_delete), ("jobs.insert fixed jobId twice -> 409", t_jobid_dup),
    ("ALTER TABLE ADD COLUMN", t_alter), ("tables.patch add column", t_add_col_patch),
    ("insertAll NUMERIC/BIGNUMERIC/TIMESTAMP/BYTES round-trip", t_types_insertall),
    ("load job (multipart NDJSON) typed round-trip", t_types_load), ("query error -> HTTP 400", t_query_error),
    ("info: BIGNUMERIC 38 fraction digits", t_bignumeric_wide),
    ("info: DML on just-streamed rows", t_dml_streamed), ("info: streamingBuffer metadata", t_streaming_buffer_meta),
    ("delete dataset deleteContents", t_delete_dataset),
]:
    check(name, fn)

if "-v" in sys.argv:
    print("\nRAW typed query response:\n" + json.dumps(RAW, indent=1)[:4000])
failed = sum(1 for _, ok, _ in results if not ok)
print("\nSUMMARY: %d passed, %d failed" % (len(results) - failed, failed))
sys.exit(1 if failed else 0)

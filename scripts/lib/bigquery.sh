# shellcheck shell=bash
# bigquery.sh: the local BigQuery emulator of scripts/stack. It serves the
# BigQuery REST API v2 on http://127.0.0.1:9050/bigquery/v2 (and the Storage
# Read/Write gRPC API on 127.0.0.1:9060) for projector's tests, with no
# credentials: any project id works, send any dummy bearer token.
# Sourced by scripts/stack (after common.sh when it exists; every helper used
# here has a private fallback, so the file also works on its own).
# Defines bigquery_up, bigquery_down, bigquery_status, BIGQUERY_VERSION.
#
# Install: $PROJECTOR_CACHE/bigquery/local-bigquery-<ver>-<req hash>/
#            venv/    Python >= 3.13 venv, from scripts/stack.d/bigquery/requirements.txt
#            home/    the emulator's $HOME: home/.duckdb/extensions/v1.5.5/linux_amd64/
#                     holds ducklake, icu, spatial (taken from PyPI wheels)
# State:   $PROJECTOR_STACK_DIR/bigquery/{data/,bigquery.log,bigquery.pid}
#
# ---------------------------------------------------------------------------
# Which emulator, and why (measured 2026-11 on the 2-core/24 GiB Debian 12 box;
# scripts/stack.d/bigquery/conformance.py re-runs the REST checks)
#
# CHOSEN: local-bigquery 0.4.0 (PyPI; GoogleSQL translated by sqlglot, run on
#   DuckDB 1.5.5 + DuckLake files in data/).
#   - first `up` from an empty cache: 28-34 s (venv + ~300 MB of wheels, no
#     compiling; 767 MB on disk); warm `up`: 2-4 s to a passing probe; `down`
#     < 1 s; ~350 MB RSS idle. Data persists across down/up.
#   - passes every REST check we need: datasets/tables create+get (duplicate
#     -> 409, missing -> 404), insertAll (insertId dedup, per-row
#     insertErrors), jobs.query SELECT and named parameters, a seq-guarded
#     MERGE upsert from a subquery, MERGE ... THEN DELETE, DELETE,
#     jobs.insert with one fixed jobId twice (second -> 409 "duplicate"),
#     ALTER TABLE ADD COLUMN, tables.patch, NUMERIC/BIGNUMERIC/TIMESTAMP/BYTES
#     through insertAll, query errors as HTTP 400 "invalidQuery".
#   - duckdb is pinned to 1.5.5, not the >=2.0 that local-bigquery declares:
#     2.x fetches its extensions (ducklake, icu) from the network at run
#     time, which fails offline; 1.5.5's extensions ship as PyPI wheels
#     (duckdb-extension-*). Hence pip --no-deps over a fully pinned list.
# REJECTED: goccy/bigquery-emulator v0.8.1 (Go module proxy, pure Go).
#   - `go install ...@v0.8.1` fails here (the proxy refuses the module's
#     @v/list); a wrapper module + `go get` + `go build` works, but the cold
#     build took ~8.3 min (37 s download + 462 s compile, 2 cores shared with
#     other jobs), 6.3 GB peak RSS, 3.5 GB of Go caches, a 269 MB binary.
#     It starts in 0.4 s.
#   - REST: MERGE works only with a plain table as source (a subquery source
#     -> 400 "source must be a single-table reference"); a duplicate jobId ->
#     400 jobInternalError, not 409; ALTER TABLE ADD COLUMN -> 200 but no
#     column; duplicate dataset -> 500; no insertId dedup; a bad row fails the
#     whole insertAll with 500; BYTES sent to insertAll come back
#     double-base64-encoded; no numDmlAffectedRows.
#
# What this emulator does NOT reproduce of production BigQuery:
# - the streaming buffer: UPDATE/DELETE/MERGE over rows just written with
#   insertAll succeed here; production rejects DML touching rows still in
#   the streaming buffer (up to ~30-90 min). tables.get has no
#   streamingBuffer field. Code that MERGEs freshly streamed rows passes
#   locally and fails in production.
# - concurrent-DML conflicts ("Could not serialize access to table ... due
#   to concurrent update"), DML/job quotas and rate limits, slots and cost
#   (totalBytesProcessed is always "0"), partition/cluster semantics and
#   partition filters, table expiration, IAM and auth (no token is checked),
#   locations. No native CDC (_CHANGE_TYPE over the Storage Write API).
# - BIGNUMERIC is DuckDB DECIMAL(38,18): at most 20 integer and 18 fraction
#   digits (production: ~38 and 38). More fraction digits are rounded, more
#   integer digits are rejected (insertErrors "invalid").
# - TIMESTAMP cells come back as Python float text, "1714979289.123456",
#   "1714972089.0", "0.0", "-1e-06"; production writes "1.714979289123456E9".
#   Both parse as f64; for one exact shape ask for
#   formatOptions.useInt64Timestamp=true (jobs.query body, or the query
#   parameter of getQueryResults/tabledata.list): integer microseconds as a
#   string, "1714979289123456", here and in production.
# - load jobs with NEWLINE_DELIMITED_JSON keep a BYTES field's base64 text
#   as the raw bytes (double-encoded); insertAll decodes base64 correctly.
# - insertAll rejects TIMESTAMP given as epoch seconds (number or string);
#   RFC 3339 and "YYYY-MM-DD hh:mm:ss[.ffffff] UTC" strings work.
# - gzip bodies with Content-Encoding: gzip worked in our curl tests (query,
#   insertAll); stack-facts.md reports gcp-bigquery-client's gzip feature
#   breaking insertAll here: unverified from Rust, keep gzip off locally.
# ---------------------------------------------------------------------------

BIGQUERY_VERSION="0.4.0"                 # local-bigquery on PyPI
BIGQUERY_EMULATOR="local-bigquery"
BIGQUERY_DUCKDB_VERSION="1.5.5"
BIGQUERY_HOST="127.0.0.1"
BIGQUERY_PORT="${BIGQUERY_PORT:-9050}"
BIGQUERY_GRPC_PORT="${BIGQUERY_GRPC_PORT:-9060}"
BIGQUERY_URL="http://$BIGQUERY_HOST:$BIGQUERY_PORT"
BIGQUERY_API="$BIGQUERY_URL/bigquery/v2"
# The emulator's default project (used by calls that name none); any id works.
BIGQUERY_PROJECT="${BIGQUERY_PROJECT:-projector-local}"
BIGQUERY_PROBE_DATASET="projector_stack_probe"

# ----- private helpers (fallbacks when common.sh is absent) ----------------

_bq_log() {
  if declare -F log >/dev/null; then log "bigquery: $*"; else printf '[stack] bigquery: %s\n' "$*" >&2; fi
}

_bq_conf_dir() {
  if [[ -n "${STACK_CONF_DIR:-}" && -d "$STACK_CONF_DIR/bigquery" ]]; then
    printf '%s\n' "$STACK_CONF_DIR/bigquery"
  else
    printf '%s\n' "$(cd "$(dirname "${BASH_SOURCE[0]}")/../stack.d/bigquery" && pwd)"
  fi
}

_bq_requirements() { printf '%s\n' "$(_bq_conf_dir)/requirements.txt"; }

_bq_cache_root() { printf '%s\n' "${PROJECTOR_CACHE:-/var/tmp/projector-cache}/bigquery"; }

# The install dir name carries a hash of requirements.txt, so changing a pin
# installs afresh next to the old one instead of patching a live venv.
_bq_install_dir() {
  local sum
  sum="$(sha256sum "$(_bq_requirements)" | cut -c1-12)"
  printf '%s\n' "$(_bq_cache_root)/$BIGQUERY_EMULATOR-$BIGQUERY_VERSION-$sum"
}

_bq_state() { printf '%s\n' "${PROJECTOR_STACK_DIR:-/var/tmp/projector-stack}/bigquery"; }
_bq_pidfile() { printf '%s\n' "$(_bq_state)/bigquery.pid"; }
_bq_logfile() { printf '%s\n' "$(_bq_state)/bigquery.log"; }

_bq_pid() {
  local pid
  [[ -r "$(_bq_pidfile)" ]] || return 1
  pid="$(head -n 1 "$(_bq_pidfile)" 2>/dev/null | tr -d '[:space:]')"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  printf '%s\n' "$pid"
}

# True if the pid file names a live (non-zombie) process.
_bq_alive() {
  local pid state
  pid="$(_bq_pid)" || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
  [[ "$state" != "Z" ]]
}

_bq_tail_log() {
  local f
  f="$(_bq_logfile)"
  if declare -F tail_log >/dev/null; then
    TAIL_LINES=40 tail_log "$f"
  elif [[ -s "$f" ]]; then
    printf '[stack] ----- last 40 lines of %s -----\n' "$f" >&2
    tail -n 40 "$f" >&2 || true
    printf '[stack] ----- end of %s -----\n' "$f" >&2
  fi
}

_bq_fail() {
  _bq_log "$*"
  _bq_tail_log
  return 1
}

_bq_need_curl() {
  command -v curl >/dev/null 2>&1 && return 0
  if declare -F need_cmd >/dev/null; then
    (need_cmd curl)   # need_cmd dies on failure: keep that in a subshell
  else
    _bq_log "curl is missing (apt-get install -y curl)"
    return 1
  fi
}

# curl_bq METHOD PATH [JSON]: prints the body, then the HTTP code on a last line.
_bq_curl() {
  local method="$1" path="$2" body="${3:-}"
  local args=(-sS -m 30 -X "$method" -H 'Authorization: Bearer local' -w '\n%{http_code}')
  [[ -n "$body" ]] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  curl "${args[@]}" "$BIGQUERY_API$path" 2>/dev/null
}

# A Python >= 3.13 with venv: $BIGQUERY_PYTHON, else the newest 3.13.x/3.14.x
# of pyenv (the image ships /root/.pyenv/versions/3.13.0), else PATH.
_bq_python() {
  local c root="${PYENV_ROOT:-$HOME/.pyenv}"
  local candidates=()
  [[ -n "${BIGQUERY_PYTHON:-}" ]] && candidates+=("$BIGQUERY_PYTHON")
  shopt -s nullglob
  candidates+=("$root"/versions/3.13*/bin/python3 /root/.pyenv/versions/3.13*/bin/python3)
  candidates+=("$root"/versions/3.14*/bin/python3 /root/.pyenv/versions/3.14*/bin/python3)
  shopt -u nullglob
  for c in python3.13 python3.14 python3; do
    command -v "$c" >/dev/null 2>&1 && candidates+=("$(command -v "$c")")
  done
  for c in "${candidates[@]}"; do
    [[ -x "$c" ]] || continue
    # pyenv shims pick the version from the cwd: check the real one.
    if "$c" -c 'import sys, venv, ensurepip; sys.exit(0 if (3, 13) <= sys.version_info[:2] < (3, 16) else 1)' 2>/dev/null; then
      printf '%s\n' "$c"
      return 0
    fi
  done
  return 1
}

# ----- install ---------------------------------------------------------------

# Installs the pinned emulator into the cache unless it is complete already
# (the .complete stamp is written last, so a half-done install is redone).
_bq_install() {
  local dir root
  dir="$(_bq_install_dir)" || return 1
  [[ -f "$dir/.complete" ]] && return 0
  root="$(_bq_cache_root)"
  mkdir -p "$root"
  (
    flock -w 900 9 || { _bq_log "could not lock $root/.install.lock"; exit 1; }
    [[ -f "$dir/.complete" ]] && exit 0
    if [[ "$(uname -m)" != x86_64 ]]; then
      _bq_log "only linux x86_64 is supported (the DuckDB extension wheels are linux_amd64)"
      exit 1
    fi
    local py t0=$SECONDS
    py="$(_bq_python)" || {
      _bq_log "no Python >= 3.13 found (tried \$BIGQUERY_PYTHON, pyenv 3.13/3.14, PATH); local-bigquery needs one"
      exit 1
    }
    _bq_log "installing $BIGQUERY_EMULATOR $BIGQUERY_VERSION with $py into $dir (first run only)"
    rm -rf "$dir"
    mkdir -p "$dir"
    local ilog="$dir/install.log"
    if ! "$py" -m venv "$dir/venv" >"$ilog" 2>&1; then
      _bq_log "python -m venv failed:"; tail -n 40 "$ilog" >&2; exit 1
    fi
    # --no-deps: the requirements file pins the whole closure (see its header).
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/venv/bin/python" -m pip install \
        --no-input --no-cache-dir --no-deps --only-binary=:all: \
        -r "$(_bq_requirements)" >>"$ilog" 2>&1; then
      _bq_log "pip install failed:"; tail -n 40 "$ilog" >&2; exit 1
    fi
    local site ext_dir e src
    site="$("$dir/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || exit 1
    ext_dir="$dir/home/.duckdb/extensions/v$BIGQUERY_DUCKDB_VERSION/linux_amd64"
    mkdir -p "$ext_dir"
    for e in ducklake icu spatial; do
      src="$site/duckdb_extension_$e/extensions/v$BIGQUERY_DUCKDB_VERSION/$e.duckdb_extension"
      [[ -f "$src" ]] || { _bq_log "missing $src"; exit 1; }
      cp "$src" "$ext_dir/" || exit 1
    done
    # Offline self-test: DuckDB must load every extension from home/ alone.
    if ! HOME="$dir/home" "$dir/venv/bin/python" -c '
import duckdb, sys
assert duckdb.__version__ == sys.argv[1], duckdb.__version__
con = duckdb.connect(config={"autoinstall_known_extensions": False})
for e in ("ducklake", "icu", "spatial"):
    con.execute("LOAD " + e)
import local_bigquery.app
' "$BIGQUERY_DUCKDB_VERSION" >>"$ilog" 2>&1; then
      _bq_log "self-test of the install failed:"; tail -n 40 "$ilog" >&2; exit 1
    fi
    touch "$dir/.complete"
    _bq_log "installed in $((SECONDS - t0)) s"
  ) 9>"$root/.install.lock"
}

# ----- run -------------------------------------------------------------------

# The real readiness check: create-if-missing a probe dataset, then a query
# job that must return the row 1.
_bq_probe() {
  local out code
  out="$(_bq_curl POST "/projects/$BIGQUERY_PROJECT/datasets" \
    "{\"datasetReference\":{\"projectId\":\"$BIGQUERY_PROJECT\",\"datasetId\":\"$BIGQUERY_PROBE_DATASET\"}}")" || return 1
  code="${out##*$'\n'}"
  [[ "$code" == 200 || "$code" == 409 ]] || return 1
  out="$(_bq_curl POST "/projects/$BIGQUERY_PROJECT/queries" \
    "{\"query\":\"SELECT 1 AS ok FROM (SELECT COUNT(*) AS n FROM \`$BIGQUERY_PROJECT.$BIGQUERY_PROBE_DATASET.INFORMATION_SCHEMA.TABLES\`)\",\"useLegacySql\":false,\"timeoutMs\":20000}")" || return 1
  code="${out##*$'\n'}"
  [[ "$code" == 200 ]] || return 1
  grep -Eq '"jobComplete": *true' <<<"$out" && grep -Eq '"f": *\[ *\{ *"v": *"1" *\} *\]' <<<"$out"
}

# True if our pid is the one listening on the REST port (another emulator
# started in between would otherwise pass our probe). Without ss: true.
_bq_owns_port() {
  local pid lines
  pid="$(_bq_pid)" || return 1
  command -v ss >/dev/null 2>&1 || return 0
  lines="$(ss -Hltnp "sport = :$BIGQUERY_PORT" 2>/dev/null)" || return 0
  [[ "$lines" == *"pid=$pid,"* ]]
}

# Waits up to $1 s for _bq_probe; gives up at once if the process died, and
# after 20 s of a server that answers HTTP but keeps failing the probe (it
# opens its database lazily, so a broken data dir shows up only that way).
_bq_wait_ready() {
  local timeout="$1" deadline=$((SECONDS + $1)) answering_since=""
  while true; do
    _bq_alive && _bq_probe && _bq_owns_port && return 0
    if ! _bq_alive; then
      _bq_log "the emulator exited before it was ready"
      return 1
    fi
    if [[ -z "$answering_since" ]] \
        && [[ "$(_bq_curl GET "/projects/$BIGQUERY_PROJECT/datasets?maxResults=1" | tail -n 1)" =~ ^[1-9] ]]; then
      answering_since=$SECONDS
    fi
    if [[ -n "$answering_since" ]] && (( SECONDS - answering_since >= 20 )); then
      _bq_log "the emulator answers HTTP but has failed the probe for 20 s"
      return 1
    fi
    if (( SECONDS >= deadline )); then
      _bq_log "not ready after ${timeout} s"
      return 1
    fi
    sleep 0.5
  done
}

_bq_port_busy() {
  local port="$1"
  if declare -F port_open >/dev/null; then
    port_open "$port"
  else
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
  fi
}

_bq_start() {
  local dir st logf port pid
  dir="$(_bq_install_dir)"
  st="$(_bq_state)"
  logf="$(_bq_logfile)"
  mkdir -p "$st/data" || return 1
  for port in "$BIGQUERY_PORT" "$BIGQUERY_GRPC_PORT"; do
    if _bq_port_busy "$port"; then
      _bq_log "port $port is taken by another process:"
      { ss -Hltnp "sport = :$port" 2>/dev/null || true; } >&2
      return 1
    fi
  done
  printf '=== %s: starting %s %s (duckdb %s) on %s:%s, grpc :%s\n' "$(date -u +%FT%TZ)" \
    "$BIGQUERY_EMULATOR" "$BIGQUERY_VERSION" "$BIGQUERY_DUCKDB_VERSION" "$BIGQUERY_HOST" \
    "$BIGQUERY_PORT" "$BIGQUERY_GRPC_PORT" >>"$logf"
  # HOME points DuckDB at the extensions of the install (never downloads).
  HOME="$dir/home" PYTHONUNBUFFERED=1 nohup "$dir/venv/bin/python" "$dir/venv/bin/local-bigquery" serve \
    --host "$BIGQUERY_HOST" --port "$BIGQUERY_PORT" --grpc-port "$BIGQUERY_GRPC_PORT" \
    --project "$BIGQUERY_PROJECT" --data-dir "$st/data" \
    </dev/null >>"$logf" 2>&1 &
  pid=$!
  disown "$pid" 2>/dev/null || true
  printf '%s\n' "$pid" >"$(_bq_pidfile)"
}

# ----- public API --------------------------------------------------------------

bigquery_up() {
  local t0=$SECONDS
  _bq_need_curl || return 1
  if _bq_alive; then
    if _bq_wait_ready 60; then
      _bq_log "already running at $BIGQUERY_URL (pid $(_bq_pid))"
      return 0
    fi
    _bq_fail "pid $(_bq_pid) is running but does not answer at $BIGQUERY_URL"
    return 1
  fi
  rm -f "$(_bq_pidfile)"
  _bq_install || return 1
  _bq_start || { _bq_fail "could not start"; return 1; }
  if ! _bq_wait_ready 120; then
    _bq_fail "did not become ready (log: $(_bq_logfile))"
    bigquery_down >/dev/null 2>&1   # leave no half-started server behind
    return 1
  fi
  _bq_log "ready at $BIGQUERY_API (pid $(_bq_pid), $((SECONDS - t0)) s)"
}

bigquery_down() {
  local pf pid
  pf="$(_bq_pidfile)"
  if declare -F stop_pid >/dev/null; then
    stop_pid "$pf" bigquery 20
    return
  fi
  if ! _bq_alive; then
    rm -f "$pf"
    return 0
  fi
  pid="$(_bq_pid)"
  _bq_log "stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 20))
  while _bq_alive; do
    if (( SECONDS >= deadline )); then
      _bq_log "pid $pid still running after 20 s: sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 0.2
  done
  rm -f "$pf"
  _bq_log "stopped"
}

bigquery_status() {
  local state=down pid=- out
  if _bq_alive; then
    pid="$(_bq_pid)"
    out="$(_bq_curl GET "/projects/$BIGQUERY_PROJECT/datasets?maxResults=1")" \
      && [[ "${out##*$'\n'}" == 200 ]] && _bq_owns_port && state=up
  fi
  if declare -F status_line >/dev/null; then
    status_line bigquery "$BIGQUERY_VERSION" "$BIGQUERY_HOST:$BIGQUERY_PORT" "$state" "$pid"
  else
    printf 'bigquery  %s  %s  %s  pid=%s\n' "$BIGQUERY_VERSION" "$BIGQUERY_HOST:$BIGQUERY_PORT" "$state" "$pid"
  fi
  [[ "$state" == up ]]
}

# shellcheck shell=bash
# postgres.sh: the local PostgreSQL of scripts/stack on 127.0.0.1:5432, from
# Debian's postgresql package (apt-get installed when missing). It is a
# cluster of its own, made with initdb in $PROJECTOR_STACK_DIR/postgres/data and
# run by pg_ctl as the postgres user, so it never touches Debian's clusters
# in /etc/postgresql (a default `main` one usually exists). If a Debian
# cluster is online on 5432, `up` stops it (pg_ctlcluster, logged); anything
# else on 5432 makes `up` fail with the listener shown.
# Sourced by scripts/stack after common.sh. Defines postgres_up,
# postgres_down, postgres_status.
#
# Access: trust auth for local and 127.0.0.1. Superuser roles `postgres` and
# `root` (so plain `psql` works for root), database `projector`:
#   psql -h 127.0.0.1 -U postgres projector
#   postgres://postgres@127.0.0.1:5432/projector
# The unix socket is in /var/run/postgresql, where Debian's psql looks.

PG_PORT="${PG_PORT:-5432}"
PG_SOCKET_DIR="${PG_SOCKET_DIR:-/var/run/postgresql}"
PG_DATABASE=projector

pg_dir() { printf '%s/postgres\n' "$PROJECTOR_STACK_DIR"; }
pg_data() { printf '%s/data\n' "$(pg_dir)"; }
pg_logfile() { printf '%s/postgres.log\n' "$(pg_dir)"; }
pg_pidfile() { printf '%s/postmaster.pid\n' "$(pg_data)"; }

# Newest installed server's bin dir, e.g. /usr/lib/postgresql/15/bin.
pg_bindir() {
  local d
  d="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/pg_ctl' 2>/dev/null \
    | sort -V | tail -n 1)"
  [[ -n "$d" ]] || return 1
  dirname "$d"
}

pg_version() {
  local bin
  bin="$(pg_bindir)" || { echo '?'; return 0; }
  # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> 15.18
  "$bin/postgres" --version | sed -n 's/.*(PostgreSQL) \([0-9][0-9.]*\).*/\1/p'
}

pg_ensure_installed() {
  pg_bindir >/dev/null && command -v psql >/dev/null && return 0
  log "postgres: PostgreSQL server not installed; installing Debian's postgresql"
  (
    flock -w 900 8 || exit 1
    pg_bindir >/dev/null && command -v psql >/dev/null && exit 0
    apt_install postgresql
  ) 8>"/tmp/.projector-stack-apt.lock" || { log "postgres: apt-get install postgresql failed"; return 1; }
  pg_bindir >/dev/null || { log "postgres: no server binaries after install"; return 1; }
}

pg_as() {
  runuser -u postgres -- "$@"
}

pg_alive() { pid_alive "$(pg_pidfile)"; }

pg_ready() {
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -XAtqc 'select 1' 2>/dev/null | grep -qx 1
}

pg_fail() {
  log "postgres: $*"
  tail_log "$(pg_logfile)"
  return 1
}

# Frees 5432 from a Debian cluster (pg_lsclusters) that is online there.
pg_free_port() {
  port_open "$PG_PORT" || return 0
  local ver name port status
  if command -v pg_lsclusters >/dev/null; then
    while read -r ver name port status _; do
      if [[ "$port" == "$PG_PORT" && "$status" == online* ]]; then
        warn "postgres: Debian cluster $ver/$name is online on port $PG_PORT; stopping it (pg_ctlcluster $ver $name stop) to run the stack's own cluster"
        pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" stop \
          || pg_ctlcluster "$ver" "$name" stop || true
      fi
    done < <(pg_lsclusters -h 2>/dev/null)
  fi
  local _
  for _ in 1 2 3 4 5; do
    port_open "$PG_PORT" || return 0
    sleep 1
  done
  log "postgres: port $PG_PORT is taken by a process this script did not start:"
  port_listener "$PG_PORT" >&2
  return 1
}

pg_init() {
  local dir data bin
  dir="$(pg_dir)"
  data="$(pg_data)"
  bin="$(pg_bindir)"
  mkdir -p "$dir"
  chown postgres:postgres "$dir"
  chmod 700 "$dir"
  if [[ ! -s "$data/PG_VERSION" ]]; then
    log "postgres: initdb $data"
    rm -rf "$data"
    pg_as "$bin/initdb" -D "$data" -U postgres -E UTF8 --no-locale \
      --auth-local=trust --auth-host=trust >>"$(pg_logfile)" 2>&1 \
      || { log "postgres: initdb failed"; return 1; }
    echo "include = 'projector.conf'" >>"$data/postgresql.conf"
  fi
  sed -e "s|@PORT@|$PG_PORT|g" -e "s|@SOCKET_DIR@|$PG_SOCKET_DIR|g" \
    "$STACK_CONF_DIR/postgres/projector.conf" >"$data/projector.conf"
  chown postgres:postgres "$data/projector.conf"
  if [[ ! -d "$PG_SOCKET_DIR" ]]; then
    mkdir -p "$PG_SOCKET_DIR"
    chown postgres:postgres "$PG_SOCKET_DIR"
    chmod 2775 "$PG_SOCKET_DIR"
  fi
}

pg_start() {
  if pg_alive; then
    log "postgres: already running (pid $(pid_of "$(pg_pidfile)"))"
    return 0
  fi
  pg_free_port || return 1
  pg_init || return 1
  touch "$(pg_logfile)"
  chown postgres:postgres "$(pg_logfile)"
  log "postgres: starting PostgreSQL $(pg_version) on 127.0.0.1:$PG_PORT"
  # pg_ctl -w returns once the server accepts connections (or fails).
  setsid runuser -u postgres -- "$(pg_bindir)/pg_ctl" -D "$(pg_data)" -l "$(pg_logfile)" \
    -w -t 90 start >/dev/null 2>&1 </dev/null
}

# Roles and database: created once, checked every time.
pg_provision() {
  local q=(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1)
  if [[ "$("${q[@]}" -c "select 1 from pg_roles where rolname = 'root'")" != 1 ]]; then
    "${q[@]}" -c 'create role root superuser login' || return 1
  fi
  if [[ "$("${q[@]}" -c "select 1 from pg_database where datname = '$PG_DATABASE'")" != 1 ]]; then
    log "postgres: creating database $PG_DATABASE"
    "${q[@]}" -c "create database $PG_DATABASE" || return 1
  fi
}

postgres_up() {
  pg_ensure_installed || return 1
  pg_start || pg_fail "could not start" || return 1
  wait_ready 60 "postgres (select 1)" pg_alive pg_ready || pg_fail "did not become ready" || return 1
  pg_provision || pg_fail "could not create role root / database $PG_DATABASE" || return 1
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$PG_DATABASE" -XAtqc 'select 1' >/dev/null \
    || pg_fail "database $PG_DATABASE does not answer" || return 1
  log "postgres: ready at 127.0.0.1:$PG_PORT (pid $(pid_of "$(pg_pidfile)"), database $PG_DATABASE)"
}

postgres_down() {
  pg_alive || return 0
  log "stopping postgres (pid $(pid_of "$(pg_pidfile)"))"
  if ! pg_as "$(pg_bindir)/pg_ctl" -D "$(pg_data)" -m fast -w -t 60 stop >/dev/null 2>&1; then
    stop_pid "$(pg_pidfile)" postgres 30
  fi
  log "postgres stopped"
}

postgres_status() {
  local state=down pid=-
  if pg_alive; then
    pid="$(pid_of "$(pg_pidfile)")"
    pg_ready && state=up
  fi
  status_line postgres "$(pg_version)" "127.0.0.1:$PG_PORT" "$state" "$pid"
  [[ "$state" == up ]]
}

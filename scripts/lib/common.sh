# shellcheck shell=bash
# common.sh: shared helpers for scripts/stack and its per-service libraries
# (kafka.sh, elasticsearch.sh, postgres.sh, bigquery.sh). Sourced, never run.
#
# Variables (set here when unset, exported):
#   PROJECTOR_CACHE      downloads kept across runs (maven repo, unpacked dists)
#                        default /var/tmp/projector-cache
#   PROJECTOR_STACK_DIR  runtime state: data dirs, logs, pid files
#                        default /var/tmp/projector-stack
#   STACK_SCRIPTS_DIR    the scripts/ folder of the repo
#   STACK_CONF_DIR       scripts/stack.d (config templates, poms)
#   STACK_M2             $PROJECTOR_CACHE/m2, the maven local repository
#
# Functions (names are stable: other libraries rely on them):
#   log MSG...                   print "[stack] MSG" to stderr
#   warn MSG...                  print "[stack] WARNING: MSG" to stderr
#   die MSG...                   log MSG and exit 1
#   wait_until T DESC CMD...     run CMD every second until it succeeds; after
#                                T seconds log a time-out and return 1
#   wait_ready T DESC ALIVE CMD...  like wait_until, but gives up at once (return 1)
#                                when the command ALIVE (one word: a function
#                                name or a command) fails, i.e. the process died
#   pid_of PIDFILE               print the pid stored on the first line of PIDFILE
#   pid_alive PIDFILE            true if PIDFILE names a live process
#   stop_pid PIDFILE NAME [T]    TERM the process, wait up to T s (default 60),
#                                then KILL; removes PIDFILE; true if nothing ran
#   tail_log FILE...             print the last ${TAIL_LINES:-40} lines of each
#                                existing FILE to stderr, with a header
#   mvn_fetch ARGS...            mvn -q -B -Dmaven.repo.local=$STACK_M2 ARGS,
#                                serialised with a lock (concurrent mavens would
#                                race on the same local repository)
#   maven_artifact_path G A V [EXT] [CLASSIFIER]
#                                print where G:A:V lies in $STACK_M2
#   port_open PORT [HOST]        true if something accepts TCP on HOST:PORT
#   port_listener PORT           print the `ss` line of whoever listens on PORT
#   state_dir NAME               mkdir -p $PROJECTOR_STACK_DIR/NAME, print it
#   cache_dir NAME               mkdir -p $PROJECTOR_CACHE/NAME, print it
#   need_cmd CMD [APT_PACKAGE]   make sure CMD exists, apt-get installing
#                                APT_PACKAGE (default CMD) when missing
#   apt_install PKG...           apt-get install -y, running apt-get update
#                                first only when the install fails without it
#   status_line NAME VERSION ADDRESS STATE PID
#                                print one row of `scripts/stack status`
#   now_s                        seconds since the epoch (for timings)

if [[ -n "${__STACK_COMMON_SOURCED:-}" ]]; then
  return 0
fi
__STACK_COMMON_SOURCED=1

STACK_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_CONF_DIR="$STACK_SCRIPTS_DIR/stack.d"
PROJECTOR_CACHE="${PROJECTOR_CACHE:-/var/tmp/projector-cache}"
PROJECTOR_STACK_DIR="${PROJECTOR_STACK_DIR:-/var/tmp/projector-stack}"
STACK_M2="$PROJECTOR_CACHE/m2"
export STACK_SCRIPTS_DIR STACK_CONF_DIR PROJECTOR_CACHE PROJECTOR_STACK_DIR STACK_M2

log() {
  printf '[stack] %s\n' "$*" >&2
}

warn() {
  printf '[stack] WARNING: %s\n' "$*" >&2
}

die() {
  log "$*"
  exit 1
}

now_s() {
  date +%s
}

wait_until() {
  local timeout="$1" desc="$2"
  shift 2
  local deadline=$(( $(now_s) + timeout ))
  while true; do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if (( $(now_s) >= deadline )); then
      log "timed out after ${timeout}s waiting for $desc"
      return 1
    fi
    sleep 1
  done
}

wait_ready() {
  local timeout="$1" desc="$2" alive="$3"
  shift 3
  local deadline=$(( $(now_s) + timeout ))
  while true; do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if ! "$alive" >/dev/null 2>&1; then
      # One last try: the process may have finished its work and exited
      # (a daemonising launcher) right as the check ran.
      if "$@" >/dev/null 2>&1; then
        return 0
      fi
      log "$desc: the process died before it was ready"
      return 1
    fi
    if (( $(now_s) >= deadline )); then
      log "timed out after ${timeout}s waiting for $desc"
      return 1
    fi
    sleep 1
  done
}

pid_of() {
  local pidfile="$1" pid
  [[ -r "$pidfile" ]] || return 1
  pid="$(head -n 1 "$pidfile" 2>/dev/null | tr -d '[:space:]')"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  printf '%s\n' "$pid"
}

pid_alive() {
  local pid state
  pid="$(pid_of "$1")" || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # A zombie answers kill -0 but is gone for our purposes.
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
  [[ "$state" != "Z" ]]
}

stop_pid() {
  local pidfile="$1" name="$2" timeout="${3:-60}" pid
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    return 0
  fi
  pid="$(pid_of "$pidfile")"
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(( $(now_s) + timeout ))
  while pid_alive "$pidfile"; do
    if (( $(now_s) >= deadline )); then
      warn "$name (pid $pid) still running after ${timeout}s: sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 0.5
  done
  rm -f "$pidfile"
  log "$name stopped"
}

tail_log() {
  local lines="${TAIL_LINES:-40}" f
  for f in "$@"; do
    [[ -s "$f" ]] || continue
    printf '[stack] ----- last %s lines of %s -----\n' "$lines" "$f" >&2
    tail -n "$lines" "$f" >&2 || true
    printf '[stack] ----- end of %s -----\n' "$f" >&2
  done
}

mvn_fetch() {
  mkdir -p "$STACK_M2"
  need_cmd mvn maven
  (
    # Serialise maven runs: two of them filling the same empty local
    # repository at once can leave half-written files behind.
    flock -w 1800 9 || { log "could not lock the maven cache"; exit 1; }
    cd "$PROJECTOR_CACHE" || exit 1
    # Output goes to a file, shown only on failure (-q still prints stray
    # ANSI codes).
    local out="$PROJECTOR_CACHE/mvn-last.log"
    if ! mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$STACK_M2" "$@" >"$out" 2>&1; then
      log "mvn $* failed:"
      tail_log "$out"
      exit 1
    fi
  ) 9>"$PROJECTOR_CACHE/.mvn.lock"
}

maven_artifact_path() {
  local g="$1" a="$2" v="$3" ext="${4:-jar}" classifier="${5:-}"
  local suffix=""
  [[ -n "$classifier" ]] && suffix="-$classifier"
  printf '%s/%s/%s/%s/%s-%s%s.%s\n' "$STACK_M2" "${g//.//}" "$a" "$v" "$a" "$v" "$suffix" "$ext"
}

port_open() {
  local port="$1" host="${2:-127.0.0.1}"
  timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

port_listener() {
  ss -Hltnp "sport = :$1" 2>/dev/null | head -n 3
}

state_dir() {
  mkdir -p "$PROJECTOR_STACK_DIR/$1"
  printf '%s\n' "$PROJECTOR_STACK_DIR/$1"
}

cache_dir() {
  mkdir -p "$PROJECTOR_CACHE/$1"
  printf '%s\n' "$PROJECTOR_CACHE/$1"
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  log "apt-get install -y $*"
  if apt-get install -y -q "$@" >&2; then
    return 0
  fi
  log "apt-get install failed; running apt-get update and trying again"
  apt-get update -q >&2 || return 1
  apt-get install -y -q "$@" >&2
}

need_cmd() {
  local cmd="$1" pkg="${2:-$1}"
  command -v "$cmd" >/dev/null 2>&1 && return 0
  (
    # Several services may want a package at the same moment; dpkg has its own
    # lock, but waiting on ours gives a clear message instead of an error.
    flock -w 900 8 || exit 1
    command -v "$cmd" >/dev/null 2>&1 || apt_install "$pkg"
  ) 8>"/tmp/.projector-stack-apt.lock" || die "could not install $pkg (for $cmd)"
}

status_line() {
  printf '%-14s %-10s %-22s %-5s %s\n' "$1" "$2" "$3" "$4" "${5:--}"
}

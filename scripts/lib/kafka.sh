# shellcheck shell=bash
# kafka.sh: the local Apache Kafka broker of scripts/stack. One KRaft node
# (broker + controller) on 127.0.0.1:9092 (controller 127.0.0.1:9093), run
# from jars that maven copies out of Maven Central into $PROJECTOR_CACHE.
# Sourced by scripts/stack after common.sh. Defines kafka_up, kafka_down,
# kafka_status, kafka_tool (runs a Kafka CLI class against the broker).
#
# State: $PROJECTOR_STACK_DIR/kafka/{server.properties,data/,kafka.log,kafka.pid}

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
KAFKA_PROBE_TOPIC="projector-stack-probe"
# Kafka 4.x runs on Java 17+; the Debian default is 17.
KAFKA_JAVA_HOME="${KAFKA_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"

kafka_home() { printf '%s\n' "$PROJECTOR_CACHE/kafka-$KAFKA_VERSION"; }
kafka_state() { state_dir kafka; }
kafka_pidfile() { printf '%s\n' "$PROJECTOR_STACK_DIR/kafka/kafka.pid"; }
kafka_logfile() { printf '%s\n' "$PROJECTOR_STACK_DIR/kafka/kafka.log"; }

kafka_java() {
  if [[ -x "$KAFKA_JAVA_HOME/bin/java" ]]; then
    printf '%s\n' "$KAFKA_JAVA_HOME/bin/java"
  elif command -v java >/dev/null 2>&1; then
    command -v java
  else
    return 1
  fi
}

# Builds $PROJECTOR_CACHE/kafka-<ver>/libs with every runtime jar. Skipped
# when it is complete already, so a warm start never runs maven.
kafka_fetch() {
  local home
  home="$(kafka_home)"
  [[ -f "$home/.complete" ]] && return 0
  log "kafka: fetching Kafka $KAFKA_VERSION jars from Maven Central (first run only)"
  local tmp="$home/libs.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$home"
  if ! mvn_fetch -f "$STACK_CONF_DIR/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp"; then
    rm -rf "$tmp"
    log "kafka: maven could not fetch the Kafka $KAFKA_VERSION classpath"
    return 1
  fi
  rm -rf "$home/libs"
  mv "$tmp" "$home/libs"
  touch "$home/.complete"
}

# kafka_class MAIN ARGS...: runs one Kafka class with the tools' JVM flags
# (small heap, C1 only: short-lived tools start faster that way).
kafka_class() {
  local main="$1" java
  shift
  java="$(kafka_java)" || { log "kafka: no java found"; return 1; }
  "$java" -Xmx512m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$STACK_CONF_DIR/kafka/tools-log4j2.properties" \
    -cp "$(kafka_home)/libs/*" "$main" "$@"
}

# kafka_tool NAME ARGS...: the `scripts/stack kafka-NAME` commands. Adds
# --bootstrap-server 127.0.0.1:9092 unless the arguments carry one.
kafka_tool() {
  local name="$1" main
  shift
  case "$name" in
    topics) main=org.apache.kafka.tools.TopicCommand ;;
    consumer-groups) main=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    console-producer) main=org.apache.kafka.tools.ConsoleProducer ;;
    console-consumer) main=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    class)
      # kafka-class MAIN ARGS...: any class on the Kafka classpath, as is.
      kafka_fetch || return 1
      kafka_class "$@"
      return
      ;;
    *) log "unknown kafka tool: kafka-$name"; return 2 ;;
  esac
  kafka_fetch || return 1
  local a
  for a in "$@"; do
    if [[ "$a" == --bootstrap-server* ]]; then
      kafka_class "$main" "$@"
      return
    fi
  done
  kafka_class "$main" --bootstrap-server "$KAFKA_BOOTSTRAP" "$@"
}

kafka_render_config() {
  local dir="$1"
  sed -e "s|@DATA_DIR@|$dir/data|g" "$STACK_CONF_DIR/kafka/server.properties" \
    >"$dir/server.properties"
}

# Formats the KRaft storage once; a restart reuses it (and its topics).
kafka_format() {
  local dir="$1" cluster_id
  [[ -f "$dir/data/meta.properties" ]] && return 0
  rm -rf "$dir/data"
  mkdir -p "$dir/data"
  cluster_id="$(kafka_class kafka.tools.StorageTool random-uuid)" || return 1
  log "kafka: formatting storage (cluster id $cluster_id)"
  kafka_class kafka.tools.StorageTool format --standalone -t "$cluster_id" \
    -c "$dir/server.properties" >>"$(kafka_logfile)" 2>&1
}

kafka_alive() { pid_alive "$(kafka_pidfile)"; }

kafka_started() {
  port_open "$KAFKA_PORT" && grep -q 'Kafka Server started' "$(kafka_logfile)"
}

# A real round trip: create the probe topic (a CreateTopics request through
# the controller), then describe it and see that partition 0 has a leader.
kafka_probe() {
  kafka_class org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
    --create --if-not-exists --topic "$KAFKA_PROBE_TOPIC" --partitions 1 \
    --replication-factor 1 >/dev/null 2>&1 || return 1
  kafka_class org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
    --describe --topic "$KAFKA_PROBE_TOPIC" 2>/dev/null | grep -q 'Leader: 1'
}

kafka_fail() {
  log "kafka: $*"
  tail_log "$(kafka_logfile)"
  return 1
}

kafka_start() {
  local dir java
  dir="$(kafka_state)"
  if kafka_alive; then
    log "kafka: already running (pid $(pid_of "$(kafka_pidfile)"))"
    return 0
  fi
  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_open "$p"; then
      log "kafka: port $p is taken by a process this script did not start:"
      port_listener "$p" >&2
      return 1
    fi
  done
  java="$(kafka_java)" || { log "kafka: no java found"; return 1; }
  kafka_render_config "$dir"
  [[ -f "$(kafka_logfile)" ]] && mv -f "$(kafka_logfile)" "$(kafka_logfile).1"
  kafka_format "$dir" || return 1
  rm -f "$(kafka_pidfile)"
  log "kafka: starting Kafka $KAFKA_VERSION on $KAFKA_BOOTSTRAP"
  # shellcheck disable=SC2016 # expanded by the inner shell
  # setsid: the broker outlives this script's process group. The inner shell
  # writes its own pid, then becomes java, so the pid file names the JVM.
  KAFKA_JAVA="$java" KAFKA_PIDFILE="$(kafka_pidfile)" KAFKA_DIR="$dir" \
  KAFKA_CP="$(kafka_home)/libs/*" KAFKA_LOG4J="$STACK_CONF_DIR/kafka/log4j2.properties" \
    setsid bash -c 'ulimit -n 65536 2>/dev/null; echo $$ >"$KAFKA_PIDFILE"; exec "$KAFKA_JAVA" \
      -Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
      -Dkafka.logs.dir="$KAFKA_DIR" \
      -cp "$KAFKA_CP" kafka.Kafka "$KAFKA_DIR/server.properties"' \
    >>"$(kafka_logfile)" 2>&1 </dev/null &
  # Wait until the pid file exists so callers can rely on it.
  wait_until 10 "kafka pid file" test -s "$(kafka_pidfile)"
}

kafka_up() {
  if ! kafka_alive; then
    kafka_fetch || return 1
  fi
  kafka_start || kafka_fail "could not start" || return 1
  wait_ready 120 "kafka (Kafka Server started)" kafka_alive kafka_started \
    || kafka_fail "did not start" || return 1
  wait_ready 60 "kafka (create+describe topic $KAFKA_PROBE_TOPIC)" kafka_alive kafka_probe \
    || kafka_fail "does not answer requests" || return 1
  log "kafka: ready at $KAFKA_BOOTSTRAP (pid $(pid_of "$(kafka_pidfile)"))"
}

kafka_down() {
  stop_pid "$(kafka_pidfile)" kafka 60
}

kafka_status() {
  local state=down pid=-
  if kafka_alive; then
    pid="$(pid_of "$(kafka_pidfile)")"
    port_open "$KAFKA_PORT" && state=up
  fi
  status_line kafka "$KAFKA_VERSION" "$KAFKA_BOOTSTRAP" "$state" "$pid"
  [[ "$state" == up ]]
}

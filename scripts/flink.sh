#!/usr/bin/env bash
# A local Apache Flink engine for the FlinkRunner: a standalone cluster (JobManager and
# TaskManager processes), Beam's Flink job server, and a pool of Python SDK workers (EXTERNAL).
#   scripts/flink.sh fetch              get the jars into the cache (once; reused afterwards)
#   scripts/flink.sh start [--embedded] fetch if needed, start everything, print the endpoints
#                                       (--embedded: no cluster, the job server's own Flink)
#   scripts/flink.sh env                print the endpoints of what runs
#   scripts/flink.sh stop               stop what `start` started
# Environment: SOUNDSCAPE_CACHE (jar cache, default ~/.cache/soundscape-beam), FLINK_RUN_DIR
# (config, logs, pids), FLINK_REST_PORT (8081), FLINK_RPC_PORT (6123), BEAM_JOB_PORT (8099),
# BEAM_WORKER_POOL_PORT (50000), FLINK_SLOTS (cores), FLINK_TM_MEMORY (2048m), FLINK_JM_MEMORY
# (1024m), PYTHON (the SDK workers' interpreter, default .venv/bin/python), START_TIMEOUT (120 s).
#
# Beam publishes no Flink job server for Beam 2.77.0 (Python) in the Maven registry: the newest
# whose runner and dependencies all resolve there is 2.62.0 for Flink 1.19, so the job server
# is assembled from those Maven artifacts (no single shaded jar) and speaks the portable Job
# and Fn APIs with the 2.77.0 Python SDK. Flink's own jars run the cluster.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
BEAM_JAVA=2.62.0
FLINK=1.19.0
FLINK_MINOR=1.19
cache="${SOUNDSCAPE_CACHE:-$HOME/.cache/soundscape-beam}"
home="$cache/flink-$FLINK-beam-$BEAM_JAVA"
run="${FLINK_RUN_DIR:-$cache/run}"
rest_port="${FLINK_REST_PORT:-8081}"
rpc_port="${FLINK_RPC_PORT:-6123}"
job_port="${BEAM_JOB_PORT:-8099}"
pool_port="${BEAM_WORKER_POOL_PORT:-50000}"
slots="${FLINK_SLOTS:-$(nproc)}"
timeout="${START_TIMEOUT:-120}"
python="${PYTHON:-$repo/.venv/bin/python}"
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
launcher="$home/beam-runners-flink-$FLINK_MINOR-job-server-$BEAM_JAVA.jar"
# What Flink's own scripts give Java 17 (Kryo and the RPC system reflect into the JDK).
opens=(java.base/java.lang java.base/java.lang.reflect java.base/java.io java.base/java.net
  java.base/java.nio java.base/sun.nio.ch java.base/java.text java.base/java.time
  java.base/java.util java.base/java.util.concurrent java.base/java.util.concurrent.atomic
  java.base/java.util.concurrent.locks)
exports=(java.base/sun.net.util java.rmi/sun.rmi.registry java.security.jgss/sun.security.krb5)
jvm_flags=(-Dorg.slf4j.simpleLogger.showDateTime=true
  -Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS)
for p in "${opens[@]}"; do jvm_flags+=("--add-opens=$p=ALL-UNNAMED"); done
for p in "${exports[@]}"; do jvm_flags+=("--add-exports=$p=ALL-UNNAMED"); done

die() { echo "flink.sh: $*" >&2; exit 1; }

# Resolves one artifact's runtime dependencies (plus an SLF4J binding) into a folder.
resolve() {  # DIR GROUP:ARTIFACT:VERSION...
  local dir="$1" deps="" gav g a v
  shift
  for gav in "$@" org.slf4j:slf4j-simple:1.7.36; do
    IFS=: read -r g a v <<<"$gav"
    deps+="<dependency><groupId>$g</groupId><artifactId>$a</artifactId><version>$v</version></dependency>"
  done
  mkdir -p "$dir"
  cat >"$dir/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
<groupId>soundscape-beam</groupId><artifactId>flink-$(basename "$dir")</artifactId><version>0</version>
<dependencies>$deps</dependencies></project>
EOF
  mvn -q -B -Dstyle.color=never -f "$dir/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$dir/lib" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2
}

fetch() {
  [ -f "$home/.complete" ] && return 0
  command -v "$java" >/dev/null || die "no java on PATH (Java 11 or 17 is needed)"
  command -v mvn >/dev/null || die "no mvn on PATH (Maven fetches the Flink and Beam jars)"
  command -v jar >/dev/null || die "no jar tool on PATH (it comes with the JDK)"
  echo "flink.sh: fetching Beam $BEAM_JAVA's Flink $FLINK_MINOR runner and Flink $FLINK into $home" >&2
  local tmp="$home.tmp-$$"
  ( trap 'rm -rf "$tmp"' EXIT
    resolve "$tmp/jobserver" "org.apache.beam:beam-runners-flink-$FLINK_MINOR:$BEAM_JAVA"
    resolve "$tmp/cluster" "org.apache.flink:flink-clients:$FLINK" \
      "org.apache.flink:flink-streaming-java:$FLINK"
    # A launcher jar, usable as --flink_job_server_jar: only a manifest naming the others.
    classpath=""
    for f in "$tmp"/jobserver/lib/*.jar; do classpath+="jobserver/lib/${f##*/} "; done
    { echo "Manifest-Version: 1.0"
      echo "Main-Class: org.apache.beam.runners.flink.FlinkJobServerDriver"
      echo "Add-Opens: ${opens[*]}" | fold -w 70 | sed '2,$s/^/ /'
      echo "Add-Exports: ${exports[*]}" | fold -w 70 | sed '2,$s/^/ /'
      echo "Class-Path: $classpath" | fold -w 70 | sed '2,$s/^/ /'
    } >"$tmp/MANIFEST.MF"
    jar cfm "$tmp/$(basename "$launcher")" "$tmp/MANIFEST.MF"
    rm -rf "$home"
    mv "$tmp" "$home"
    touch "$home/.complete" )
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Starts a command in its own session (so `stop` ends its children too), logging to NAME.log.
launch() {  # NAME COMMAND...
  local name="$1"
  shift
  setsid "$@" >"$run/$name.log" 2>&1 </dev/null &
  echo $! >"$run/$name.pid"
}

wait_for() {  # NAME PORT [LOG PATTERN]
  local name="$1" port="$2" pattern="${3:-}" deadline=$((SECONDS + timeout))
  while ! port_open "$port" || { [ -n "$pattern" ] && ! grep -q "$pattern" "$run/$name.log"; }; do
    if ! kill -0 "$(cat "$run/$name.pid")" 2>/dev/null; then
      tail -n 30 "$run/$name.log" >&2
      die "$name exited while starting (log: $run/$name.log)"
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$run/$name.log" >&2
      die "$name not ready on port $port after ${timeout}s (log: $run/$name.log)"
    fi
    sleep 0.5
  done
}

write_conf() {
  mkdir -p "$run/conf"
  cat >"$run/conf/config.yaml" <<EOF
jobmanager.rpc.address: localhost
jobmanager.bind-host: localhost
jobmanager.rpc.port: $rpc_port
jobmanager.memory.process.size: ${FLINK_JM_MEMORY:-1024m}
taskmanager.host: localhost
taskmanager.bind-host: localhost
taskmanager.numberOfTaskSlots: $slots
taskmanager.memory.process.size: ${FLINK_TM_MEMORY:-2048m}
# Beam's batch translation runs every step as its own task: each needs network buffers.
taskmanager.memory.network.min: 384m
taskmanager.memory.network.max: 384m
taskmanager.memory.managed.fraction: 0.2
# Beam's gRPC threads outlive a finished job's class loader by a moment: let them.
classloader.check-leaked-classloader: false
parallelism.default: $slots
rest.address: localhost
rest.bind-address: localhost
rest.port: $rest_port
EOF
}

# As Flink's own launch scripts do: JVM memory flags and settings computed from the config.
memory() {  # JM|TM LINE (1: JVM flags, 2: settings)
  "$java" -cp "$home/cluster/lib/*" org.apache.flink.runtime.util.bash.BashJavaUtils \
    "GET_$1_RESOURCE_PARAMS" --configDir "$run/conf" 2>/dev/null |
    sed -n 's/^BASH_JAVA_UTILS_EXEC_RESULT://p' | sed -n "$2p"
}

endpoints() {
  local master="localhost:$rest_port"
  if ! { [ -f "$run/jobserver.pid" ] && kill -0 "$(cat "$run/jobserver.pid")" 2>/dev/null; }; then
    die "not running (scripts/flink.sh start)"
  fi
  [ "$(cat "$run/mode" 2>/dev/null)" = embedded ] && master='[local]'
  echo "FLINK_MASTER=$master"
  echo "BEAM_JOB_ENDPOINT=localhost:$job_port"
  echo "BEAM_WORKER_POOL=localhost:$pool_port"
  echo "PIPELINE_FLAGS=--runner FlinkRunner --flink_master $master --job_endpoint" \
    "localhost:$job_port --environment_type EXTERNAL --environment_config localhost:$pool_port"
}

stop() {
  local name pid
  for name in jobserver workerpool taskmanager jobmanager; do
    [ -f "$run/$name.pid" ] || continue
    pid="$(cat "$run/$name.pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$run/$name.pid"
  done
}

start() {
  local mode=standalone
  [ "${1:-}" = --embedded ] && mode=embedded
  fetch
  [ -x "$python" ] || die "no Python for the SDK workers at $python (set PYTHON)"
  mkdir -p "$run"
  for name in jobmanager taskmanager workerpool jobserver; do
    if [ -f "$run/$name.pid" ] && kill -0 "$(cat "$run/$name.pid")" 2>/dev/null; then
      die "$name already runs (pid $(cat "$run/$name.pid")); scripts/flink.sh stop first"
    fi
  done
  for port in "$job_port" "$pool_port" $([ $mode = standalone ] && echo "$rest_port $rpc_port"); do
    port_open "$port" && die "port $port is in use (set the *_PORT variables)"
  done
  trap stop EXIT  # whatever fails below: stop what started
  trap 'exit 1' INT TERM
  write_conf
  echo "$mode" >"$run/mode"
  local cluster_cp="$home/cluster/lib/*" master='[local]'
  if [ $mode = standalone ]; then
    master="localhost:$rest_port"
    local jm_flags tm_flags
    jm_flags="$(memory JM 1)"
    tm_flags="$(memory TM 1)"
    [ -n "$jm_flags" ] && [ -n "$tm_flags" ] || die "cannot size memory from $run/conf"
    # shellcheck disable=SC2046,SC2086  # JVM flags and settings are word lists
    launch jobmanager "$java" "${jvm_flags[@]}" $jm_flags -cp "$cluster_cp" \
      org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint \
      --configDir "$run/conf" $(memory JM 2)
    # shellcheck disable=SC2046,SC2086
    launch taskmanager "$java" "${jvm_flags[@]}" $tm_flags -cp "$cluster_cp" \
      org.apache.flink.runtime.taskexecutor.TaskManagerRunner --configDir "$run/conf" \
      $(memory TM 2)
  fi
  # The worker pool starts one `python` SDK worker process per environment: ours first on PATH.
  launch workerpool env PATH="$(dirname "$python"):$PATH" "$python" \
    -m apache_beam.runners.worker.worker_pool_main --service_port "$pool_port"
  launch jobserver "$java" "${jvm_flags[@]}" -jar "$launcher" --flink-master "$master" \
    --flink-conf-dir "$run/conf" --job-port "$job_port" --artifact-port 0 \
    --expansion-port -1 --artifacts-dir "$run/artifacts"
  if [ $mode = standalone ]; then
    wait_for jobmanager "$rest_port"
    wait_for taskmanager "$rest_port" 'Successful registration at resource manager'
  fi
  wait_for workerpool "$pool_port"
  wait_for jobserver "$job_port"
  trap - EXIT INT TERM
  endpoints
}

case "${1:-}" in
  fetch) fetch; echo "$home" ;;
  start) shift; start "$@" ;;
  stop) stop ;;
  env) endpoints ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac

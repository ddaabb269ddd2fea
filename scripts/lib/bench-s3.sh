# shellcheck shell=bash
# scripts/bench --s3-latency: myvault against an S3 server 20 ms away (sourced by scripts/bench
# after its helpers).
#
# The bench makes its own network namespace, joined to this one by a veth pair with private
# addresses (10.250.N.1 here, 10.250.N.2 there). Inside it run s3s-fs on its loopback and, in
# front of it on the veth address, examples/delay_proxy.rs: a TCP delay line adding 10 ms each
# way (20 ms RTT; the connection's first request one RTT more, for the handshake). The kernel
# here has no sch_netem (CONFIG_NET_SCH_NETEM is not set), so `tc qdisc ... netem` cannot add
# the delay; the delay line does what netem's delay would, per TCP connection. A second delay
# line with 0 ms shows what the proxy itself costs.
#
# Measured on the same sysbench data: backup, restore, verify, and `binlog stream` uploading a
# write load's binlog, into a local repository and into S3 at 20 ms; `aws s3 cp --recursive`
# (awscli from PyPI) down and up with the same bytes at the same latency; and whether an upload
# and a download resume after the connection drops (a third delay line cuts one connection).
#
# Restore, `restore --dest` and `aws s3 cp` down run MYVAULT_BENCH_ROUNDS times in turn and show
# their median round.
#
# MYVAULT_S3_ROWS: rows per sysbench table (8 tables; default 125000, about 150 MB of InnoDB).
# MYVAULT_S3_BASELINE: another myvault binary (the build before a change): its backup into S3
# at 20 ms and its `restore --dest` from there run in each round beside this build's.

S3_ROWS=${MYVAULT_S3_ROWS:-125000}
NOTLS="--ssl-mode=DISABLED"
AWS=${MYVAULT_AWS:-$TB/awscli/bin/aws}
export AWS_ACCESS_KEY_ID=myvault-bench AWS_SECRET_ACCESS_KEY=myvault-bench-secret-key AWS_REGION=us-east-1
unset AWS_ENDPOINT_URL
BUCKET=bench
DELAY_MS=10

ratio_row() { # LABEL A B OP TARGET
  local r
  if [ -n "$2" ] && [ -n "$3" ] && awk -v b="$3" 'BEGIN { exit !(b > 0) }'; then
    r=$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2f", a / b }')
    if [ "$4" = - ]; then printf '| %s | %sx | – | (no target) |\n' "$1" "$r"; return; fi
    printf '| %s | %sx | %s %sx | %s |\n' "$1" "$r" "$4" "$5" "$(verdict "$r" "$4" "$5")"
  else
    printf '| %s | not measured | %s %sx | – |\n' "$1" "$4" "$5"
  fi
}

# ---------------------------------------------------------------------------------------------
# The namespace, the S3 server and the delay lines

log "s3: building examples/delay_proxy"
if ! build_example delay_proxy 2>"$RAW/delay_proxy.build.err"; then
  echo "bench: cargo build --example delay_proxy failed: $(lastline "$RAW/delay_proxy.build.err")" >&2; exit 1
fi
PROXY=$CARGO_TARGET_DIR/release/examples/delay_proxy
case "$PROXY" in /*) ;; *) PROXY=$ROOT/$PROXY ;; esac

NS=mvbench-s3-$$
NET=$(( $$ % 200 + 20 ))
HOST_IP=10.250.$NET.1 NS_IP=10.250.$NET.2
VETH=mvb$$
s3_cleanup() {
  cleanup
  ip link del "$VETH" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
}
trap s3_cleanup EXIT
log "s3: network namespace $NS ($HOST_IP <-> $NS_IP)"
if ! { ip netns add "$NS" && ip link add "$VETH" type veth peer name "${VETH}n" &&
       ip link set "${VETH}n" netns "$NS" && ip addr add "$HOST_IP/30" dev "$VETH" && ip link set "$VETH" up &&
       ip netns exec "$NS" ip addr add "$NS_IP/30" dev "${VETH}n" &&
       ip netns exec "$NS" ip link set "${VETH}n" up && ip netns exec "$NS" ip link set lo up; } 2>"$RAW/netns.err"; then
  echo "bench: cannot make the network namespace: $(lastline "$RAW/netns.err")" >&2; exit 1
fi
S3DIR=$W/s3
mkdir -p "$S3DIR/$BUCKET"
ip netns exec "$NS" "$MYVAULT_S3S_FS" --host 127.0.0.1 --port 9000 --access-key "$AWS_ACCESS_KEY_ID" \
  --secret-key "$AWS_SECRET_ACCESS_KEY" "$S3DIR" >"$RAW/s3s.out" 2>&1 &
BGPIDS+=("$!")
# FAR: 20 ms RTT; NEAR: the same proxy without delay; CUT: 20 ms, drops one connection.
proxy() { # PORT DELAY_MS [options]
  local port=$1 delay=$2; shift 2
  ip netns exec "$NS" "$PROXY" "$NS_IP:$port" 127.0.0.1:9000 "$delay" --stats "$RAW/proxy-$port.json" "$@" \
    >"$RAW/proxy-$port.out" 2>&1 &
  BGPIDS+=("$!")
  PROXY_PID=$!
}
proxy 9100 "$DELAY_MS"
proxy 9200 0
FAR=http://$NS_IP:9100 NEAR=http://$NS_IP:9200
for _ in $(seq 1 100); do
  curl -s -o /dev/null "$FAR/" && curl -s -o /dev/null "$NEAR/" && break
  sleep 0.1
done
# The latency as a client sees it: TCP connect, then the first byte of a (refused) request.
V[s3.rtt]=$(curl -s -o /dev/null -w '%{time_connect} %{time_starttransfer}' "$FAR/" | awk '{ printf "%.1f ms to connect, %.1f ms to the first byte", $1 * 1000, $2 * 1000 }')
V[s3.rtt_near]=$(curl -s -o /dev/null -w '%{time_starttransfer}' "$NEAR/" | awk '{ printf "%.1f ms to the first byte", $1 * 1000 }')
proxy_bytes() { json "$RAW/proxy-$1.json" "d['$2']" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------------------------------------
# The data

log "s3: starting the source and loading sysbench (8 x $S3_ROWS rows)"
start_server src || { echo "bench: the source did not start: $(lastline "$RAW/server-src.log")" >&2; exit 1; }
P=$(port_of src)
SRC=$(url "$P")
SB=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$P" --mysql-user=root --mysql-db=sbtest --tables=8 --table-size="$S3_ROWS")
sql "$P" "CREATE DATABASE sbtest"
tm prepare "sysbench oltp_read_write ${SB[*]} --threads=2 prepare" || { echo "bench: sysbench prepare failed" >&2; exit 1; }
TABLES=8 checksums "$P" >"$W/ref.sum"
V[data.innodb_bytes]=$(sql "$P" "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'sbtest'")

# ---------------------------------------------------------------------------------------------
# The same work against each repository

# repo_of WHERE: the repository URL and the options to reach it
repo_of() {
  case $1 in
    local) echo "--repo $W/repo-local" ;;
    far) echo "--repo s3://$BUCKET/far --s3-endpoint $FAR" ;;
    near) echo "--repo s3://$BUCKET/near --s3-endpoint $NEAR" ;;
  esac
}
for where in local near far; do
  log "s3: $where"
  # shellcheck disable=SC2046
  R=$(repo_of "$where")
  "$MV" init $R >/dev/null 2>"$RAW/$where.init.err" || { fail "$where.backup" "init: $(lastline "$RAW/$where.init.err")"; continue; }
  tm "$where.backup" "$MV backup --source $SRC $NOTLS $R --jobs 2 --json" || continue
  V[$where.stored]=$(json "$RAW/$where.backup.out" 'd["repos"][0]["new_bytes"]')
  tm "$where.verify" "$MV verify $R --json"
done

# aws s3 cp --recursive, down and up, of what the far repository holds now: the snapshot that
# the restores below read (its packs, index, manifest)
V[aws.bytes]=$(find "$S3DIR/$BUCKET/far" -type f | grep -v '/[.]' | xargs -r du -cb | tail -1 | cut -f1)
V[aws.objects]=$(find "$S3DIR/$BUCKET/far" -type f | grep -vc '/[.]')

# The compared rows, ROUNDS times in turn (the machine is shared; one run moves by 10-30%),
# each showing its median round: restore into a server from local disk and from S3 at 20 ms;
# the same snapshot as files (`restore --dest`: the dump's chunks read, checked and
# decompressed, no server: the read side of a restore alone, what `aws s3 cp` is compared
# with); `aws s3 cp --recursive` down; and, given MYVAULT_S3_BASELINE (another myvault
# binary, the one before a change), its backup and `restore --dest` at 20 ms beside ours.
BASE=${MYVAULT_S3_BASELINE:-}
restore_round() { # WHERE ROUND
  local where=$1 i=$2 tp R
  R=$(repo_of "$where")
  start_server "t-$where" || { fail "$where.restore.r$i" "server did not start"; return; }
  tp=$(port_of "t-$where")
  tm "$where.restore.r$i" "$MV restore $R --target $(url "$tp") $NOTLS --jobs 2 --json" &&
    TABLES=8 verify "$where.restore.r$i" "$tp"
  stop_server "t-$where"
}
for i in $(seq 1 "$ROUNDS"); do
  log "s3: round $i of $ROUNDS"
  for where in local far; do restore_round "$where" "$i"; done
  for where in local near far; do
    tm "$where.dest.r$i" "$MV restore $(repo_of "$where") --dest $W/dest-$where --json"
    rm -rf "$W/dest-$where"
  done
  tm "aws.down.r$i" "$AWS --endpoint-url $FAR s3 cp --recursive --only-show-errors s3://$BUCKET/far/ $W/aws-down/" &&
    V[aws.down.r$i.got]=$(du -sb "$W/aws-down" | cut -f1)
  if [ -n "$BASE" ]; then
    tm "base.dest.r$i" "$BASE restore $(repo_of far) --dest $W/dest-base --json"
    rm -rf "$W/dest-base"
    # Which goes first alternates, so neither always follows the same work.
    order="new base"; [ $((i % 2)) = 0 ] && order="base new"
    # At 20 ms and through the delay line without delay: what a difference owes to distance.
    for who in $order; do
      bin=$MV; [ $who = base ] && bin=$BASE
      for at in far near; do
        ep=$FAR; [ $at = near ] && ep=$NEAR
        R="--repo s3://$BUCKET/bk-$at-$who-$i --s3-endpoint $ep"
        "$bin" init $R >/dev/null 2>&1 && tm "bk$at.$who.r$i" "$bin backup --source $SRC $NOTLS $R --jobs 2 --json"
      done
    done
  fi
  if [ "$i" = 1 ]; then
    tm aws.up "$AWS --endpoint-url $FAR s3 cp --recursive --only-show-errors $W/aws-down/ s3://$BUCKET/aws-up/"
  fi
  rm -rf "$W/aws-down"
done
for k in local.restore far.restore local.dest near.dest far.dest aws.down base.dest bkfar.new bkfar.base bknear.new bknear.base; do
  median_of "$k" 2>/dev/null
done
V[aws.down.got]=${V[aws.down.r1.got]:-}

# binlog stream: the binlog of a write load, uploaded by one `--until-caught-up` run into each
log "s3: binlog stream"
sql "$P" "FLUSH BINARY LOGS"
sysbench oltp_write_only "${SB[@]}" --threads=2 --time=20 --report-interval=0 run >"$RAW/stream.load.out" 2>&1
sql "$P" "FLUSH BINARY LOGS"
for where in local far; do
  R=$(repo_of "$where")
  if tm "$where.stream" "$MV binlog stream --source $SRC $NOTLS $R --spool $W/spool-$where --server-id 90$((RANDOM % 90 + 10)) --until-caught-up"; then
    "$MV" binlog list $R --json >"$RAW/$where.binlogs.json" 2>/dev/null
    V[$where.stream.bytes]=$(json "$RAW/$where.binlogs.json" 'sum(f["size"] for f in d["files"])' 2>/dev/null)
  fi
done


# ---------------------------------------------------------------------------------------------
# A dropped connection in the middle of an upload and of a download

log "s3: resumption after a dropped connection"
F=$W/random.bin
head -c $((48 << 20)) /dev/urandom >"$F"
V[cut.file]=$(stat -c %s "$F")
# 3 MiB: inside the first 4 MiB range or 5.3 MiB part a connection carries.
CUT_AFTER=$((3 << 20))
proxy 9300 "$DELAY_MS" --cut-after $CUT_AFTER
CUT=http://$NS_IP:9300
sleep 0.5
"$MV" init --repo "s3://$BUCKET/cut" --s3-endpoint "$CUT" >/dev/null 2>&1
if tm cut.up "$MV backup --path $F --repo s3://$BUCKET/cut --s3-endpoint $CUT --json"; then
  sleep 1.2
  V[cut.up.sent]=$(proxy_bytes 9300 up_bytes)
  V[cut.up.cut]=$(proxy_bytes 9300 cut)
  V[cut.up.stored]=$(json "$RAW/cut.up.out" 'd["repos"][0]["new_bytes"]')
fi
kill "$PROXY_PID" 2>/dev/null
proxy 9301 "$DELAY_MS" --cut-after $CUT_AFTER
CUT=http://$NS_IP:9301
sleep 0.5
if tm cut.down "$MV restore --repo s3://$BUCKET/cut --s3-endpoint $CUT --dest $W/cut-restored --json"; then
  sleep 1.2
  V[cut.down.received]=$(proxy_bytes 9301 down_bytes)
  V[cut.down.cut]=$(proxy_bytes 9301 cut)
  if cmp -s "$F" "$(find "$W/cut-restored" -type f -name random.bin | head -1)"; then V[cut.down.check]="restored file equals the original"
  else V[cut.down.check]="RESTORED FILE DIFFERS"; fi
fi
kill "$PROXY_PID" 2>/dev/null

# ---------------------------------------------------------------------------------------------
# Report

END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck disable=SC2016  # backquotes in single quotes are markdown
s3_report() {
  local where k label
  echo "Run: \`$CMDLINE\` on $START_DATE, CARGO_TARGET_DIR=$CARGO_TARGET_DIR ($BUILD_NOTE); $("$MV" --version 2>/dev/null)."
  echo "Machine: $MACHINE, at end $END_LOAD; **under load** (shared with other work)."
  echo "Rows of restore, \`restore --dest\` and \`aws s3 cp\` down: the median of $ROUNDS rounds run in turn (every round in the raw numbers, \`.rounds\`)."
  if [ -n "$BASE" ]; then
    echo "Baseline (MYVAULT_S3_BASELINE=$BASE, $("$BASE" --version 2>/dev/null)): backup into a fresh S3 prefix at 20 ms $(g bkfar.base) s against $(g bkfar.new) s for this build, at 0 ms $(g bknear.base) s against $(g bknear.new) s; \`restore --dest\` at 20 ms $(g base.dest) s (medians)."
  fi
  echo "Data: sysbench 8 x $S3_ROWS rows ($(mib "$(g data.innodb_bytes)") of InnoDB). S3: s3s-fs in a network namespace behind"
  echo "\`examples/delay_proxy\` (10 ms each way; the kernel has no netem). Seen from here: far $(g s3.rtt); near $(g s3.rtt_near)."
  echo
  echo "| work | local disk | S3, 0 ms (proxy only) | S3, 20 ms RTT | result |"
  echo "|---|---|---|---|---|"
  for k in backup restore dest verify stream; do
    case $k in
      backup) label='`backup --jobs 2`' ;; restore) label='`restore --jobs 2`' ;;
      dest) label='`restore --dest DIR` (the dump files, no server)' ;;
      verify) label='`verify` (reads every pack)' ;; stream) label='`binlog stream --until-caught-up` (20 s of write load)' ;;
    esac
    printf '| %s |' "$label"
    for where in local near far; do
      if { [ "$k" = stream ] || [ "$k" = restore ]; } && [ "$where" = near ]; then printf ' – |'; continue; fi
      printf ' %s s (%s RSS) |' "$(cell "$where.$k")" "$(rssm "$where.$k")"
    done
    case $k in
      backup) printf ' %s stored |\n' "$(mib "$(g far.stored)")" ;;
      restore) printf ' %s |\n' "$(g far.restore.check)" ;;
      stream) printf ' %s of binlog |\n' "$(mib "$(g far.stream.bytes)")" ;;
      *) echo " |" ;;
    esac
  done
  printf '| `aws s3 cp --recursive` down: the far repository after the backup (%s objects, %s) | – | – | %s s | awscli %s |\n' "$(g aws.objects)" "$(mib "$(g aws.bytes)")" "$(cell aws.down)" "$("$AWS" --version 2>&1 | cut -d' ' -f1)"
  printf '| `aws s3 cp --recursive` up, the same files | – | – | %s s | |\n' "$(cell aws.up)"
  echo
  echo "| ratio | value | target | verdict |"
  echo "|---|---|---|---|"
  ratio_row "restore: S3 at 20 ms / local disk" "$(g far.restore)" "$(g local.restore)" '<=' 1.3
  ratio_row "restore: S3 at 20 ms / aws s3 cp --recursive down" "$(g far.restore)" "$(g aws.down)" '<=' 1.0
  ratio_row "restore --dest (reading alone): S3 at 20 ms / aws s3 cp --recursive down" "$(g far.dest)" "$(g aws.down)" '<=' 1.0
  ratio_row "restore --dest: S3 at 20 ms / local disk" "$(g far.dest)" "$(g local.dest)" - -
  ratio_row "backup: S3 at 20 ms / local disk" "$(g far.backup)" "$(g local.backup)" - -
  if [ -n "$BASE" ]; then
    ratio_row "backup to S3 at 20 ms: this build / the baseline" "$(g bkfar.new)" "$(g bkfar.base)" - -
    ratio_row "backup to S3 at 0 ms (proxy only): this build / the baseline" "$(g bknear.new)" "$(g bknear.base)" - -
    ratio_row "restore --dest at 20 ms: the baseline / aws s3 cp --recursive down" "$(g base.dest)" "$(g aws.down)" - -
  fi
  ratio_row "backup: S3 at 20 ms / aws s3 cp --recursive up" "$(g far.backup)" "$(g aws.up)" - -
  ratio_row "verify: S3 at 20 ms / local disk" "$(g far.verify)" "$(g local.verify)" - -
  echo
  echo "Dropped connection (a delay line at 20 ms that cuts the first connection to carry $(mib "$CUT_AFTER"), once):"
  echo
  echo "| work | seconds | bytes on the wire / object bytes | result |"
  echo "|---|---|---|---|"
  printf '| `backup --path` of a %s random file | %s | %s sent for %s stored | %s connection cut |\n' "$(mib "$(g cut.file)")" "$(cell cut.up)" \
    "$(mib "$(g cut.up.sent)")" "$(mib "$(g cut.up.stored)")" "$(g cut.up.cut)"
  printf '| `restore --dest` of it | %s | %s received | %s connection cut; %s |\n' "$(cell cut.down)" "$(mib "$(g cut.down.received)")" \
    "$(g cut.down.cut)" "$(g cut.down.check)"
  echo
  raw_numbers
}
s3_report >"$BENCH/report-s3.md"
cat "$BENCH/report-s3.md"
write_doc s3-latency "$BENCH/report-s3.md"

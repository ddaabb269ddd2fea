# shellcheck shell=bash
# scripts/bench --scale: how myvault's cost grows with what users have (sourced by scripts/bench
# after its helpers; uses tm, start_server, V/E, ...). Five parts, each printed as a table:
#
#   data       sysbench 8 tables at 1x and 4x rows (16x with --full): backup (dump), restore,
#              clone backup, verify, PITR plan; seconds, peak RSS and peak extra disk at each
#              size, and the growth exponent k of time ~ size^k (least squares on log-log)
#   tables     10 and 10,000 tables of 3 rows: dump and restore per table, beside mydumper and
#              myloader 1.0
#   snapshots  a repository of 1,000 snapshots of a tiny database, made by myvault backup in a
#              loop: list, status, prune --plan, restore --plan
#   binlogs    10,000 archived binlog files (FLUSH BINARY LOGS in a loop, streamer running):
#              binlog list, restore --plan
#   index      a repository index of 1 M and 10 M entries (examples/index_scale.rs): open time,
#              peak RSS, bytes per entry
#
# Sizes can be lowered for a trial run: MYVAULT_SCALE_ROWS (rows per table at 1x, default
# 50000), MYVAULT_SCALE_TABLES ("10 1000 10000"), MYVAULT_SCALE_SNAPSHOTS (1000),
# MYVAULT_SCALE_BINLOGS (10000), MYVAULT_SCALE_INDEX ("1000000 10000000"),
# MYVAULT_SCALE_PARTS (default "data tables snapshots binlogs index").

SCALE_ROWS=${MYVAULT_SCALE_ROWS:-50000}
SCALE_FACTORS="1 4"
$full && SCALE_FACTORS="1 4 16"
SCALE_TABLES=${MYVAULT_SCALE_TABLES:-10 1000 10000}
SCALE_SNAPSHOTS=${MYVAULT_SCALE_SNAPSHOTS:-1000}
SCALE_BINLOGS=${MYVAULT_SCALE_BINLOGS:-10000}
SCALE_INDEX=${MYVAULT_SCALE_INDEX:-1000000 10000000}
SCALE_PARTS=${MYVAULT_SCALE_PARTS:-data tables snapshots binlogs index}
# mydumper 1.0's dump time grows faster than its table count (0.5 s at 10 tables, 14.5 s at
# 100 under load): at 10,000 tables each peer command is stopped after this many seconds,
# and its row then says so (its time is at least this; the ratio is an upper bound).
PEER_LIMIT=${MYVAULT_SCALE_PEER_LIMIT:-600}
# Every listing and plan must answer within this at 1,000 snapshots and 10,000 binlog files.
PLAN_TARGET=2
# Scratch space: myvault's TMPDIR and the clone's staging directory. Its peak size during a
# command is that command's "extra disk" (beyond the repository or target it writes).
SCR=$W/scratch
mkdir -p "$SCR"
export TMPDIR=$SCR
NOTLS="--ssl-mode=DISABLED"
MYDUMPER10=${MYVAULT_MYDUMPER10:-$TB/mydumper-1.0/bin/mydumper}
MYLOADER10=${MYVAULT_MYLOADER10:-$TB/mydumper-1.0/bin/myloader}
SCALE_START=$(date +%s)

# ---------------------------------------------------------------------------------------------
# Helpers

# disk_watch DIR: samples `du -sb DIR` every 0.2 s in the background, keeping the peak growth
# over its size now in $RAW/disk.peak; disk_unwatch KEY stores it as V[KEY.disk].
disk_watch() {
  local dir=$1 base
  base=$(du -sb "$dir" 2>/dev/null | cut -f1)
  echo 0 >"$RAW/disk.peak"
  (
    trap - EXIT
    peak=0
    while :; do
      b=$(du -sb "$dir" 2>/dev/null | cut -f1)
      if [ -n "$b" ] && [ $((b - base)) -gt "$peak" ]; then peak=$((b - base)); echo "$peak" >"$RAW/disk.peak"; fi
      sleep 0.2
    done
  ) &
  DISK_PID=$!
}
disk_unwatch() {
  kill "$DISK_PID" 2>/dev/null
  wait "$DISK_PID" 2>/dev/null
  V[$1.disk]=$(cat "$RAW/disk.peak")
}
# tmd KEY 'command': tm, with the peak growth of the scratch directory
tmd() {
  local rc
  disk_watch "$SCR"
  tm "$1" "$2"
  rc=$?
  disk_unwatch "$1"
  return $rc
}
# exponent KEY SIZE-KEY FACTORS...: the least-squares slope of log(V[data.F.KEY]) against
# log(V[data.F.SIZE-KEY]) over the factors that have both
exponent() {
  local key=$1 size=$2 f pts=""
  shift 2
  for f in "$@"; do
    has "data.$f.$key" && has "data.$f.$size" && pts+="${V[data.$f.$size]} ${V[data.$f.$key]}"$'\n'
  done
  printf '%s' "$pts" | awk 'NF == 2 && $1 > 0 && $2 > 0 { x = log($1); y = log($2); n++; sx += x; sy += y; sxx += x * x; sxy += x * y }
    END { if (n >= 2 && n * sxx - sx * sx > 0) printf "%.2f", (n * sxy - sx * sy) / (n * sxx - sx * sx) }'
}
diskm() { if has "$1.disk"; then mib "${V[$1.disk]}"; else echo –; fi; }
# sql_file PORT FILE: feeds a file of SQL to the server (untimed)
sql_file() { "$MYSQL" -uroot -h127.0.0.1 -P"$1" $NOTLS <"$2"; }
now_utc() { sql "$1" "SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%fZ')"; }
# tiny NAME: a server holding one table of one row (port in P) and an empty repository R
tiny() {
  start_server "$1" || return 1
  P=$(port_of "$1") R=$W/r$1
  sql "$P" "CREATE DATABASE tiny; CREATE TABLE tiny.t (id INT PRIMARY KEY, v INT); INSERT INTO tiny.t VALUES (1, 0)"
  "$MV" init --repo "$R" >/dev/null 2>&1
}
part() { [[ " $SCALE_PARTS " == *" $1 "* ]]; }
# peer KEY 'command': tm, stopped after PEER_LIMIT seconds; then V[KEY] is the limit (a lower
# bound) and V[KEY.limit] says so
peer() {
  tm "$1" "timeout $PEER_LIMIT $2"
  if [ $? = 124 ]; then
    V[$1]=$PEER_LIMIT V[$1.limit]="; STOPPED at the $PEER_LIMIT s limit: took longer"
    unset "E[$1]"
  fi
}

MV_VERSION=$("$MV" --version 2>/dev/null || echo unknown)

# ---------------------------------------------------------------------------------------------
# Data size

if part data; then
  for f in $SCALE_FACTORS; do
    rows=$((SCALE_ROWS * f))
    log "scale/data ${f}x: sysbench 8 x $rows rows"
    if ! start_server "d$f"; then fail "data.$f.dump" "server did not start: $(lastline "$RAW/server-d$f.log")"; continue; fi
    P=$(port_of "d$f")
    SRC=$(url "$P")
    sql "$P" "CREATE DATABASE sbtest"
    SBF=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$P" --mysql-user=root --mysql-db=sbtest
         --tables=8 --table-size="$rows")
    if ! tm "data.$f.prepare" "sysbench oltp_read_write ${SBF[*]} --threads=2 prepare"; then stop_server "d$f"; continue; fi
    V[data.$f.bytes]=$(sql "$P" "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'sbtest'")
    V[data.$f.rows]=$((rows * 8))
    TABLES=8 checksums "$P" >"$W/ref.sum"
    R=$W/rd$f RC=$W/rc$f
    "$MV" init --repo "$R" >/dev/null 2>&1
    tmd "data.$f.dump" "$MV backup --source $SRC $NOTLS --repo $R --jobs 2 --json"
    V[data.$f.stored]=$(du -sb "$R" | cut -f1)
    # A little write load for the archive the PITR plan reads (as long at every size).
    sysbench oltp_write_only "${SBF[@]}" --threads=2 --time=5 --report-interval=0 run >"$RAW/data.$f.load.out" 2>&1
    T=$(now_utc "$P")
    sql "$P" "FLUSH BINARY LOGS"
    tm "data.$f.stream" "$MV binlog stream --source $SRC $NOTLS --repo $R --spool $W/spool-d$f --server-id 9001 --until-caught-up"
    tm "data.$f.pitrplan" "$MV restore --repo $R --to-time $T --plan --json"
    "$MV" init --repo "$RC" >/dev/null 2>&1
    tmd "data.$f.clone" "$MV backup --source $SRC --repo $RC --method clone --mysqld $MYVAULT_MYSQLD_97 --clone-dir $SCR/clone --json"
    rm -rf "$RC"
    tmd "data.$f.verify" "$MV verify --repo $R --json"
    stop_server "d$f"
    if start_server "t$f"; then
      tp=$(port_of "t$f")
      tmd "data.$f.restore" "$MV restore --repo $R --target $(url "$tp") $NOTLS --jobs 2 --json" &&
        TABLES=8 verify "data.$f.restore" "$tp"
      stop_server "t$f"
    else
      fail "data.$f.restore" "server did not start: $(lastline "$RAW/server-t$f.log")"
    fi
    rm -rf "$R" "$W/spool-d$f"
  done
fi

# ---------------------------------------------------------------------------------------------
# Many tables

if part tables; then
  for n in $SCALE_TABLES; do
    log "scale/tables: $n tables of 3 rows"
    if ! start_server "m$n" --table-open-cache=20000 --open-files-limit=65535; then
      fail "tables.$n.myvault_dump" "server did not start: $(lastline "$RAW/server-m$n.log")"; continue
    fi
    P=$(port_of "m$n")
    # Made fast (no flush per statement), then put back: the dumps read, they do not write.
    sql "$P" "SET GLOBAL innodb_flush_log_at_trx_commit = 0; SET GLOBAL sync_binlog = 0; CREATE DATABASE many"
    awk -v n="$n" 'BEGIN { for (i = 1; i <= n; i++) printf "CREATE TABLE many.t%d (id INT PRIMARY KEY, v VARCHAR(32)); INSERT INTO many.t%d VALUES (1, \"a%d\"), (2, \"b\"), (3, \"c\");\n", i, i, i }' >"$W/many.sql"
    tm "tables.$n.create" "$MYSQL -uroot -h127.0.0.1 -P$P $NOTLS <$W/many.sql"
    sql "$P" "SET GLOBAL innodb_flush_log_at_trx_commit = 1; SET GLOBAL sync_binlog = 1"
    V[tables.$n.sum]=$(sql "$P" "SELECT COUNT(*), SUM(TABLE_ROWS >= 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'many'" | tr '\t' ' ')
    R=$W/rm$n
    "$MV" init --repo "$R" >/dev/null 2>&1
    tm "tables.$n.myvault_dump" "$MV backup --source $(url "$P") $NOTLS --repo $R --jobs 2 --json"
    rm -rf "$W/md10-$n"
    peer "tables.$n.mydumper_dump" "$MYDUMPER10 -h 127.0.0.1 -P $P -u root -t 2 -c zstd -B many -o $W/md10-$n"
    stop_server "m$n"
    for tool in myvault myloader; do
      if ! start_server "mt$n"; then fail "tables.$n.${tool}_restore" "server did not start"; continue; fi
      tp=$(port_of "mt$n")
      if [ "$tool" = myvault ]; then
        tm "tables.$n.myvault_restore" "$MV restore --repo $R --target $(url "$tp") $NOTLS --jobs 2 --json"
      else
        if has "tables.$n.mydumper_dump.limit"; then
          fail "tables.$n.myloader_restore" "not run: the mydumper dump was stopped at $PEER_LIMIT s"; stop_server "mt$n"; continue
        fi
        peer "tables.$n.myloader_restore" "$MYLOADER10 -h 127.0.0.1 -P $tp -u root -t 2 -d $W/md10-$n"
      fi
      got=$(sql "$tp" "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'many'")
      V[tables.$n.${tool}_restore.check]="$got of $n tables"
      stop_server "mt$n"
    done
    rm -rf "$R" "$W/md10-$n" "$W/many.sql"
  done
fi

# ---------------------------------------------------------------------------------------------
# Many snapshots

if part snapshots; then
  log "scale/snapshots: $SCALE_SNAPSHOTS backups of a tiny database into one repository"
  if tiny snaps; then
    # Each backup sees one changed row, as a daily snapshot sees a day's changes.
    t0=$(date +%s.%N) made=0
    for i in $(seq 1 "$SCALE_SNAPSHOTS"); do
      sql "$P" "UPDATE tiny.t SET v = $i"
      if "$MV" backup --source "$(url "$P")" $NOTLS --repo "$R" --jobs 1 >/dev/null 2>"$RAW/snaps.backup.err"; then
        made=$((made + 1))
      else
        fail snaps.make "backup $i: $(lastline "$RAW/snaps.backup.err")"; break
      fi
    done
    V[snaps.count]=$made
    V[snaps.make_per_backup]=$(calc "($(date +%s.%N) - $t0) / ($made > 0 ? $made : 1)")
    sql "$P" "UPDATE tiny.t SET v = -1"
    T=$(now_utc "$P")
    sql "$P" "FLUSH BINARY LOGS"
    "$MV" binlog stream --source "$(url "$P")" $NOTLS --repo "$R" --spool "$W/spool-snaps" --server-id 9001 \
      --until-caught-up >/dev/null 2>"$RAW/snaps.stream.err" || fail snaps.stream "$(lastline "$RAW/snaps.stream.err")"
    stop_server snaps
    tm snaps.list "$MV list --repo $R --json" &&
      V[snaps.listed]=$(json "$RAW/snaps.list.out" 'len(d["snapshots"])')
    tm snaps.status "$MV status --repo $R --json"
    tm snaps.prune_plan "$MV prune --repo $R --keep-last 7 --keep-daily 30 --plan --json"
    tm snaps.pitr_plan "$MV restore --repo $R --to-time $T --plan --json"
    V[snaps.repo_bytes]=$(du -sb "$R" | cut -f1)
    rm -rf "$R" "$W/spool-snaps"
  else
    fail snaps.list "server did not start"
  fi
fi

# ---------------------------------------------------------------------------------------------
# Many archived binlog files

if part binlogs; then
  log "scale/binlogs: $SCALE_BINLOGS binlog files (FLUSH BINARY LOGS in a loop, streamer running)"
  if tiny blogs; then
    "$MV" backup --source "$(url "$P")" $NOTLS --repo "$R" >/dev/null 2>"$RAW/blogs.backup.err" ||
      fail blogs.backup "$(lastline "$RAW/blogs.backup.err")"
    bg_start blogs.stream "$MV" binlog stream --source "$(url "$P")" $NOTLS --repo "$R" --spool "$W/spool-blogs" --server-id 9001 ||
      fail blogs.stream "did not start: $(lastline "$RAW/blogs.stream.err")"
    # One transaction in each file, so every file is a segment of the archive.
    awk -v n="$SCALE_BINLOGS" 'BEGIN { for (i = 1; i <= n; i++) printf "UPDATE tiny.t SET v = %d; FLUSH BINARY LOGS;\n", i }' >"$W/flush.sql"
    tm blogs.flush "$MYSQL -uroot -h127.0.0.1 -P$P $NOTLS <$W/flush.sql"
    T=$(now_utc "$P")
    sql "$P" "UPDATE tiny.t SET v = -1; FLUSH BINARY LOGS"
    bg_stop blogs.stream
    tm blogs.catchup "$MV binlog stream --source $(url "$P") $NOTLS --repo $R --spool $W/spool-blogs --server-id 9001 --until-caught-up"
    stop_server blogs
    tm blogs.list "$MV binlog list --repo $R --json" &&
      V[blogs.listed]=$(json "$RAW/blogs.list.out" 'len(d["files"])')
    tm blogs.pitr_plan "$MV restore --repo $R --to-time $T --plan --json"
    tm blogs.status "$MV status --repo $R --json"
    V[blogs.repo_bytes]=$(du -sb "$R" | cut -f1)
    rm -rf "$R" "$W/spool-blogs" "$W/flush.sql"
  else
    fail blogs.list "server did not start"
  fi
fi

# ---------------------------------------------------------------------------------------------
# Index size

if part index; then
  log "scale/index: building examples/index_scale"
  if build_example index_scale 2>"$RAW/index.build.err"; then
    IX=$CARGO_TARGET_DIR/release/examples/index_scale
    for n in $SCALE_INDEX; do
      rm -rf "$W/rindex"
      if tm "index.$n.write" "$IX write $W/rindex $n"; then
        V[index.$n.file_bytes]=$(json "$RAW/index.$n.write.out" 'd["index_bytes"]')
        if tm "index.$n.open" "$IX open $W/rindex"; then
          V[index.$n.open_seconds]=$(json "$RAW/index.$n.open.out" 'd["open_seconds"]')
          V[index.$n.per_entry]=$(json "$RAW/index.$n.open.out" 'd["bytes_per_entry"]')
          V[index.$n.entries]=$(json "$RAW/index.$n.open.out" 'd["entries"]')
        fi
      fi
      rm -rf "$W/rindex"
    done
  else
    for n in $SCALE_INDEX; do fail "index.$n.open" "cargo build --example index_scale failed: $(lastline "$RAW/index.build.err")"; done
  fi
fi

# ---------------------------------------------------------------------------------------------
# Report

V[scale.seconds]=$(( $(date +%s) - SCALE_START ))
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# shellcheck disable=SC2016  # backquotes in single quotes are markdown
scale_report() {
  local f op k n per r
  echo "Run: \`$CMDLINE\` on $START_DATE, CARGO_TARGET_DIR=$CARGO_TARGET_DIR ($BUILD_NOTE); $MV_VERSION."
  echo "Machine: $MACHINE, at end $END_LOAD; **under load** (shared with other work). Whole run: $(g scale.seconds) s."
  echo "Extra disk: the peak growth of myvault's scratch space (TMPDIR, the clone's staging directory)"
  echo "during the command, beyond the repository or server it writes. Peak RSS: /usr/bin/time's maximum resident set."
  echo
  if part data; then
    echo "**Data size** (sysbench \`oltp_read_write prepare --tables=8\`, rows per table: $(for f in $SCALE_FACTORS; do printf '%sx = %s ' "$f" $((SCALE_ROWS * f)); done | sed 's/ $//'))"
    echo
    printf '| work |'; for f in $SCALE_FACTORS; do printf ' %sx (%s) |' "$f" "$(mib "$(g "data.$f.bytes")")"; done; echo " k (time ~ size^k) | target |"
    printf '|---|'; for _ in $SCALE_FACTORS; do printf -- '---|'; done; echo "---|---|"
    for op in dump restore clone verify pitrplan; do
      local label
      case $op in
        dump) label='`backup --jobs 2` (logical)' ;;
        restore) label='`restore --jobs 2`' ;;
        clone) label='`backup --method clone`' ;;
        verify) label='`verify` (reads every pack)' ;;
        pitrplan) label='`restore --to-time --plan`' ;;
      esac
      printf '| %s |' "$label"
      for f in $SCALE_FACTORS; do
        if has "data.$f.$op"; then
          printf ' %s s, %s RSS%s |' "$(fmt2 "${V[data.$f.$op]}")" "$(rssm "data.$f.$op")" \
            "$(has "data.$f.$op.disk" && printf ', +%s disk' "$(diskm "data.$f.$op")")"
        else
          printf ' FAILED: %s |' "${E[data.$f.$op]:-not measured}"
        fi
      done
      # shellcheck disable=SC2086
      k=$(exponent "$op" bytes $SCALE_FACTORS)
      if [ "$op" = pitrplan ]; then
        printf ' %s | (same archive at every size) |\n' "${k:-–}"
      else
        printf ' %s | <= 1.05: %s |\n' "${k:-–}" "$(verdict "$k" '<=' 1.05)"
      fi
    done
    for f in $SCALE_FACTORS; do has "data.$f.restore.check" && echo "" && printf '%sx restore: %s. ' "$f" "${V[data.$f.restore.check]}"; done
    echo
    echo
  fi
  if part tables; then
    echo "**Many tables** (\`CREATE TABLE (id INT PRIMARY KEY, v VARCHAR(32))\`, 3 rows each; each restore into a fresh server; mydumper/myloader v1.0.1-3)"
    echo
    echo "| tables | work | tool | seconds | per table (ms) | result |"
    echo "|---|---|---|---|---|---|"
    for n in $SCALE_TABLES; do
      for k in myvault_dump mydumper_dump myvault_restore myloader_restore; do
        case $k in
          myvault_dump) r='`myvault backup --jobs 2`' ;;
          mydumper_dump) r='`mydumper -t 2 -c zstd`' ;;
          myvault_restore) r='`myvault restore --jobs 2`' ;;
          myloader_restore) r='`myloader -t 2`' ;;
        esac
        per=$(has "tables.$n.$k" && awk -v s="${V[tables.$n.$k]}" -v n="$n" 'BEGIN { printf "%.2f", 1000 * s / n }')
        printf '| %s | %s | %s | %s | %s | %s |\n' "$n" "${k#*_}" "$r" "$(cell "tables.$n.$k")" "${per:-–}" \
          "$(g "tables.$n.$k.check")$(has "tables.$n.$k.check" && printf '; ')$(has "tables.$n.$k" && printf 'peak RSS %s' "$(rssm "tables.$n.$k")")$(g "tables.$n.$k.limit")"
      done
    done
    echo
    # At every count: mydumper 1.0 does not finish 10,000 tables within the limit, so the
    # middle count is the largest one where both tools are measured.
    echo "| ratio | value | target | verdict |"
    echo "|---|---|---|---|"
    for n in $SCALE_TABLES; do
      ratio "per-table dump: myvault / mydumper 1.0 ($n tables)" "$(g "tables.$n.myvault_dump")" "$(g "tables.$n.mydumper_dump")" '<=' 1.0
      ratio "per-table restore: myvault / myloader 1.0 ($n tables)" "$(g "tables.$n.myvault_restore")" "$(g "tables.$n.myloader_restore")" '<=' 1.0
    done
    echo
  fi
  if part snapshots; then
    echo "**$(g snaps.count) snapshots** in one repository (a tiny database, backed up in a loop: $(fmt2 "$(g snaps.make_per_backup)") s per backup; $(mib "$(g snaps.repo_bytes)") of repository)"
    echo
    echo "| command | seconds | peak RSS | target | verdict |"
    echo "|---|---|---|---|---|"
    for k in list status prune_plan pitr_plan; do
      case $k in
        list) r='`list`' ;; status) r='`status`' ;; prune_plan) r='`prune --keep-last 7 --keep-daily 30 --plan`' ;;
        pitr_plan) r='`restore --to-time --plan` (picks the newest snapshot before T)' ;;
      esac
      printf '| %s | %s | %s | < %s s | %s |\n' "$r" "$(cell "snaps.$k")" "$(rssm "snaps.$k")" "$PLAN_TARGET" "$(verdict "$(g "snaps.$k")" '<' "$PLAN_TARGET")"
    done
    echo
  fi
  if part binlogs; then
    echo "**$(g blogs.listed) archived binlog files** (\`UPDATE; FLUSH BINARY LOGS\` $SCALE_BINLOGS times in $(fmt2 "$(g blogs.flush)") s with \`binlog stream\` running; catching up after: $(fmt2 "$(g blogs.catchup)") s; $(mib "$(g blogs.repo_bytes)") of repository)"
    echo
    echo "| command | seconds | peak RSS | target | verdict |"
    echo "|---|---|---|---|---|"
    for k in list pitr_plan status; do
      case $k in list) r='`binlog list`' ;; pitr_plan) r='`restore --to-time --plan`' ;; status) r='`status`' ;; esac
      printf '| %s | %s | %s | < %s s | %s |\n' "$r" "$(cell "blogs.$k")" "$(rssm "blogs.$k")" "$PLAN_TARGET" "$(verdict "$(g "blogs.$k")" '<' "$PLAN_TARGET")"
    done
    echo
  fi
  if part index; then
    echo "**Index** (synthetic: 32 entries per pack, 1,000 packs per index file; \`examples/index_scale.rs\` loads it through \`Repo::with_index\` in a fresh process)"
    echo
    echo "| entries | index files on disk | open (load) seconds | peak RSS | growth per entry | 10 M entries at this rate | target |"
    echo "|---|---|---|---|---|---|---|"
    for n in $SCALE_INDEX; do
      if has "index.$n.open"; then
        local at10m
        at10m=$(awk -v b="$(g "index.$n.per_entry")" 'BEGIN { printf "%.0f", b * 1e7 }')
        # Only a measurement at 10 M entries or more decides: below, the map's power-of-two
        # slack (half empty just after it doubles) makes the per-entry figure swing.
        printf '| %s | %s | %s | %s | %s B | %s | < 1 GiB: %s |\n' "$n" "$(mib "$(g "index.$n.file_bytes")")" \
          "$(fmt2 "$(g "index.$n.open_seconds")")" "$(rssm "index.$n.open")" "$(g "index.$n.per_entry")" \
          "$(mib "$at10m")" "$(if [ "$n" -ge 10000000 ]; then verdict "$(( ${V[index.$n.open.rss_kb]} * 1024 ))" '<' 1073741824; else echo "(extrapolated; the 10 M row decides)"; fi)"
      else
        printf '| %s | – | FAILED: %s | – | – | – | < 1 GiB |\n' "$n" "${E[index.$n.open]:-${E[index.$n.write]:-not measured}}"
      fi
    done
    echo
  fi
  raw_numbers
}

START_DATE=${START_DATE:-$(date -u '+%Y-%m-%d %H:%M UTC')}
# The ratio table of scripts/bench, defined after this file is sourced: a copy for ours.
ratio() {
  local label=$1 a=$2 b=$3 op=$4 target=$5 r
  if [ -n "$a" ] && [ -n "$b" ] && awk -v b="$b" 'BEGIN { exit !(b > 0) }'; then
    r=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }')
    printf '| %s | %sx | %s %sx | %s |\n' "$label" "$r" "$op" "$target" "$(verdict "$r" "$op" "$target")"
  else
    printf '| %s | not measured | %s %sx | – |\n' "$label" "$op" "$target"
  fi
}
scale_report >"$BENCH/report-scale.md"
cat "$BENCH/report-scale.md"
write_doc scale "$BENCH/report-scale.md"

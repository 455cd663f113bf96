#!/bin/bash
# threads.sh PID SECONDS
#
# CPU time of each thread of process PID over the next SECONDS: one line per thread that used
# any, `TID NAME CPU_SECONDS PERCENT`, from utime + stime in /proc/PID/task/TID/stat (clock
# ticks, getconf CLK_TCK). With multiqueue, vhost-net-user's worker threads (`vring_worker`,
# one per queue pair, in pair order) show how the pairs share the work.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 PID SECONDS" >&2; exit 2; }
PID=$1 SECS=$2
TCK=$(getconf CLK_TCK)

# TID NAME TICKS for every thread now. The name is in parentheses and may hold spaces, so the
# fields after it are counted from the closing parenthesis.
sample() {
  for stat in /proc/"$PID"/task/*/stat; do
    line=$(cat "$stat" 2>/dev/null) || continue
    tid=${line%% *}
    name=${line#*(}; name=${name%)*}
    rest=${line##*) }
    # After the name: state(1) ppid ... utime is field 14 of stat, the 12th after the name.
    read -r -a f <<< "$rest"
    echo "$tid ${name// /_} $(( f[11] + f[12] ))"
  done
}

before=$(sample)
sleep "$SECS"
after=$(sample)
join <(sort <<< "$before") <(sort <<< "$after") |
  awk -v tck="$TCK" -v secs="$SECS" '{ d = ($5 - $3) / tck; if (d > 0) printf "%s %s %.2f %.0f%%\n", $1, $2, d, 100 * d / secs }' |
  sort -n

#!/usr/bin/env bash
# Build release, run every benchmark, write bench/REPORT.md (machine, date, medians, p99s).
# Usage: bash bench/run.sh [seconds-per-wrk-run]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
command -v wrk >/dev/null || { echo "installing wrk"; sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo; $sudo_cmd apt-get install -y wrk >/dev/null; }
cargo build --release --quiet --bin longship
export LONGSHIP_BIN="$root/target/release/longship"
secs="${1:-10}"
report="$here/REPORT.md"
tmp="$(mktemp)"
{
  echo "# Longship benchmark report"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- commit: $(git rev-parse --short HEAD)"
  echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -sr)"
  echo "- load generator: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2) on the same machine (loopback)"
  echo "- reproduce: \`bash bench/run.sh\`"
  echo
} > "$tmp"
for script in system_bench.py overhead_bench.py auth_bench.py fs_bench.py sessions_bench.py resources_bench.py fair_bench.py s3_bench.py s3_scale_bench.py search_bench.py harden_bench.py vector_gc_bench.py budget_bench.py; do
  if [ -f "$here/$script" ]; then
    echo "== $script" >&2
    # resources_bench.py takes file counts, vector_gc_bench.py its sizes from the environment.
    case "$script" in
      resources_bench.py|vector_gc_bench.py) args=() ;;
      *) args=("$secs") ;;
    esac
    (cd "$here" && python3 "$script" "${args[@]}") >> "$tmp" || echo "**$script failed** (see stderr)" >> "$tmp"
  fi
done
mv "$tmp" "$report"
echo "wrote $report"

#!/usr/bin/env bash
# Render a run's report.html in headless Chromium to a PNG, to look at the report as a reader
# sees it. Not part of the tests or CI: it needs Chromium (Debian: `apt-get install chromium`).
#
#   scripts/report_screenshot.sh RUN_DIR [OUT.png] [WIDTH] [HEIGHT]
#
# RUN_DIR/report.html is written by `c2fnas run` (or `c2fnas run DATA --run RUN_DIR --stages
# report` to rebuild it). The page is cut at HEIGHT pixels (default 4000): raise it for a long
# report. Figures are loaded from the run folder, so the PNG shows them as the browser does.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 4 ]]; then
    echo "usage: $0 RUN_DIR [OUT.png] [WIDTH] [HEIGHT]" >&2
    exit 2
fi
run_dir=$(cd "$1" && pwd)
out=${2:-$run_dir/report.png}
width=${3:-1100}
height=${4:-4000}
report=$run_dir/report.html
if [[ ! -f $report ]]; then
    echo "error: $report: no report; run \`c2fnas run ... --stages report\` first" >&2
    exit 1
fi
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [[ -z $browser ]]; then
    echo "error: no Chromium found; on Debian: apt-get install -y chromium" >&2
    exit 1
fi
out=$(realpath -m "$out")
# --no-sandbox: Chromium refuses to run as root with its sandbox (containers, CI machines)
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size="$width,$height" --screenshot="$out" "file://$report" 2>/dev/null
echo "$out"

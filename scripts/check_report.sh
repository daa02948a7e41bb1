#!/usr/bin/env bash
# Renders a run's report.html in headless Chromium (Debian's `chromium`) and fails on a broken
# image, a chart that drew nothing, or any console error; then checks that the check itself
# fails on a copy with a broken image and a script error.
#
#     scripts/check_report.sh RUN/report.html
set -euo pipefail
html=$(realpath "$1")
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome) || {
  echo "no chromium: apt-get install chromium" >&2
  exit 2
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The checker runs after the page has loaded and only reads it: every image decoded with a
# size, every chart with drawn paths; its verdict becomes the page title.
checker='<script>addEventListener("load",()=>{const imgs=[...document.images];const broken=imgs.filter(i=>!(i.complete&&i.naturalWidth>0)).length;const charts=[...document.querySelectorAll("svg")];const empty=charts.filter(s=>s.querySelectorAll("path,polyline,line").length===0).length;document.title="CHECK images="+imgs.length+" broken="+broken+" charts="+charts.length+" empty="+empty;});</script>'

# check PAGE: 0 when the page renders clean.
check() {
  local page=$1 name=$2
  "$browser" --headless --no-sandbox --disable-gpu --enable-logging=stderr --v=0 \
    --virtual-time-budget=5000 --dump-dom "file://$page" >"$tmp/$name.dom" 2>"$tmp/$name.log" || true
  local verdict
  verdict=$(grep -o '<title>CHECK[^<]*</title>' "$tmp/$name.dom" | sed 's/<[^>]*>//g' || true)
  local errors
  errors=$(grep -E 'CONSOLE|Uncaught' "$tmp/$name.log" | grep -iE 'error|uncaught' || true)
  echo "$name: ${verdict:-no verdict (the page did not load)}"
  [ -n "$errors" ] && echo "$name: console: $errors"
  [[ -n "$verdict" && "$verdict" == *"broken=0"* && "$verdict" == *"empty=0"* \
     && "$verdict" != *"charts=0"* && -z "$errors" ]]
}

# insert TEXT FILE: FILE with TEXT before </body> (perl: `&` in the checker stays literal).
insert() { perl -pe 'BEGIN { $t = shift } s#</body>#$t</body>#' "$1" "$2"; }

insert "$checker" "$html" >"$tmp/report.html"
check "$tmp/report.html" report || { echo "FAIL: $html does not render clean" >&2; exit 1; }

# The check must catch what it is for.
insert "<img src=\"missing.png\"><script>undefined_function();</script>$checker" "$html" \
  >"$tmp/broken.html"
if check "$tmp/broken.html" broken >/dev/null; then
  echo "FAIL: the check passed a page with a broken image and a script error" >&2
  exit 1
fi
echo "OK: $html renders with every image and chart, and no console error"

#!/usr/bin/env bash
# Print the Debian archive this machine's apt already uses (not its security archive), so that
# debootstrap fetches from the same mirror and no mirror's host name is written into the repo.
# Exits 1, saying why, when apt names none.
set -euo pipefail
shopt -s nullglob
apt=${APT_ETC:-/etc/apt}  # another folder for the tests

mirror=$(
  {
    # deb822 files: one paragraph per source, with Types/URIs/Suites fields.
    for file in "$apt"/sources.list.d/*.sources; do
      awk 'BEGIN { RS = ""; FS = "\n" }
           /(^|\n)Types:[^\n]*deb/ && !/(^|\n)Enabled: *no/ {
             uri = ""; suites = ""
             for (i = 1; i <= NF; i++) {
               if ($i ~ /^URIs:/) { uri = $i; sub(/^URIs: */, "", uri); sub(/ .*/, "", uri) }
               if ($i ~ /^Suites:/) { suites = $i }
             }
             if (uri != "" && suites !~ /-security/ && uri ~ /debian\/?$/) print uri
           }' "$file"
    done
    # One-line format: deb [options] URI SUITE COMPONENTS...
    for file in "$apt"/sources.list "$apt"/sources.list.d/*.list; do
      [ -f "$file" ] || continue
      sed -nE 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+([^[:space:]]+).*/\2 \3/p' "$file" |
        awk '$2 !~ /-security/ && $1 ~ /debian\/?$/ { print $1 }'
    done
  } | head -n 1
)
if [ -z "$mirror" ]; then
  echo "debian-mirror: apt names no Debian archive in $apt/sources.list(.d); add one" >&2
  exit 1
fi
echo "${mirror%/}"

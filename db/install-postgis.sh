#!/usr/bin/env bash
# Makes sure a PostgreSQL server with PostGIS is installed (for the embedded local cluster).
# As root it installs the Debian/Ubuntu packages; otherwise it prints the exact command.
set -euo pipefail

have_postgis() {
  local ctl version
  for ctl in /usr/lib/postgresql/*/bin/pg_ctl; do
    [ -x "$ctl" ] || continue
    version=$(basename "$(dirname "$(dirname "$ctl")")")
    [ -f "/usr/share/postgresql/$version/extension/postgis.control" ] && return 0
  done
  return 1
}

need_venv=0
python3 -c 'import ensurepip, venv' 2>/dev/null || need_venv=1

if have_postgis && [ "$need_venv" = 0 ]; then
  exit 0
fi

# With a server already installed, add PostGIS for that major version; else the distribution's.
pkgs=()
if ! have_postgis; then
  server=$(ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sed -E 's#.*/postgresql/([0-9]+)/.*#\1#' | sort -n | tail -1 || true)
  if [ -n "$server" ]; then
    pkgs+=("postgresql-$server-postgis-3")
  else
    pkgs+=(postgresql postgresql-postgis)
  fi
fi
[ "$need_venv" = 1 ] && pkgs+=(python3-venv)

if [ "$(id -u)" = 0 ]; then
  echo "installing ${pkgs[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" postgresql-contrib >/dev/null
  have_postgis || { echo "PostGIS still not found after apt-get install" >&2; exit 1; }
else
  echo "PostgreSQL with PostGIS is missing. Install it with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${pkgs[*]}" >&2
  echo "or set DATABASE_URL to an existing PostGIS database." >&2
  exit 1
fi

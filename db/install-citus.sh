#!/usr/bin/env bash
# Makes sure the Citus extension is installed into the PostgreSQL server the local cluster uses
# (for `trips db up --workers N`). Idempotent: does nothing when citus.so and citus.control are
# there. Otherwise, as root: a Debian package when the apt sources have one, else a build from
# the source archive named by CITUS_SOURCE (a path or an http(s) URL; default
# ../shared/vendor/citus-<version>.tar.gz next to the project, if there). The build is cached
# outside the clone, in $CITUS_CACHE_DIR/citus-<version>-pg<major>/ (default /var/cache/trips):
# a second run only re-copies the staged install files. Not root: prints the commands instead.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_root=${CITUS_CACHE_DIR:-/var/cache/trips}
log() { echo "install-citus: $*" >&2; }

# The server the local cluster runs (service/db/cluster.py pg_bindir): newest with PostGIS.
major=${PG_MAJOR:-}
if [ -z "$major" ]; then
  for ctl in /usr/lib/postgresql/*/bin/pg_ctl; do
    [ -x "$ctl" ] || continue
    v=$(basename "$(dirname "$(dirname "$ctl")")")
    [ -f "/usr/share/postgresql/$v/extension/postgis.control" ] || continue
    if [ -z "$major" ] || [ "$v" -gt "$major" ]; then major=$v; fi
  done
fi
if [ -z "$major" ]; then
  log "no PostgreSQL server with PostGIS found; run db/install-postgis.sh first"
  exit 1
fi
pg_config=/usr/lib/postgresql/$major/bin/pg_config
pkglibdir=$("$pg_config" --pkglibdir)
extdir=$("$pg_config" --sharedir)/extension

if [ -f "$pkglibdir/citus.so" ] && [ -f "$extdir/citus.control" ]; then
  log "citus $(sed -nE "s/^default_version = '(.*)'/\1/p" "$extdir/citus.control") is installed for PostgreSQL $major"
  exit 0
fi

is_root=0
[ "$(id -u)" = 0 ] && is_root=1

# 1. A Debian package (Citus' own apt repository names them postgresql-15-citus-12.1 etc.).
pkg=$(apt-cache search --names-only "^postgresql-$major-citus" 2>/dev/null | awk '{print $1}' | sort -V | tail -1 || true)
if [ -n "$pkg" ]; then
  if [ "$is_root" = 1 ]; then
    log "installing the Debian package $pkg"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  else
    log "Citus is missing. Install it with:"
    echo "  sudo apt-get install -y $pkg" >&2
    exit 1
  fi
  [ -f "$pkglibdir/citus.so" ] || { log "$pkg did not install $pkglibdir/citus.so"; exit 1; }
  exit 0
fi

# 2. A build from source, cached by Citus version and PostgreSQL major.
source=${CITUS_SOURCE:-}
if [ -z "$source" ]; then
  source=$(ls "$root"/../shared/vendor/citus-*.tar.gz 2>/dev/null | sort -V | tail -1 || true)
fi
if [ -z "$source" ]; then
  log "no Debian package for Citus and no source archive: set CITUS_SOURCE to the path or URL"
  log "of a Citus source .tar.gz (Citus 12.1 supports PostgreSQL 14-16)"
  exit 1
fi
if [[ "$source" != http://* && "$source" != https://* ]]; then
  [ -f "$source" ] || { log "CITUS_SOURCE $source: no such file"; exit 1; }
  source=$(realpath "$source")
fi
name=$(basename "$source")
version=$(sed -nE 's/^(citus-)?v?([0-9][0-9.]*[0-9])\.tar\.gz$/\2/p' <<<"$name")
[ -n "$version" ] || { log "cannot read a Citus version from the archive name $name"; exit 1; }
cache=$cache_root/citus-$version-pg$major
stage=$cache/stage

install_staged() {
  # tar keeps the existing directories' owners and modes (--no-overwrite-dir).
  tar -C "$stage" -cf - . | tar -C / -xf - --no-overwrite-dir
  log "copied the cached build of citus $version from $stage"
}

build_deps=(libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libssl-dev libselinux1-dev libxslt1-dev libpam0g-dev)
if [ "$is_root" = 0 ]; then
  log "Citus is missing for PostgreSQL $major. As root, run:"
  if [ -f "$cache/complete" ]; then
    echo "  sudo sh -c 'tar -C $stage -cf - . | tar -C / -xf - --no-overwrite-dir'" >&2
  else
    echo "  sudo CITUS_SOURCE=$source bash $root/db/install-citus.sh" >&2
    echo "which installs postgresql-server-dev-$major ${build_deps[*]}, then builds" >&2
    echo "  ./configure PG_CONFIG=$pg_config && make -j$(nproc) && make install" >&2
  fi
  exit 1
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/citus.lock"
flock 9  # one build at a time (two test sessions may ask at once)

if [ -f "$cache/complete" ]; then
  install_staged
  exit 0
fi

# postgresql-server-dev-N depends on nothing that upgrades postgresql-N when its version is the
# server's own; the newest one would upgrade the server package, and a server still running
# from the replaced binaries then fails to load its libraries (plpgsql.so: undefined symbol).
server_version() { dpkg-query -W -f='${Version}' "postgresql-$major" 2>/dev/null || true; }
before=$(server_version)
dev="postgresql-server-dev-$major"
if [ -n "$before" ] && apt-cache madison "$dev" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' | grep -qxF "$before"; then
  dev="$dev=$before"
fi
log "installing the build dependencies: $dev ${build_deps[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$dev" "${build_deps[@]}" >/dev/null
after=$(server_version)

if [ "$before" != "$after" ]; then
  log "postgresql-$major changed from ${before:-none} to $after: restarting servers on the old binaries"
  hash=$(printf '%s' "$root" | sha256sum | cut -c1-10)
  for exe in /proc/[0-9]*/exe; do
    pid=$(basename "$(dirname "$exe")")
    target=$(readlink "$exe" 2>/dev/null || true)
    [[ "$target" == "/usr/lib/postgresql/$major/bin/postgres (deleted)" ]] || continue
    ppid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null || echo 0)
    [[ "$(readlink "/proc/$ppid/exe" 2>/dev/null || true)" == /usr/lib/postgresql/* ]] && continue
    data=$(readlink "/proc/$pid/cwd")
    owner=$(stat -c %U "$data")
    if [[ "$data" == /var/lib/postgresql/$major/* ]]; then
      cmd=(pg_ctlcluster "$major" "$(basename "$data")" restart)
    elif [[ "$data" == /var/tmp/trips-pg-$hash* || "$data" == "$root"/.local/* ]]; then
      cmd=(runuser -u "$owner" -- "/usr/lib/postgresql/$major/bin/pg_ctl" -D "$data"
        -l "$(dirname "$data")/server.log" -m fast -w restart)
    else
      logopt=""
      [[ "$data" == /var/tmp/trips-pg-* ]] && logopt=" -l $(dirname "$data")/server.log"
      log "NOT restarted (not this project's): pid $pid, data $data; restart it with"
      echo "  runuser -u $owner -- /usr/lib/postgresql/$major/bin/pg_ctl -D $data$logopt -m fast -w restart" >&2
      continue
    fi
    log "restarting pid $pid ($data): ${cmd[*]}"
    "${cmd[@]}" >/dev/null || log "restart of $data failed"
  done
fi

if [[ "$source" == http://* || "$source" == https://* ]]; then
  mkdir -p "$cache_root/downloads"
  archive=$cache_root/downloads/$name
  [ -f "$archive" ] || { curl -fsSL -o "$archive.tmp" "$source" && mv "$archive.tmp" "$archive"; }
else
  archive=$source
fi

log "building citus $version for PostgreSQL $major in $cache (a few minutes; log: $cache/build.log)"
start=$(date +%s)
rm -rf "$cache/src" "$stage"
mkdir -p "$cache/src"
tar -C "$cache/src" --strip-components=1 -xzf "$archive"
(
  cd "$cache/src"
  ./configure PG_CONFIG="$pg_config"
  make -j"$(nproc)"
  make install DESTDIR="$stage"
) >"$cache/build.log" 2>&1 || { tail -30 "$cache/build.log" >&2; log "build failed"; exit 1; }
touch "$cache/complete"
install_staged
[ -f "$pkglibdir/citus.so" ] && [ -f "$extdir/citus.control" ] || { log "citus.so missing after install"; exit 1; }
log "built and installed citus $version in $(($(date +%s) - start)) s"

# Bundle store sync: S3 prefix -> the pod's store folder (docs/deployment.md, "Bundle store on S3").
# Runs in the aws CLI image as "sh -c <this> bundle-sync once|loop": once in the init container
# (fails until serving.json names a complete version), loop in the sidecar.
#
# One pass, in this order, so the worker never sees a pointer to a version whose files are not all
# there (the store contract of stream_app/core/store.py):
#   1. pointers: serving.json and shadow.json are copied from S3 into a hidden staging folder;
#   2. versions: every <bundle_version>/ folder is synced into the store, pointers excluded;
#   3. pointers last: a staged pointer replaces the store's (atomic rename) only when every file of
#      its version's manifest is there with its sha256; otherwise it waits for a later pass.
# A pointer read in step 1 was uploaded after its version (operators push versions first), so the
# sync of step 2, which lists S3 after step 1, has all its files.
set -u
mode="${1:-loop}"
src="${BUNDLE_S3_URI%/}"
store="${BUNDLE_STORE%/}"
interval="${BUNDLE_SYNC_INTERVAL_SECONDS:-15}"
attempts="${BUNDLE_SYNC_ATTEMPTS:-12}"
retry="${BUNDLE_SYNC_RETRY_SECONDS:-5}"
stage="$store/.sync"

log() { echo "bundle-sync $(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; }
trap 'log "stopping"; exit 0' TERM INT

version_of() {  # the "version" field of a pointer file
  tr -d '\n' < "$1" | grep -o '"version": *"[^"]*"' | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/'
}

complete() {  # version $1 is a plain name and every file of its manifest is present and intact
  v="$1"
  if ! printf '%s\n' "$v" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'; then
    log "a pointer names '$v', which is not a version name"; return 1
  fi
  [ -f "$stage/verified-$v" ] && return 0
  manifest="$store/$v/manifest.json"
  if [ ! -f "$manifest" ]; then log "version $v: $manifest is missing"; return 1; fi
  tr -d '\n' < "$manifest" | grep -o '"files": *{[^}]*}' | grep -o '"[^"]*": *"[0-9a-f]\{64\}"' \
    | sed 's/^"\([^"]*\)": *"\([0-9a-f]*\)"$/\2  \1/' > "$stage/sha256sums"
  if [ ! -s "$stage/sha256sums" ]; then log "version $v: no file checksums in $manifest"; return 1; fi
  if ! (cd "$store/$v" && sha256sum -c --quiet "$stage/sha256sums"); then
    log "version $v: files missing or corrupt"; return 1
  fi
  touch "$stage/verified-$v"
}

publish() {  # $1: serving.json or shadow.json, from the staging folder into the store, atomically
  staged="$stage/pointers/$1"
  current="$store/$1"
  if [ ! -f "$staged" ]; then
    if [ "$1" = shadow.json ] && [ -f "$current" ]; then rm -f "$current" && log "shadow cleared"; fi
    return 0
  fi
  if [ -f "$current" ] && [ "$(cat "$staged")" = "$(cat "$current")" ]; then return 0; fi
  v="$(version_of "$staged")"
  if ! complete "$v"; then log "$1 -> $v held back until $v is complete"; return 1; fi
  cp "$staged" "$store/.$1.tmp" && mv -f "$store/.$1.tmp" "$current" && log "$1 -> $v"
}

sync_once() {
  mkdir -p "$stage/pointers" || return 1
  # 1. Pointers first, into staging. --exact-timestamps: a rewritten pointer of the same size is
  #    fetched too (by default sync skips same-size files unless the local copy is newer).
  aws s3 sync "$src/" "$stage/pointers/" --exclude '*' --include serving.json --include shadow.json \
    --delete --exact-timestamps --only-show-errors --no-progress \
    || { log "reading the pointers of $src failed"; return 1; }
  # 2. Versions: immutable folders, so only new ones are downloaded (--exact-timestamps: a file
  #    re-uploaded to repair a broken upload replaces the local copy). No --delete: a version the
  #    pointers' history names stays available for a rollback.
  aws s3 sync "$src/" "$store/" --exclude serving.json --exclude shadow.json --exclude '.*' --exclude '*/.*' \
    --exact-timestamps --only-show-errors --no-progress \
    || { log "syncing the versions of $src failed"; return 1; }
  # 3. Pointers last.
  if [ ! -f "$stage/pointers/serving.json" ]; then
    log "$src/serving.json does not exist: promote a version first (python -m export promote)"; return 1
  fi
  publish serving.json || return 1
  publish shadow.json || log "the shadow keeps its previous pointer"
  return 0
}

case "$mode" in
  once)
    n=1
    until sync_once; do
      if [ "$n" -ge "$attempts" ]; then log "no complete serving version after $n attempts"; exit 1; fi
      n=$((n + 1)); sleep "$retry"
    done
    log "store ready: serving $(version_of "$store/serving.json")"
    ;;
  loop)
    while :; do
      sleep "$interval" & wait $!
      sync_once || log "pass failed; the store keeps what it has (next pass in ${interval}s)"
    done
    ;;
  *) log "usage: bundle-sync once|loop"; exit 2 ;;
esac

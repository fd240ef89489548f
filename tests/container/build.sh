#!/usr/bin/env bash
# Build the image of the Dockerfile at the repository top with no image registry, and check it as a
# user would run it. A Debian bookworm base is debootstrapped from the mirror this machine's apt
# uses (and cached), `buildah bud` builds on it, and podman runs the daemon in the image with
# nothing but its own loopback (--network none: the only target, 127.0.0.1, is inside the container).
# Checked: the image's HEALTHCHECK (/healthz) passes; /metrics has xcheck_build_info; the daemon runs
# as a non-root user whose one capability is NET_RAW, and with it no check lacks a privilege, while
# without it the ESP check reports not_permitted (why NET_RAW is the capability to add).
# Then systemd/xcheck.service under a real systemd (PID 1 of a container standing in for a host, built
# from Containerfile.systemd with the sample config): it becomes active (READY=1) with a STATUS=, as
# its dynamic user with only NET_RAW, no check lacks a privilege, `systemctl reload` with a broken
# config keeps it running with the reload metric at 0, and `systemctl stop` ends it cleanly.
# Needs root, buildah, podman, runc and debootstrap. Prints one line per step; exits 1 on failure.
#
#   bash tests/container/build.sh          cache: $XCHECK_CI_CACHE, default /var/cache/xcheck-ci
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${XCHECK_CI_CACHE:-/var/cache/xcheck-ci}
BASE=localhost/debian:bookworm-slim
IMAGE=localhost/xcheck:ci
NAME=xcheck-ci-$$
LOG=$CACHE/last-run.log
# A storage of its own (vfs: no overlay mounts needed), so nothing of the host's containers is
# touched, and the base image and the build's layers stay there between runs.
STORE=(--root "$CACHE/storage" --runroot "/run/xcheck-ci/storage" --storage-driver vfs)
# runc, not crun: crun 1.8 refuses a host with cgroups v1 and v2 mounted together (Debian 12's hybrid).
PODMAN=(podman "${STORE[@]}" --runtime runc --cgroup-manager cgroupfs --events-backend file)
# podman's default limits (a million files and processes) are above what root may set where it lacks
# CAP_SYS_RESOURCE, as on a sandboxed CI machine. No systemd here to time the HEALTHCHECK: each
# `podman healthcheck run` runs it.
RUN_OPTIONS=(--network none --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --health-interval disable)
DAEMON_ARGS=(--stun 127.0.0.1 --gateway 127.0.0.1 --interval 5)
started=$SECONDS

step() { printf '%s [%3d s] %s\n' "${0##*/}" $((SECONDS - started)) "$*"; }
fail() {
    printf '%s: FAILED: %s\n' "${0##*/}" "$*" >&2
    [ -s "$LOG" ] && { echo "--- last lines of $LOG:" >&2; tail -n 30 "$LOG" >&2; }
    exit 1
}
quietly() { "$@" >>"$LOG" 2>&1; }

[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, and containers in a storage of their own)"
for tool in buildah podman runc debootstrap; do
    command -v "$tool" >/dev/null || fail "$tool not installed (Debian: apt-get install -y $tool)"
done
mkdir -p "$CACHE"
: >"$LOG"

# The base: what debian:bookworm-slim is, made here. The tarball is the cache; the image in the
# storage is made again from it when missing.
if ! buildah "${STORE[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
    tarball=$CACHE/bookworm-minbase.tar
    if [ ! -s "$tarball" ]; then
        mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Release: bookworm' 'Component: main' \
                 'Identifier: Packages' | head -n 1)
        [ -n "$mirror" ] || fail "no bookworm main in this machine's apt sources (run apt-get update first)"
        root=$(mktemp -d "$CACHE/debootstrap.XXXXXX")
        trap 'rm -rf "$root"' EXIT
        step "debootstrap --variant=minbase bookworm from $mirror"
        quietly debootstrap --variant=minbase bookworm "$root" "$mirror" || fail "debootstrap"
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        chmod 755 "$root"  # mktemp's 0700 would become the image's / and lock every other user out
        # Written beside, then renamed: an interrupted run leaves no half tarball to be trusted.
        tar --numeric-owner -C "$root" -cf "$tarball.partial" .
        mv "$tarball.partial" "$tarball"
        rm -rf "$root"
        trap - EXIT
    fi
    step "import $tarball as $BASE"
    quietly "${PODMAN[@]}" import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$BASE" || fail "podman import"
fi

# pip in the build trusts what this machine's pip trusts (an intercepting proxy's CA, if any).
cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
secret=()
[ -s "$cert" ] && secret=(--secret "id=pip-cert,src=$cert")
# --format docker: an OCI image config has no HEALTHCHECK.
BUD=(buildah "${STORE[@]}" bud --isolation chroot --format docker --layers "${secret[@]}"
     --build-arg "BASE_IMAGE=$BASE")
step "buildah bud $IMAGE"
# The build stage is tagged too, so that the prune below keeps its cached layers (its apt install)
# for the next run; the second build takes the whole stage from the first.
quietly "${BUD[@]}" -f "$REPO/Dockerfile" --target build -t localhost/xcheck-build:ci "$REPO" || fail "buildah bud --target build"
quietly "${BUD[@]}" -f "$REPO/Dockerfile" -t "$IMAGE" "$REPO" || fail "buildah bud"
# Images the new ones replaced (with vfs each layer is a whole copy: they add up), and the working
# containers buildah leaves behind for a stage it copies from. The storage is this script's own.
tidy() { quietly buildah "${STORE[@]}" rm --all || true; quietly buildah "${STORE[@]}" rmi --prune || true; }
tidy

remove() { "${PODMAN[@]}" rm --force --ignore --time 0 "$@" >/dev/null 2>&1 || true; }
cleanup() { remove "$NAME" "$NAME-bare" "$NAME-systemd"; }
trap cleanup EXIT
fetch() {  # fetch CONTAINER PATH: the daemon's answer, fetched inside the container (its own loopback)
    "${PODMAN[@]}" exec "$1" /opt/xcheck/bin/python -c "import sys, urllib.request
print(urllib.request.urlopen('http://127.0.0.1:9478' + sys.argv[1], timeout=10).read().decode())" "$2"
}
# The latest result of the ESP check: the reason label of xcheck_check_result{check="esp"}.
esp_reason() { fetch "$1" /metrics | sed -n 's/^xcheck_check_result{.*check="esp".*reason="\([a-z_]*\)".*/\1/p'; }
wait_for_esp() {  # wait_for_esp CONTAINER: the ESP check's first result (the first cycle's end)
    local reason
    for _ in $(seq 120); do
        reason=$(esp_reason "$1" 2>/dev/null) && [ -n "$reason" ] && { echo "$reason"; return; }
        sleep 1
    done
    quietly "${PODMAN[@]}" logs "$1"
    fail "no result of the ESP check in /metrics after 120 s"
}
confined() {  # confined CONTAINER PID: "UIDS CAPABILITIES" of the daemon; fails unless non-root with NET_RAW only
    local status uids capabilities
    status=$("${PODMAN[@]}" exec "$1" cat "/proc/$2/status")
    uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' <<<"$status")
    capabilities=$(awk '/^CapEff:/ { print $2 }' <<<"$status")
    # Real, effective, saved and filesystem uid: none may be root.
    for uid in $uids; do [ "$uid" != 0 ] || fail "the daemon runs with uid 0: $uids"; done
    # NET_RAW is capability 13: the only bit of the effective set.
    [ "$capabilities" = 0000000000002000 ] || fail "effective capabilities $capabilities, expected NET_RAW only (0000000000002000)"
    echo "(uids $uids), effective capabilities: $capabilities (NET_RAW)"
}
none_denied() {  # none_denied CONTAINER: fails if a check lacks a privilege
    local denied
    denied=$(fetch "$1" /metrics | grep -E '^xcheck_check_result\{.*reason="not_permitted"' || true)
    [ -z "$denied" ] || fail "checks lack a privilege: $denied"
}

step "run $IMAGE ${DAEMON_ARGS[*]} (network none; capabilities: NET_RAW only)"
quietly "${PODMAN[@]}" run -d --name "$NAME" "${RUN_OPTIONS[@]}" --cap-drop ALL --cap-add NET_RAW \
    "$IMAGE" "${DAEMON_ARGS[@]}" || fail "podman run"

healthy=
for _ in $(seq 60); do
    if "${PODMAN[@]}" healthcheck run "$NAME" >/dev/null 2>&1; then healthy=yes; break; fi
    [ "$("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$NAME")" = true ] || break
    sleep 1
done
[ -n "$healthy" ] || { quietly "${PODMAN[@]}" logs "$NAME"; fail "the HEALTHCHECK (/healthz) never passed"; }
step "healthz: 200 (the image's HEALTHCHECK)"

build_info=$(fetch "$NAME" /metrics | grep -E '^xcheck_build_info\{') || fail "/metrics has no xcheck_build_info"
step "metrics: $build_info"

confinement=$(confined "$NAME" 1)  # the ENTRYPOINT is the container's PID 1
step "user: $("${PODMAN[@]}" exec "$NAME" id -un) $confinement"

reason=$(wait_for_esp "$NAME")
none_denied "$NAME"
step "with NET_RAW: no check is not_permitted (esp: $reason)"

quietly "${PODMAN[@]}" run -d --name "$NAME-bare" "${RUN_OPTIONS[@]}" --cap-drop ALL \
    "$IMAGE" "${DAEMON_ARGS[@]}" || fail "podman run (no capabilities)"
reason=$(wait_for_esp "$NAME-bare")
[ "$reason" = not_permitted ] || fail "without NET_RAW the ESP check is $reason, expected not_permitted"
step "without any capability: the daemon runs, esp: $reason"
remove "$NAME" "$NAME-bare"

step "buildah bud localhost/xcheck-systemd:ci (Containerfile.systemd)"
quietly "${BUD[@]}" -f "$REPO/tests/container/Containerfile.systemd" \
    --build-arg "XCHECK_IMAGE=$IMAGE" -t localhost/xcheck-systemd:ci "$REPO" || fail "buildah bud (systemd)"
tidy
# --privileged: this systemd stands in for a host's, and sets up the unit's namespaces and seccomp
# filter as a host's does. The network stays the container's own loopback.
quietly "${PODMAN[@]}" run -d --name "$NAME-systemd" --privileged --systemd always "${RUN_OPTIONS[@]}" \
    localhost/xcheck-systemd:ci || fail "podman run (systemd)"
on_host() { "${PODMAN[@]}" exec "$NAME-systemd" "$@"; }
unit() { on_host systemctl show xcheck --value -p "$1"; }
for _ in $(seq 60); do
    [[ $(unit StatusText 2>/dev/null) == udp=* ]] && break
    sleep 1
done
journal() { quietly on_host journalctl -u xcheck --no-pager; }
[ "$(unit ActiveState)" = active ] || { journal; fail "xcheck.service is $(unit ActiveState), not active"; }
[[ $(unit StatusText) == udp=* ]] || { journal; fail "no STATUS= with the summary: '$(unit StatusText)'"; }
step "systemd: xcheck.service active, STATUS=$(unit StatusText)"
confinement=$(confined "$NAME-systemd" "$(unit MainPID)")
reason=$(wait_for_esp "$NAME-systemd")
none_denied "$NAME-systemd"
# Read whole first: grep -q would stop reading and fail the fetch (pipefail).
metrics=$(fetch "$NAME-systemd" /metrics)
grep -q 'target="127.0.0.1:3478"' <<<"$metrics" || fail "the sample config's stun line was not read"
step "systemd: user $(unit User) $confinement, no check not_permitted (esp: $reason)"

on_host sh -c 'echo "broken = [" >>/etc/xcheck/xcheck.toml'
on_host systemctl reload xcheck || { journal; fail "systemctl reload"; }
reload=
for _ in $(seq 30); do
    reload=$(fetch "$NAME-systemd" /metrics | sed -n 's/^xcheck_config_last_reload_successful \(.*\)/\1/p')
    [ "$reload" = 0.0 ] && break
    sleep 1
done
[ "$reload" = 0.0 ] || { journal; fail "after a reload with a broken config, xcheck_config_last_reload_successful is '$reload'"; }
[ "$(unit ActiveState)" = active ] || { journal; fail "a broken config on reload stopped the service"; }
step "systemd: reload with a broken config: still active, xcheck_config_last_reload_successful 0"

stopping=$(on_host date +%s%N)
on_host systemctl stop xcheck || { journal; fail "systemctl stop"; }
took=$(( ($(on_host date +%s%N) - stopping) / 1000000 ))
# Result=success: it stopped by itself on SIGTERM (a stop past TimeoutStopSec= would be `timeout`).
[ "$(unit Result)" = success ] && [ "$(unit ExecMainStatus)" = 0 ] \
    || { journal; fail "systemctl stop: Result=$(unit Result), status $(unit ExecMainStatus)"; }
step "systemd: stop: Result=success, exit status 0, in $took ms"
step "passed"

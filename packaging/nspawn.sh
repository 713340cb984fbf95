# Booting a Debian 12 root under systemd-nspawn and running one command in it, for the trials
# that need a real systemd (packaging/nspawn-install-trial.sh, systemd/nspawn-trial.sh).
# Sourced, not run: `. "$REPO/packaging/nspawn.sh"`; needs debootstrap and systemd-container.

# debian_root ROOT PACKAGES: make ROOT a minimal Debian 12 with systemd, dbus and PACKAGES
# (comma-separated) unless it already boots.
debian_root() {
    if [ ! -x "$1/usr/lib/systemd/systemd" ]; then
        debootstrap --variant=minbase --include="systemd,systemd-sysv,dbus,$2" bookworm "$1" \
            http://deb.debian.org/debian
    fi
}

# run_booted ROOT MACHINE [NSPAWN_OPTION...] -- COMMAND...: boot ROOT as MACHINE, wait until its
# systemd is up, run COMMAND inside, power it off; returns COMMAND's status (1 when it did not
# boot, with the container's log, kept in ROOT.nspawn.log).
run_booted() {
    local root=$1 machine=$2 opts=() init="" rc=0
    shift 2
    while [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
    setsid systemd-nspawn -D "$root" --boot --register=no --keep-unit "${opts[@]}" \
        --machine="$machine" --console=passive > "$root.nspawn.log" 2>&1 &
    NSPAWN=$!
    trap 'kill $NSPAWN 2>/dev/null || true' EXIT
    for _ in $(seq 1 60); do
        init=$(pgrep -P $NSPAWN -x systemd || true)
        [ -n "$init" ] && nsenter -t "$init" -a systemctl is-system-running --wait > /dev/null 2>&1 && break
        sleep 1
    done
    [ -n "$init" ] || { cat "$root.nspawn.log"; return 1; }
    nsenter -t "$init" -a "$@" || rc=$?
    nsenter -t "$init" -a systemctl poweroff || true
    wait $NSPAWN || true
    trap - EXIT
    return $rc
}

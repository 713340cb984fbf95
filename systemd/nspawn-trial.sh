#!/bin/bash
# Run systemd/gputuned.service under a real systemd (a Debian 12 container booted with
# systemd-nspawn) and SIGKILL its main process N times after changing a GPU; after each kill,
# before RestartSec= starts it again, the simulated GPU settings must equal the originals
# (ExecStopPost's `gputuned restore --offline`) and the state file must be gone.
#
# Usage (root, on a Debian 12 host with debootstrap and systemd-container installed):
#   systemd/nspawn-trial.sh ROOT_DIR [TRIALS]
# ROOT_DIR is built with debootstrap on first use (about 300 MB; keep it out of the checkout).
# The daemon runs from this checkout's .venv site-packages through the container's python3.11,
# with the simulated node (no GPU needed) keeping its settings in the state directory.
set -euo pipefail
ROOT=${1:?usage: $0 ROOT_DIR [TRIALS]}
TRIALS=${2:-20}
REPO=$(cd "$(dirname "$0")/.." && pwd)
SITE=$(echo "$REPO"/.venv/lib/python3.11/site-packages)
. "$REPO/packaging/nspawn.sh"

debian_root "$ROOT" python3
mkdir -p "$ROOT$REPO" "$ROOT/etc/gputuned" "$ROOT/usr/local/lib/python3.11/dist-packages"
echo "import site; site.addsitedir('$SITE')" > "$ROOT/usr/local/lib/python3.11/dist-packages/gputuned.pth"
printf '#!/usr/bin/python3.11\nimport sys\nfrom gputuned.daemon.commands.cli import main\nif __name__ == "__main__":\n    sys.exit(main())\n' \
    > "$ROOT/usr/bin/gputuned"
chmod 755 "$ROOT/usr/bin/gputuned"
install -m644 "$REPO/systemd/gputuned.service" "$ROOT/usr/lib/systemd/system/gputuned.service"
install -m644 "$REPO/systemd/gputuned.sysusers.conf" "$ROOT/usr/lib/sysusers.d/gputuned.conf"
install -m644 "$REPO/systemd/gputuned.tmpfiles.conf" "$ROOT/usr/lib/tmpfiles.d/gputuned.conf"
sed 's|^# settings_file = .*|settings_file = "/var/lib/gputuned/sim-settings.json"|' \
    "$REPO/systemd/gputuned.toml" > "$ROOT/etc/gputuned/gputuned.toml"

cat > "$ROOT/root/kill-trials.sh" <<'EOF'
#!/bin/bash
N=$1; S=/var/lib/gputuned/sim-settings.json; ok=0
settings() { python3.11 -c "import json; print(json.dumps(json.load(open('$S')), sort_keys=True))"; }
systemctl start gputuned
orig=$(settings)
for i in $(seq 1 "$N"); do
    for _ in $(seq 1 120); do systemctl is-active -q gputuned && [ -S /run/gputuned/control.sock ] && break; sleep 0.5; done
    sleep 1
    gpu=$((i % 4)); watts=$((300 + 10 * i))
    gputuned set --config /etc/gputuned/gputuned.toml --gpu $gpu --power-limit-w $watts --sm-clocks 900:1400 > /dev/null || echo "trial $i: set refused"
    [ "$(settings)" != "$orig" ] || echo "trial $i: nothing changed"
    pid=$(systemctl show -p MainPID --value gputuned)
    kill -9 "$pid"
    for _ in $(seq 1 100); do [ "$(systemctl show -p SubState --value gputuned)" = auto-restart ] && break; sleep 0.1; done
    sub=$(systemctl show -p SubState --value gputuned)
    left=$([ -e /var/lib/gputuned/state.json ] && echo kept || echo removed)
    if [ "$sub" = auto-restart ] && [ "$(settings)" = "$orig" ] && [ "$left" = removed ]; then ok=$((ok + 1)); r=restored; else r=FAILED; fi
    echo "trial $i: gpu $gpu ${watts} W, killed pid $pid; at $sub: $r, state file $left"
done
for _ in $(seq 1 120); do systemctl is-active -q gputuned && break; sleep 0.5; done
pid=$(systemctl show -p MainPID --value gputuned)
echo "capabilities of the daemon: $(grep CapEff /proc/$pid/status)"
echo "restored $ok/$N"
systemctl stop gputuned
[ "$ok" = "$N" ]
EOF
chmod 755 "$ROOT/root/kill-trials.sh"

run_booted "$ROOT" gputuned-trial --private-network --bind-ro="$REPO" -- /root/kill-trials.sh "$TRIALS"

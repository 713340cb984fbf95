#!/bin/bash
# The Debian 12 install of docs/deployment.md, run for real: a Debian 12 root booted with
# systemd-nspawn gets the package with `apt install ./gputuned_*.deb` (apt fetches python3.11),
# then `systemctl enable --now gputuned` (no NVIDIA device in the container: the simulated
# node), /metrics and `gputuned status` through the installed paths, `systemctl stop` (restores),
# and `apt purge`.
#
# Usage (root, Debian 12 host with debootstrap and systemd-container, network to Debian's archive):
#   packaging/nspawn-install-trial.sh ROOT_DIR [DEB]
# ROOT_DIR is made with debootstrap on first use (about 250 MB; keep it out of the checkout).
# DEB defaults to build/deb/gputuned_*.deb (make deb).
set -euo pipefail
ROOT=${1:?usage: $0 ROOT_DIR [DEB]}
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEB=${2:-$(ls "$REPO"/build/deb/gputuned_*.deb | tail -1)}
. "$REPO/packaging/nspawn.sh"

debian_root "$ROOT" ca-certificates
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp "$DEB" "$ROOT/root/"

cat > "$ROOT/root/install-trial.sh" <<'EOF'
#!/bin/bash
set -euo pipefail
deb=$(ls /root/gputuned_*.deb)
apt-get update -qq
if dpkg-query -W gputuned > /dev/null 2>&1; then   # a root reused from an earlier trial
    systemctl disable --now gputuned 2> /dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq gputuned > /root/apt.log
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" > /root/apt.log
echo "installed: $(dpkg-query -W -f='${Package} ${Version} ${Installed-Size} KiB' gputuned)"
echo "group: $(getent group gputuned); $(stat -c '%n %a %U:%G' /var/lib/gputuned)"
echo "enabled after install: $(systemctl is-enabled gputuned || true), active: $(systemctl is-active gputuned || true)"
systemd-analyze verify gputuned.service && echo "systemd-analyze verify: clean"
systemctl enable --now gputuned
for _ in $(seq 1 120); do [ -S /run/gputuned/control.sock ] && break; sleep 0.5; done
echo "active: $(systemctl is-active gputuned); main process: $(readlink /proc/$(systemctl show -p MainPID --value gputuned)/exe) $(tr '\0' ' ' < /proc/$(systemctl show -p MainPID --value gputuned)/cmdline)"
/opt/gputuned/bin/python -c "import urllib.request as u; t = u.urlopen('http://127.0.0.1:9735/metrics').read().decode(); print('metrics:', sum(1 for l in t.splitlines() if l and not l.startswith('#')), 'series')"
gputuned status > /root/status.txt; head -5 /root/status.txt
systemctl stop gputuned
journalctl -u gputuned --no-pager -o cat | tail -4
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq gputuned >> /root/apt.log
echo "after purge: $(ls /opt/gputuned /usr/bin/gputuned /var/lib/gputuned 2>&1 | tr '\n' ' ')"
EOF
chmod 755 "$ROOT/root/install-trial.sh"

run_booted "$ROOT" gputuned-install -- /root/install-trial.sh

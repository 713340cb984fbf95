#!/bin/bash
# Build the gputuned Debian package (Debian 12, the build machine's architecture): a self-contained venv
# under /opt/gputuned made with Debian's python3.11, /usr/bin/gputuned linking to its entry point,
# the unit, sysusers.d, tmpfiles.d and the config (a conffile). See docs/deployment.md.
#
# Usage: packaging/build-deb.sh [OUT_DIR]       (make deb; OUT_DIR defaults to build/deb)
# Needs: Debian's python3.11 and python3-venv, dpkg-deb; reaches only the Python package index.
# Environment: DEB_REVISION (default 1); DEB_CONSTRAINTS, a pip constraints file pinning the
# carried packages (default: the versions in this checkout's .venv, which the tests ran against,
# when it exists); DEB_COMPRESS (dpkg-deb -Z: zstd, xz, gzip; default zstd: xz takes
# many minutes on 2 cores).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
HERE=$REPO/packaging/deb
OUT=$(mkdir -p "${1:-$REPO/build/deb}" && cd "${1:-$REPO/build/deb}" && pwd)
PYTHON=/usr/bin/python3.11
PREFIX=/opt/gputuned
STAGE=$OUT/root
VENV=$STAGE$PREFIX
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1 PIP_ROOT_USER_ACTION=ignore

VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$REPO/pkg/__init__.py")
DEBVERSION=$VERSION-${DEB_REVISION:-1}
ARCH=$(dpkg --print-architecture)

step() {
    echo "build-deb: $1 done at ${SECONDS}s" >&2
}

constraints() {
    # the carried packages at the versions the checkout's tests ran against
    if [ -n "${DEB_CONSTRAINTS:-}" ]; then
        cp "$DEB_CONSTRAINTS" "$OUT/constraints.txt"
    elif [ -x "$REPO/.venv/bin/python" ]; then
        "$REPO/.venv/bin/python" -m pip freeze --exclude-editable | grep -v -e ' @ ' -e '^-e ' \
            > "$OUT/constraints.txt" || true
    else
        : > "$OUT/constraints.txt"
    fi
}

make_venv() {
    rm -rf "$STAGE" "$OUT/wheel"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip wheel -q --no-deps -w "$OUT/wheel" "$REPO"
    "$PYTHON" "$REPO/packaging/requirements.py" > "$OUT/requirements.txt"
    "$VENV/bin/python" -m pip install -q --no-compile -c "$OUT/constraints.txt" -r "$OUT/requirements.txt"
    # last and without its dependencies: what packaging/requirements.py leaves out stays out
    "$VENV/bin/python" -m pip install -q --no-compile --no-deps "$OUT/wheel"/gputuned-"$VERSION"-*.whl
    # dpkg owns /opt/gputuned: no pip to change it behind dpkg's back; test suites are not shipped
    "$VENV/bin/python" -m pip uninstall -q -y setuptools pip
    find "$VENV/lib" -type d -name tests -not -path '*/stan_model/*' -prune -exec rm -rf {} +
    step venv
}

relocate() {
    # the venv was made under $STAGE: every path naming it must name /opt/gputuned
    grep -rlI --null -F "$STAGE" "$VENV" | xargs -0 -r sed -i "s|$STAGE$PREFIX|$PREFIX|g"
    if grep -rlI -F "$STAGE" "$VENV"; then echo "build-deb: staging path left in the files above" >&2; exit 1; fi
    find "$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +
    # compiled once here with their installed paths: /opt is read-only under the unit
    "$VENV/bin/python" -m compileall -q -j 0 -s "$STAGE" -p / "$VENV/lib" > /dev/null
    step compile
}

install_files() {
    install -Dm644 "$REPO/systemd/gputuned.service" "$STAGE/lib/systemd/system/gputuned.service"
    install -Dm644 "$REPO/systemd/gputuned.sysusers.conf" "$STAGE/usr/lib/sysusers.d/gputuned.conf"
    install -Dm644 "$REPO/systemd/gputuned.tmpfiles.conf" "$STAGE/usr/lib/tmpfiles.d/gputuned.conf"
    install -Dm644 "$REPO/systemd/gputuned.toml" "$STAGE/etc/gputuned/gputuned.toml"
    install -Dm644 "$HERE/copyright" "$STAGE/usr/share/doc/gputuned/copyright"
    install -Dm644 "$REPO/docs/deployment.md" "$STAGE/usr/share/doc/gputuned/deployment.md"
    mkdir -p "$STAGE/usr/bin"
    ln -s "$PREFIX/bin/gputuned" "$STAGE/usr/bin/gputuned"
    install -d "$STAGE/DEBIAN"
    install -m755 "$HERE/postinst" "$HERE/prerm" "$HERE/postrm" "$STAGE/DEBIAN/"
    install -m644 "$HERE/conffiles" "$STAGE/DEBIAN/"
    local size
    size=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
    sed -e "s/@VERSION@/$DEBVERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$size/" \
        "$HERE/control.in" > "$STAGE/DEBIAN/control"
}

constraints
make_venv
relocate
install_files
DEB=$OUT/gputuned_${DEBVERSION}_$ARCH.deb
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-zstd}" --build "$STAGE" "$DEB" > /dev/null
step dpkg-deb
echo "$DEB ($(du -h "$DEB" | cut -f1), $(($(du -sk --exclude=DEBIAN "$STAGE" | cut -f1) / 1024)) MiB installed)"

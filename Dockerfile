# The gputuned DaemonSet image (systemd/kubernetes/gputuned-daemonset.yaml): Debian 12 slim with
# the gputuned Debian package, built from this repository by `make deb`'s script in a first stage.
#   docker build -t ghcr.io/gputuned/gputuned:0.1.0 .
# The build stage reaches Debian's archive and the Python package index; see docs/deployment.md.

FROM debian:12 AS deb
# Unpinned on purpose: the debian:12 tag fixes the release, and a point release replaces these
# versions in the archive, so an exact pin would stop the build at the next one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# DEB_CONSTRAINTS=packaging/constraints.txt (a pip freeze of a tested venv, placed in the build
# context) pins the carried packages; without it pip picks the newest that pyproject.toml allows.
ARG DEB_CONSTRAINTS=
RUN DEB_CONSTRAINTS="${DEB_CONSTRAINTS}" packaging/build-deb.sh /deb

FROM debian:12-slim
COPY --from=deb /deb/gputuned_*.deb /tmp/
# apt resolves the package's Depends (python3.11); its postinst adds group gputuned
RUN apt-get update \
    && apt-get install -y --no-install-recommends /tmp/gputuned_*.deb \
    && rm -rf /var/lib/apt/lists/* /tmp/gputuned_*.deb
EXPOSE 9735
CMD ["gputuned", "run", "--config", "/etc/gputuned/gputuned.toml"]

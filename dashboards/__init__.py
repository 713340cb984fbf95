"""Grafana dashboards (grafanalib sources), provisioning files and Prometheus alert rules."""

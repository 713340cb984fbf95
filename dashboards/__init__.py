"""Grafana dashboards (grafanalib sources), provisioning files and Prometheus alert rules."""

#: Where Grafana's dashboard provider looks for the JSON files unless told otherwise.
DEFAULT_DASHBOARDS_PATH = "/var/lib/grafana/dashboards/gputuned"
#: The Prometheus URL written into the data source provisioning file unless told otherwise.
DEFAULT_PROMETHEUS_URL = "http://localhost:9090"

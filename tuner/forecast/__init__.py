"""Degradation forecasting (Prophet, in a worker process) and online anomaly detection."""

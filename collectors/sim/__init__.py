"""Simulated GPU node: an NVML look-alike module and the backends that drive it."""

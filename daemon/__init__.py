"""The daemon: config, CLI, main loop, sample store, exporter, control socket, actuation."""

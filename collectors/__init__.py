"""The senses: GPU (NVML), host, network and trainer collectors that turn readings into samples."""

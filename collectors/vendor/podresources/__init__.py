"""The kubelet pod-resources v1 API: generated protobuf and gRPC stubs (see README.md)."""

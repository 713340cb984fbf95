"""Kubernetes attribution: which pod, namespace and container holds each GPU, from the kubelet.

The kubelet's pod-resources API (v1 ``List`` over the unix socket
/var/lib/kubelet/pod-resources/kubelet.sock) names, per container, the device ids its
device plugins allocated; NVIDIA's device plugin uses GPU UUIDs (``GPU-...``, ``MIG-...``,
``GPU-...::n`` for a time-sliced replica). The ``kubernetes`` collector asks every
``refresh_s`` with a deadline, keeps at most ``max_pods`` pods, and hands the GPU collector
the ``pod``, ``namespace`` and ``container`` labels of each GPU, as dcgm-exporter adds them.
Off by default; when the kubelet does not answer, or grpcio is missing, it logs one line and
the GPU series go on without pod labels.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from gputuned.collectors.families import Labels, Sample, declare
from gputuned.collectors.registry import CollectorConfig, CollectorContext, register

logger = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
POD_INFO = declare("gputuned_gpu_pod_info", "gauge",
                   "1 for each GPU a container holds: its pod, namespace and container (kubelet pod-resources).")
KUBELET_UP = declare("gputuned_kubernetes_pod_resources_up", "gauge",
                     "1 when the kubelet's pod-resources API answered the last List.")

Owner = tuple[str, str, str]  # (pod, namespace, container)


class KubernetesConfig(CollectorConfig):
    """``[collectors.kubernetes]``: pod labels on GPU series from the kubelet's pod-resources API."""

    enabled: bool = False
    socket: Path = DEFAULT_SOCKET
    refresh_s: float = 10.0
    timeout_s: float = 2.0
    max_pods: int = 1024
    resource_prefix: str = "nvidia.com/"  # device plugin resources whose ids are GPUs


def gpu_id(device_id: str) -> str:
    """The GPU UUID in a device plugin's id (a time-sliced replica ``GPU-x::2`` is GPU ``GPU-x``)."""
    return device_id.split("::", 1)[0]


def owners(response: Any, resource_prefix: str, max_pods: int) -> dict[str, Owner]:
    """GPU UUID -> (pod, namespace, container) from a ListPodResourcesResponse, at most ``max_pods`` pods."""
    out: dict[str, Owner] = {}
    for pod in list(response.pod_resources)[:max_pods]:
        for ctr in pod.containers:
            for dev in ctr.devices:
                if dev.resource_name.startswith(resource_prefix):
                    for ident in dev.device_ids:
                        out[gpu_id(ident)] = (pod.name, pod.namespace, ctr.name)
    return out


class PodResourcesClient:
    """One gRPC channel to the kubelet's pod-resources socket (grpcio imported here, lazily)."""

    def __init__(self, socket: Path, timeout_s: float) -> None:
        import grpc

        from gputuned.collectors.vendor.podresources import api_pb2, api_pb2_grpc

        self._pb = api_pb2
        self._grpc = grpc
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(f"unix://{socket}")
        self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)

    def list(self) -> Any:
        """One v1 List call, bounded by the deadline; raises OSError when the kubelet does not answer."""
        try:
            return self._stub.List(self._pb.ListPodResourcesRequest(), timeout=self.timeout_s)
        except self._grpc.RpcError as e:
            raise OSError(f"kubelet pod-resources List: {e.code().name}: {e.details()}") from e

    def close(self) -> None:
        self._channel.close()


class KubernetesCollector:
    """Refreshes GPU -> pod from the kubelet; :meth:`labels` gives each GPU's pod labels."""

    name = "kubernetes"

    def __init__(self, cfg: KubernetesConfig, clock: Any = time.monotonic) -> None:
        self.cfg = cfg
        self._clock = clock
        self._client: PodResourcesClient | None = None
        self._owners: dict[str, Owner] = {}
        self._next = 0.0
        self._up = 0.0
        self._failing = False

    def labels(self, uuid: str) -> Labels:
        """The pod, namespace and container labels of the GPU ``uuid`` (none when no pod holds it)."""
        o = self._owners.get(uuid)
        return () if o is None else (("pod", o[0]), ("namespace", o[1]), ("container", o[2]))

    def refresh(self) -> None:
        """Ask the kubelet now; on failure keep no pod labels and say so once until it answers again."""
        try:
            if self._client is None:
                self._client = PodResourcesClient(self.cfg.socket, self.cfg.timeout_s)
            self._owners = owners(self._client.list(), self.cfg.resource_prefix, self.cfg.max_pods)
            self._up = 1.0
            if self._failing:
                logger.info("kubelet pod-resources at %s answers again", self.cfg.socket)
            self._failing = False
        except (OSError, ImportError) as e:
            self._owners, self._up = {}, 0.0
            if not self._failing:
                logger.warning("no pod labels: %s (kubelet pod-resources at %s)", e, self.cfg.socket)
            self._failing = True

    def collect(self) -> list[Sample]:
        """Refresh when due; one info sample per GPU a pod holds."""
        now = self._clock()
        if now >= self._next:
            self._next = now + self.cfg.refresh_s
            self.refresh()
        out: list[Sample] = [(KUBELET_UP, (), self._up)]
        for uuid, (pod, ns, ctr) in sorted(self._owners.items()):
            out.append((POD_INFO, (("uuid", uuid), ("pod", pod), ("namespace", ns), ("container", ctr)), 1.0))
        return out

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@register("kubernetes", config=KubernetesConfig, families=(POD_INFO, KUBELET_UP))
def build_kubernetes_collector(cfg: CollectorConfig, ctx: CollectorContext) -> KubernetesCollector | None:
    """The kubelet's pod-resources collector (off unless enabled)."""
    assert isinstance(cfg, KubernetesConfig)
    return KubernetesCollector(cfg)

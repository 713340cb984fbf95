"""Pod labels on GPU series from a real gRPC server serving the kubelet's pod-resources v1 API."""

from __future__ import annotations

from concurrent import futures
from pathlib import Path
from typing import Any

import pytest
from testkit import StillNode

grpc = pytest.importorskip("grpc")

from gputuned.collectors import families as F  # noqa: E402
from gputuned.collectors.attribution import link  # noqa: E402
from gputuned.collectors.gpu import GPUCollector  # noqa: E402
from gputuned.collectors.kubernetes import KubernetesCollector, KubernetesConfig  # noqa: E402
from gputuned.collectors.nvml import open_gpus  # noqa: E402
from gputuned.collectors.sim import nvml as sim_nvml  # noqa: E402
from gputuned.collectors.vendor.podresources import api_pb2, api_pb2_grpc  # noqa: E402


class Kubelet(api_pb2_grpc.PodResourcesListerServicer):
    """The kubelet's pod-resources service with scripted pods: (pod, namespace, container, device ids)."""

    def __init__(self, pods: list[tuple[str, str, str, list[str]]]) -> None:
        self.pods = pods
        self.calls = 0

    def List(self, request: Any, context: Any) -> Any:  # noqa: N802 - the API's name
        self.calls += 1
        return api_pb2.ListPodResourcesResponse(pod_resources=[
            api_pb2.PodResources(name=pod, namespace=ns, containers=[api_pb2.ContainerResources(
                name=ctr, devices=[api_pb2.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=ids)])])
            for pod, ns, ctr, ids in self.pods])


def serve(sock: Path, kubelet: Kubelet) -> Any:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(kubelet, server)
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    return server


def test_gpu_series_carry_the_pod_namespace_and_container_the_kubelet_assigned(still_node: StillNode, tmp_path: Path) -> None:
    u = [d.uuid for d in still_node.devices]
    kubelet = Kubelet([("train-0", "ml", "trainer", [u[2], u[0]]), ("infer-7", "serving", "server", [f"{u[3]}::1"])])
    server = serve(tmp_path / "kubelet.sock", kubelet)
    try:
        pods = KubernetesCollector(KubernetesConfig(enabled=True, socket=tmp_path / "kubelet.sock"))
        gpu = GPUCollector(open_gpus(sim_nvml))
        link([pods, gpu], None)
        info = pods.collect()
        samples = gpu.collect()
    finally:
        server.stop(None)
    power = {dict(lab)["gpu"]: dict(lab) for name, lab, _ in samples if name == F.GPU_POWER}
    assert {k: power["2"][k] for k in ("pod", "namespace", "container")} == {
        "pod": "train-0", "namespace": "ml", "container": "trainer"}
    assert power["0"]["pod"] == "train-0" and power["3"]["pod"] == "infer-7"  # a time-sliced replica's GPU
    assert "pod" not in power["1"]
    assert (("gputuned_kubernetes_pod_resources_up", (), 1.0)) in info


def test_a_kubelet_that_does_not_answer_leaves_series_without_pod_labels_and_logs_once(
        still_node: StillNode, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pods = KubernetesCollector(KubernetesConfig(enabled=True, socket=tmp_path / "absent.sock", timeout_s=0.2,
                                                refresh_s=0.0))
    gpu = GPUCollector(open_gpus(sim_nvml))
    link([pods, gpu], None)
    for _ in range(3):
        info = pods.collect()
    samples = gpu.collect()
    assert ("gputuned_kubernetes_pod_resources_up", (), 0.0) in info
    assert all("pod" not in dict(lab) for _, lab, _ in samples)
    assert len([r for r in caplog.records if "no pod labels" in r.getMessage()]) == 1


def test_at_most_max_pods_are_kept(still_node: StillNode, tmp_path: Path) -> None:
    u = [d.uuid for d in still_node.devices]
    kubelet = Kubelet([(f"p{i}", "ns", "c", [u[i]]) for i in range(4)])
    server = serve(tmp_path / "kubelet.sock", kubelet)
    try:
        pods = KubernetesCollector(KubernetesConfig(enabled=True, socket=tmp_path / "kubelet.sock", max_pods=2))
        info = pods.collect()
    finally:
        server.stop(None)
    assert len([s for s in info if s[0] == "gputuned_gpu_pod_info"]) == 2

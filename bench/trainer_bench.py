"""Trainer and plugin benchmarks: plugin overhead, bytes per hook, trainer vs a plain DDP loop.

    .venv/bin/python bench/trainer_bench.py [--rounds 6] [--steps 300] [--hidden 512] [--parts ...]

Prints markdown tables for docs/benchmarks.md ("Trainer and plugin"), writes the raw JSON, and
ends with one line giving the trainer/plain throughput ratio against the 0.98x goal. The
throughput part alternates plain-DDP and trainer runs in one process group (which one goes
first alternates per round) and reports the median of the per-round ratios; then it alternates
blocks of each loop within one run (finer interleaving, less exposed to load drift); a block
(--block-steps, default 500, about a second here) is long enough to carry its share of the plugin's
exchanges and gradient-norm samples, which are spaced in time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import BenchParser, csv_choices, free_port, positive_int

from gputuned.trainer_plugin.data import load_digits
from gputuned.trainer_plugin.plugin import TrainingPlugin
from gputuned.trainer_plugin.testing import FakeDaemon


def plugin_overhead(hidden: int, blocks: int = 7, per_block: int = 300) -> dict:
    """Median step time of a single-process training step with and without the plugin (daemon connected)."""
    torch.set_num_threads(1)
    x, y, _, _ = load_digits()
    model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    xb, yb = x[:64], y[:64]

    def step() -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "c.sock")
        with FakeDaemon(sock, report_interval_s=0.1) as daemon:
            plugin = TrainingPlugin(job="bench", batch_size=64, socket_path=sock)
            assert plugin.client is not None and plugin.client.wait_connected(5)
            plain_med, with_med = [], []
            for _ in range(blocks):
                ts = []
                for _ in range(per_block):
                    t = time.perf_counter()
                    step()
                    ts.append(time.perf_counter() - t)
                plain_med.append(statistics.median(ts))
                ts = []
                for _ in range(per_block):
                    t = time.perf_counter()
                    with plugin.step(samples=64):
                        loss = step()
                        plugin.record(loss=loss)
                    ts.append(time.perf_counter() - t)
                with_med.append(statistics.median(ts))
            # the plugin's own cost: an empty step body
            loss = torch.tensor(1.0)
            ts = []
            for _ in range(5000):
                t = time.perf_counter()
                with plugin.step(samples=64):
                    plugin.record(loss=loss)
                ts.append(time.perf_counter() - t)
            reports = len(daemon.of_type("report"))
            plugin.close()
    plain, withp = statistics.median(plain_med), statistics.median(with_med)
    return {"step_plain_s": plain, "step_with_plugin_s": withp, "plugin_only_us": statistics.median(ts) * 1e6,
            "plugin_only_p99_us": sorted(ts)[int(len(ts) * 0.99)] * 1e6, "reports_received": reports,
            "overhead_fraction": (withp - plain) / plain}


def torchrun(name: str, toml: str, tmp: Path, env: dict[str, str] | None = None) -> list[dict]:
    """Run a trainer scenario on 2 gloo ranks; return per-rank results."""
    cfg = tmp / f"{name}.toml"
    cfg.write_text(toml)
    out = tmp / f"{name}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port()), "-m", "gputuned.trainer_plugin.scenarios", name, str(out), str(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return [json.loads(Path(f"{out}.rank{r}").read_text()) for r in (0, 1)]


def parser() -> BenchParser:
    """The command line, every flag with its help."""
    ap = BenchParser(description=__doc__)
    ap.add_argument("--steps", type=positive_int, default=300, help="training steps of each throughput run")
    ap.add_argument("--hidden", type=positive_int, default=512, help="hidden width of the benchmark model")
    ap.add_argument("--rounds", type=positive_int, default=6, help="rounds of one plain and one trainer run")
    ap.add_argument("--blocks", type=positive_int, default=40, help="interleaved blocks of each loop")
    ap.add_argument("--block-steps", type=positive_int, default=500, help="steps per interleaved block")
    ap.add_argument("--aa", action="store_true",
                    help="also alternate the plain loop with an identical copy (the measurement's own spread)")
    ap.add_argument("--norm-every", type=positive_int, default=None,
                    help="[plugin] norm_every for the trainer (default: the trainer's default)")
    ap.add_argument("--sync-interval", type=positive_int, default=None,
                    help="[plugin] sync_interval for the trainer (default: the trainer's default)")
    ap.add_argument("--parts", type=csv_choices(("overhead", "compression", "throughput")),
                    default="overhead,compression,throughput",
                    help="comma-separated subset of overhead,compression,throughput")
    ap.add_argument("--out", default="runs/trainer_bench.json", help="where to write the raw JSON")
    return ap


def run(args: argparse.Namespace, parts: set[str]) -> dict:
    """Run the chosen parts; their raw results with the load average at start and end."""
    res: dict = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "torch": torch.__version__,
                 "loadavg_start": os.getloadavg()}
    if "overhead" in parts:
        res["overhead"] = plugin_overhead(args.hidden)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "compression" in parts:
            res["compression"] = torchrun("compression", "", tmp)[0]
        if "throughput" in parts:
            sock = str(tmp / "c.sock")
            toml = (f'[model]\nhidden = {args.hidden}\n[train]\nmax_steps = {args.steps}\n'
                    f'[plugin]\nenabled = true\nsocket = "{sock}"\njob = "bench"\n')
            if args.norm_every:
                toml += f"norm_every = {args.norm_every}\n"
            if args.sync_interval:
                toml += f"sync_interval = {args.sync_interval}\n"
            with FakeDaemon(sock, report_interval_s=0.5) as daemon:
                res["throughput"] = torchrun("throughput", toml, tmp, {"GPUTUNED_BENCH_ROUNDS": str(args.rounds),
                                                                      "GPUTUNED_BENCH_BLOCKS": str(args.blocks),
                                                                      "GPUTUNED_BENCH_BLOCK_STEPS": str(args.block_steps),
                                                                      **({"GPUTUNED_BENCH_AA": "1"} if args.aa else {})})[0]
                res["throughput"]["reports_received"] = len(daemon.of_type("report"))
    res["loadavg_end"] = os.getloadavg()
    return res


def print_overhead_and_compression(res: dict, hidden: int) -> None:
    """Markdown tables of the plugin overhead and of the compression hooks, where they ran."""
    if "overhead" in res:
        o = res["overhead"]
        print(f"plugin overhead, hidden={hidden} MLP step on 1 thread, daemon connected:")
        print(f"| step without plugin | with plugin | overhead | plugin alone (median, p99) |\n|---|---|---|---|\n"
              f"| {o['step_plain_s'] * 1e6:.0f} us | {o['step_with_plugin_s'] * 1e6:.0f} us | "
              f"{o['overhead_fraction']:.2%} | {o['plugin_only_us']:.1f} us, {o['plugin_only_p99_us']:.1f} us |")
    if "compression" in res:
        print("\n| hook | bytes/step sent | uncompressed | ratio | test accuracy |\n|---|---|---|---|---|")
        for hook in ("none", "topk", "int8", "powersgd"):
            r = res["compression"][hook]
            print(f"| {hook} | {r['bytes_sent'] / r['steps']:.0f} | {r['bytes_uncompressed'] / r['steps']:.0f} | "
                  f"{r['bytes_uncompressed'] / r['bytes_sent']:.2f}x | {r['accuracy']:.4f} |")


def print_throughput(t: dict, args: argparse.Namespace, load: str) -> None:
    """The throughput tables and the RESULT line against the 0.98x goal."""
    plain, ours = t["plain_samples_per_s"], t["trainer_samples_per_s"]
    pairs = [o / p for o, p in zip(ours, plain, strict=True)]
    paired = statistics.median(pairs)
    print(f"\nthroughput, 2 gloo ranks, hidden={args.hidden}, {t['steps']} steps per run, {args.rounds} rounds "
          f"(daemon connected: {t['connected']}, reports {t['reports_received']}; {load}):")
    print("| round | plain DDP samples/s | trainer samples/s | ratio |\n|---|---|---|---|")
    for i, (p, o) in enumerate(zip(plain, ours, strict=True)):
        print(f"| {i + 1} | {p:.0f} | {o:.0f} | {o / p:.3f} |")
    print(f"| median | {statistics.median(plain):.0f} | {statistics.median(ours):.0f} | "
          f"{statistics.median(ours) / statistics.median(plain):.3f} (of medians) |")
    bp, bt = t["plain_block_samples_per_s"], t["trainer_block_samples_per_s"]
    block_pairs = [o / p for o, p in zip(bt, bp, strict=True)]
    block_ratio = statistics.median(block_pairs)
    q = statistics.quantiles(block_pairs, n=4)
    print(f"\ninterleaved: {len(bt)} blocks of {t['block_steps']} trainer steps, each followed by "
          f"{t['block_steps']} plain-loop steps in the same processes: plain median {statistics.median(bp):.0f} "
          f"samples/s, trainer median {statistics.median(bt):.0f} samples/s, median paired ratio "
          f"{block_ratio:.3f} (quartiles {q[0]:.3f}-{q[2]:.3f})")
    # blocks have (nearly) equal sample counts, so the harmonic mean is the pooled samples/s
    pooled = statistics.harmonic_mean(bt) / statistics.harmonic_mean(bp)
    print(f"pooled over all blocks (total samples / total time of each loop): ratio {pooled:.3f}")
    if "aa_block_ratios" in t:
        aa = t["aa_block_ratios"]
        qa = statistics.quantiles(aa, n=4)
        print(f"A/A (plain loop against an identical copy, same alternation): median paired ratio "
              f"{statistics.median(aa):.3f} (quartiles {qa[0]:.3f}-{qa[2]:.3f})")
    cpu = [p / o for o, p in zip(t["trainer_block_cpu_s"], t["plain_block_cpu_s"], strict=True)]
    print(f"CPU time per block (this rank's process, all threads): plain/trainer median ratio "
          f"{statistics.median(cpu):.3f} (above 1: the trainer does less CPU work per step)")
    # The verdict uses the interleaved blocks: both loops see the same load within about a
    # second there, where whole runs alternate every few seconds and swing with the machine.
    verdict = "met" if block_ratio >= 0.98 else "NOT met"
    print(f"\nRESULT trainer/plain-DDP throughput: {block_ratio:.3f} (median paired ratio over {len(bt)} "
          f"interleaved blocks; goal >= 0.98x {verdict}); pooled {pooled:.3f}; whole runs {paired:.3f} (median paired ratio over "
          f"{len(pairs)} rounds, range {min(pairs):.3f}-{max(pairs):.3f}); {load}")


def main() -> int:
    args = parser().parse_args()
    parts = set(args.parts.split(","))
    res = run(args, parts)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print_overhead_and_compression(res, args.hidden)
    load = f"load average {res['loadavg_start'][0]:.1f} at start, {res['loadavg_end'][0]:.1f} at end"
    if "throughput" in res:
        print_throughput(res["throughput"], args, load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

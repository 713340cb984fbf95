"""The tuning plugin in a plain PyTorch loop: a few lines around the step.

    .venv/bin/python examples/own_loop.py [--socket /run/gputuned/control.sock]

Trains a small classifier on the digits data shipped with gputuned. With a daemon running
(`make run`), the loop reports its step statistics and applies the tuner's batch-size
decisions; without one, it trains all the same. Under torchrun with DDP, also call
``plugin.instrument(ddp_model)`` for communication timing and gradient statistics.
"""

from __future__ import annotations

import argparse
import logging

import torch

from gputuned.trainer_plugin.data import load_digits
from gputuned.trainer_plugin.plugin import TrainingPlugin


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", default="/run/gputuned/control.sock")
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    x, y, x_test, y_test = load_digits()
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batch = {"size": 64}

    def resize(global_batch: int, micro: int, accumulation: int) -> None:
        batch["size"] = global_batch  # the next batches have the new size

    plugin = TrainingPlugin(job="own-loop", batch_size=batch["size"], socket_path=args.socket,
                            on_batch_size=resize, optimizer=opt, lr_scaling="linear")

    def batches():
        for _ in range(args.epochs):
            order = torch.randperm(len(y))
            i = 0
            while i < len(order):
                idx = order[i : i + batch["size"]]
                i += len(idx)
                yield x[idx], y[idx]

    for xb, yb in plugin.wrap_loader(batches()):          # data-loader wait
        with plugin.step(samples=len(xb)):               # step time, samples/s
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            plugin.record(loss=loss)                      # loss (and loss scale with a GradScaler)
    plugin.close()
    accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    print(f"test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()

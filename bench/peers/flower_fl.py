"""Flower peer of `tandem-cloud simulate` (`cargo xtask bench peers`, issue 15).

Flower's simulation runtime (Ray backend) with PyTorch: LeNet-5 as tandem's (conv 5x5 6
padded 2, max-pool, conv 5x5 16, max-pool, fc 120, fc 84, fc 10: 61,706 parameters) on
the same Fashion-MNIST IDX files, pixels scaled to [0, 1], split IID over --clients
clients, FedAvg sampling --per-round of them per round, each one local epoch of SGD
(--lr, momentum 0.9, batches of 32). The global model is evaluated on the 10,000 test
images after every round (as tandem does). Prints one line per round (seconds, test
accuracy) and the bytes of the model arrays each round moves (every sampled client gets
the model and sends it back: 2 x clients x the arrays' bytes, before Flower's own framing).
"""

import argparse
import gzip
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def idx(path: str, images: bool) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if images:
        return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    return np.frombuffer(data, np.uint8, offset=8).astype(np.int64)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args.add_argument("--clients", type=int, default=100)
    args.add_argument("--per-round", type=int, default=10)
    args.add_argument("--rounds", type=int, default=50)
    args.add_argument("--lr", type=float, default=0.05)
    args.add_argument("--cpus", type=int, default=2)
    a = args.parse_args()
    torch.manual_seed(1)
    torch.set_num_threads(1)
    train_x = idx(f"{a.data}/train-images-idx3-ubyte.gz", True)
    train_y = idx(f"{a.data}/train-labels-idx1-ubyte.gz", False)
    test_x = torch.from_numpy(idx(f"{a.data}/t10k-images-idx3-ubyte.gz", True))
    test_y = torch.from_numpy(idx(f"{a.data}/t10k-labels-idx1-ubyte.gz", False))
    parts = np.array_split(np.random.default_rng(1).permutation(len(train_y)), a.clients)

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        model = LeNet()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        part = parts[int(context.node_config["partition-id"])]
        x, y = torch.from_numpy(train_x[part]), torch.from_numpy(train_y[part])
        opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
        order = torch.randperm(len(y))
        losses = []
        for start in range(0, len(y), 32):
            batch = order[start : start + 32]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        content = RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"train_loss": float(np.mean(losses)), "num-examples": len(y)}),
            }
        )
        return Message(content=content, reply_to=msg)

    server = ServerApp()
    clock = {"last": None}
    model_bytes = sum(p.numel() * 4 for p in LeNet().parameters())

    def evaluate(round_: int, arrays: ArrayRecord) -> MetricRecord:
        model = LeNet()
        model.load_state_dict(arrays.to_torch_state_dict())
        with torch.no_grad():
            accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
        now = time.perf_counter()
        if round_ > 0:
            print(f"round {round_}: {now - clock['last']:.3f} s, test accuracy {accuracy:.4f}", flush=True)
        clock["last"] = now
        return MetricRecord({"accuracy": accuracy})

    @server.main()
    def run(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_train=a.per_round / a.clients,
            fraction_evaluate=0.0,
            min_train_nodes=a.per_round,
            min_available_nodes=a.clients,
        )
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(LeNet().state_dict()),
            num_rounds=a.rounds,
            train_config=ConfigRecord({"lr": a.lr}),
            evaluate_fn=evaluate,
        )

    print(f"flwr model arrays: {model_bytes} bytes; per round {2 * a.per_round * model_bytes} bytes", flush=True)
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=a.clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": a.cpus}},
    )


if __name__ == "__main__":
    main()

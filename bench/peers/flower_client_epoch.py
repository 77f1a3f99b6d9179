"""The device side of a Flower + PyTorch client, for `cargo xtask bench peers` (issue 15).

A Python process that imports what a Flower ClientApp with PyTorch needs (flwr's client
app and records, torch), loads its slice of Fashion-MNIST (client --client I/N of an IID
split, as `tandem fl --client I/N` holds), and trains LeNet-5 one local epoch (SGD, lr
0.05, momentum 0.9, batch 32), then packs the model as Flower would send it. It does not
connect to a SuperLink: a deployed client runs this inside a SuperNode process with its
gRPC client, so its memory and start-up are at least these. Prints `ready_s` (imports, data
and model), `epoch_s` and `peak_rss_mib`.
"""

import argparse
import resource
import time

START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from flwr.app import ArrayRecord, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from flower_fl import LeNet, idx  # noqa: E402


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args.add_argument("--client", default="0/100")
    a = args.parse_args()
    index, of = (int(x) for x in a.client.split("/"))
    torch.set_num_threads(1)
    torch.manual_seed(1)
    ClientApp()
    images = idx(f"{a.data}/train-images-idx3-ubyte.gz", True)
    labels = idx(f"{a.data}/train-labels-idx1-ubyte.gz", False)
    part = np.array_split(np.random.default_rng(1).permutation(len(labels)), of)[index]
    x, y = torch.from_numpy(images[part].copy()), torch.from_numpy(labels[part].copy())
    del images, labels
    model = LeNet()
    ready = time.perf_counter()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    order = torch.randperm(len(y))
    for start in range(0, len(y), 32):
        batch = order[start : start + 32]
        opt.zero_grad()
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
    RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": len(y)})})
    done = time.perf_counter()
    print(f"examples: {len(y)}")
    print(f"ready_s: {ready - START:.3f}")
    print(f"epoch_s: {done - ready:.3f}")
    print(f"peak_rss_mib: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()

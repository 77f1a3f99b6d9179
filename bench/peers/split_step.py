"""PyTorch eager peer of tandem's split step (`cargo xtask bench peers`, issue 15).

all-MiniLM-L6-v2 from the same cached safetensors, cut after --cut layers, on the first
--batch-size training reviews of the same Rotten Tomatoes file (tandem's split: by movie,
FNV-1a-64 of its name mod 100 below 80; `--write-corpus` writes them, with as many dev and
test reviews, as a corpus on which every `tandem split` step is this batch), tokenized with the same tokenizer.json to at most
--max-len tokens and padded to the longest:
- the device's bottom: embeddings and the first --cut layers, forward, backward from a
  cut gradient, AdamW (tandem's train-bottom mode);
- the cloud's top: the other layers, mean pooling over real tokens, a linear head,
  cross-entropy, backward to its input, AdamW.
No dropout (tandem has none). Prints the median milliseconds per step of each (after
--warmup steps) and the process's peak RSS, one `key: value` per line.
"""

import argparse
import bz2
import csv
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

D, HEADS, FF, EPS = 384, 12, 1536, 1e-12


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def split_of(movie: str) -> str:
    bucket = fnv1a64(movie.encode()) % 100
    return "train" if bucket < 80 else "dev" if bucket < 90 else "test"


def first_reviews(path: str, count: int) -> dict[str, list[dict]]:
    """The first `count` reviews (rows) of each split, in file order."""
    csv.field_size_limit(sys.maxsize)
    splits = {"train": [], "dev": [], "test": []}
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["category"] not in ("fresh", "rotten"):
                continue
            rows = splits[split_of(row["movie_name"])]
            if len(rows) < count:
                rows.append(row)
            if all(len(r) == count for r in splits.values()):
                break
    return splits


def write_corpus(path: str, splits: dict[str, list[dict]]) -> None:
    """A corpus of tandem's format holding only `splits`' reviews: every training epoch
    of `tandem split` with a batch of that many is this one batch."""
    with bz2.open(path, "wt", encoding="utf-8", newline="") as f:
        fields = ["category", "text", "movie_name", "has_plot_and_reviews"]
        out = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        out.writeheader()
        for rows in splits.values():
            out.writerows(rows)


class Layer(nn.Module):
    """A BERT encoder layer (post-LayerNorm, GELU), weights named as in the checkpoint."""

    def __init__(self, w: dict, i: int):
        super().__init__()
        p = f"encoder.layer.{i}."

        def linear(name: str) -> nn.Linear:
            weight = w[p + name + ".weight"]
            lin = nn.Linear(weight.shape[1], weight.shape[0])
            lin.weight.data.copy_(weight)
            lin.bias.data.copy_(w[p + name + ".bias"])
            return lin

        def norm(name: str) -> nn.LayerNorm:
            ln = nn.LayerNorm(D, eps=EPS)
            ln.weight.data.copy_(w[p + name + ".weight"])
            ln.bias.data.copy_(w[p + name + ".bias"])
            return ln

        self.q, self.k, self.v = (linear(f"attention.self.{n}") for n in ("query", "key", "value"))
        self.o = linear("attention.output.dense")
        self.ln1 = norm("attention.output.LayerNorm")
        self.up, self.down = linear("intermediate.dense"), linear("output.dense")
        self.ln2 = norm("output.LayerNorm")

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, l, _ = x.shape
        heads = lambda t: t.view(b, l, HEADS, D // HEADS).transpose(1, 2)
        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D // HEADS) + bias
        ctx = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, l, D)
        x = self.ln1(x + self.o(ctx))
        return self.ln2(x + self.down(F.gelu(self.up(x))))


class Bottom(nn.Module):
    def __init__(self, w: dict, cut: int):
        super().__init__()
        self.word = nn.Embedding.from_pretrained(w["embeddings.word_embeddings.weight"], freeze=False)
        self.pos = nn.Embedding.from_pretrained(w["embeddings.position_embeddings.weight"], freeze=False)
        self.typ = nn.Embedding.from_pretrained(w["embeddings.token_type_embeddings.weight"], freeze=False)
        self.ln = nn.LayerNorm(D, eps=EPS)
        self.ln.weight.data.copy_(w["embeddings.LayerNorm.weight"])
        self.ln.bias.data.copy_(w["embeddings.LayerNorm.bias"])
        self.layers = nn.ModuleList(Layer(w, i) for i in range(cut))

    def forward(self, ids: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1])
        x = self.ln(self.word(ids) + self.pos(positions)[None] + self.typ(torch.zeros_like(ids)))
        for layer in self.layers:
            x = layer(x, bias)
        return x


class Top(nn.Module):
    def __init__(self, w: dict, cut: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(Layer(w, i) for i in range(cut, layers))
        self.head = nn.Linear(D, 2)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, bias)
        pooled = (x * keep).sum(1) / keep.sum(1)
        return self.head(pooled)


def median_ms(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--model-dir", required=True)
    args.add_argument("--data", required=True)
    args.add_argument("--cut", type=int, default=2)
    args.add_argument("--batch-size", type=int, default=16)
    args.add_argument("--max-len", type=int, default=64)
    args.add_argument("--steps", type=int, default=20)
    args.add_argument("--warmup", type=int, default=3)
    args.add_argument("--threads", type=int, default=2)
    args.add_argument("--write-corpus", metavar="PATH", help="write the reviews used as a corpus for tandem split, and stop")
    a = args.parse_args()
    splits = first_reviews(a.data, a.batch_size)
    if a.write_corpus:
        write_corpus(a.write_corpus, splits)
        return
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    weights = load_file(f"{a.model_dir}/model.safetensors")
    layers = 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("encoder.layer."))
    tokenizer = Tokenizer.from_file(f"{a.model_dir}/tokenizer.json")
    tokenizer.enable_truncation(a.max_len)
    tokenizer.enable_padding()
    texts = [row["text"] for row in splits["train"]]
    encoded = tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encoded])
    mask = torch.tensor([e.attention_mask for e in encoded], dtype=torch.float32)
    bias = ((1.0 - mask) * -1e4)[:, None, None, :]
    keep = mask[:, :, None]
    labels = torch.randint(0, 2, (ids.shape[0],))

    bottom = Bottom(weights, a.cut)
    bottom_opt = torch.optim.AdamW(bottom.parameters(), lr=5e-5)
    cut_gradient = torch.randn(ids.shape[0], ids.shape[1], D) * 1e-3

    def bottom_step():
        bottom_opt.zero_grad()
        bottom(ids, bias).backward(cut_gradient)
        bottom_opt.step()

    top = Top(weights, a.cut, layers)
    top_opt = torch.optim.AdamW(top.parameters(), lr=1e-4)
    hidden = bottom(ids, bias).detach()

    def top_step():
        x = hidden.clone().requires_grad_(True)
        top_opt.zero_grad()
        F.cross_entropy(top(x, bias, keep), labels).backward()
        top_opt.step()
        return x.grad

    print(f"torch: {torch.__version__}")
    print(f"threads: {torch.get_num_threads()}")
    print(f"batch: {ids.shape[0]} x {ids.shape[1]} tokens ({int(mask.sum())} real)")
    print(f"torch_bottom_step_ms: {median_ms(bottom_step, a.steps, a.warmup):.1f}")
    print(f"torch_top_step_ms: {median_ms(top_step, a.steps, a.warmup):.1f}")
    print(f"peak_rss_mib: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()

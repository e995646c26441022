"""PyTorch + TorchDEQ version of examples/mnist_mlp.deq, for comparison.

Same architecture (Linear 784->256 injection, tanh(cell(z) + u) equilibrium,
Linear 256->10 head, PyTorch's default initializers), same data (the bundled
8,000 training and 2,000 test digits, standardized with the training split's
mean and standard deviation as `normalize = true` does; `raw` keeps pixels
in 0..1) and the same train
block: Anderson (m = 5, tol 1e-4, max_iter 40) forward, implicit backward
(tol 1e-6, max_iter 40), Adam lr 1e-3, batch 128, 4 epochs.

    python baseline.py SEED [abs|rel] [raw] [fixed] [cosine]    # from the repository root

`save=DIR` writes the trained weights as DIR/model.safetensors in deqc's
layout (`deqc eval examples/mnist_mlp.deq --weights DIR` scores them);
`load=FILE` scores a deqc checkpoint with this model instead of training;
`init=DIR` writes the initial weights there first (for `deqc run
--init-from DIR`); `batch=N` and `epochs=N` change the train block's;
`losses` prints every step's training loss. With `batch=8000` (the whole
training split, so no shuffle matters) both tools take the same steps
from the same weights and their losses can be compared step by step.

Shared draws: `start=FILE` trains from the weights of a deqc checkpoint
(e.g. the initial values of seed S, saved by `deqc run
examples/mnist_mlp.deq --seed S --epochs 1 --set lr=0 --out DIR`, since
Adam at rate 0 moves nothing), and `deqc_order` takes the minibatches in
deqc's epoch order for this seed (`epoch_order` in src/train/data/mod.rs,
SplitMix64 + Fisher-Yates, rewritten below). With both, the two tools run
the recipe from the same random draws, and what differs is only the
arithmetic.

`cosine` decays the rate as `schedule = cosine;` does in deqc: at optimizer
step t of T, lr * (1 + cos(pi * t / T)) / 2.

The adjoint is solved with Anderson (m = 5, as deqc's implicit backward
does); `fixed` uses TorchDEQ's default backward solver instead.
"""
import functools
import gzip
import math
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from torchdeq import get_deq
from torchdeq.solver import register_solver
from torchdeq.solver.anderson import anderson_solver

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
stop = sys.argv[2] if len(sys.argv) > 2 else "abs"
torch.manual_seed(seed)
torch.set_num_threads(2)


def idx(name, offset):
    with gzip.open("data/mnist-10k/" + name) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def images(name):
    return torch.tensor(idx(name, 16).reshape(-1, 784) / 255.0, dtype=torch.float32)


def labels(name):
    return torch.tensor(idx(name, 8).astype(np.int64))


xtr, ytr = images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz")
xte, yte = images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz")
if "raw" not in sys.argv[3:]:
    # One mean and one std over every training pixel, in float64, like deqc.
    mean, std = xtr.double().mean().item(), xtr.double().std(unbiased=False).item()
    print(f"standardized with mean {mean:.6f}, std {std:.6f}", flush=True)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std


# `fixed` on the command line keeps TorchDEQ's default backward solver
# (fixed-point iteration), as the figures before 1 December 2026 did.
if "fixed" in sys.argv[3:]:
    BACKWARD = "fixed_point_iter"
else:
    BACKWARD = "anderson_m5"
    register_solver(BACKWARD, functools.partial(anderson_solver, m=5))


class DeqMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.inject = nn.Linear(784, 256)
        self.cell = nn.Linear(256, 256)
        self.head = nn.Linear(256, 10)
        # deqc's implicit backward solves the adjoint with the forward
        # solver's kind (Anderson, m = 5); TorchDEQ's default b_solver is
        # plain fixed-point iteration, and get_deq passes no `m` to it.
        self.deq = get_deq(f_solver="anderson", f_max_iter=40, f_tol=1e-4, f_stop_mode=stop,
                           b_solver=BACKWARD, b_max_iter=40, b_tol=1e-6, b_stop_mode=stop,
                           ift=True)

    def forward(self, x):
        u = self.inject(x)
        zs, _ = self.deq(lambda z: torch.tanh(self.cell(z) + u), torch.zeros_like(u),
                         solver_kwargs={"m": 5})
        return self.head(zs[-1])


model = DeqMlp()
options = dict(a.split("=", 1) for a in sys.argv[3:] if "=" in a)
LAYERS = ("inject", "cell", "head")


def evaluate():
    model.eval()
    with torch.no_grad():
        return (model(xte).argmax(1) == yte).float().mean().item()


def load(path):
    # deqc stores a Linear's weight as [in, out]; PyTorch as [out, in].
    from safetensors.torch import load_file
    weights = load_file(path)
    with torch.no_grad():
        for name in LAYERS:
            layer = getattr(model, name)
            layer.weight.copy_(weights[name + ".w"].t())
            layer.bias.copy_(weights[name + ".b"])


if "load" in options:
    load(options["load"])
    print(f"{options['load']}: test accuracy {100 * evaluate():.2f}%")
    sys.exit(0)
if "start" in options:
    load(options["start"])

MASK = (1 << 64) - 1


class SplitMix64:
    """deqc's shuffle generator (src/train/data/mod.rs), bit for bit."""

    def __init__(self, state):
        self.state = state & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        zone = MASK - MASK % n
        while True:
            x = self.next()
            if x < zone:
                return x % n


def epoch_order(n, seed, epoch):
    """deqc's `epoch_order(n, seed, epoch)`: the samples of one epoch."""
    s = SplitMix64(seed ^ 0x6465716373687566).next()
    rng = SplitMix64(s ^ ((epoch * 0xD1B54A32D192ED03) & MASK))
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


# deqc's own test vectors (src/train/data/tests.rs).
assert epoch_order(5, 0, 0) == [0, 4, 3, 1, 2]
assert epoch_order(8, 1, 2) == [2, 0, 5, 7, 4, 3, 1, 6]


def save(directory):
    import os
    from safetensors.torch import save_file
    os.makedirs(directory, exist_ok=True)
    tensors = {}
    for name in LAYERS:
        layer = getattr(model, name)
        tensors[name + ".w"] = layer.weight.detach().t().contiguous()
        tensors[name + ".b"] = layer.bias.detach().contiguous()
    save_file(tensors, os.path.join(directory, "model.safetensors"))


if "init" in options:
    # The initial weights, for `deqc run --init-from DIR`.
    save(options["init"])
EPOCHS = int(options.get("epochs", 4))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr),
                                     batch_size=int(options.get("batch", 128)), shuffle=True)
steps_total = EPOCHS * len(loader)
if "cosine" in sys.argv[3:]:
    # deqc's `cosine`: the rate at optimizer step t (from 0) of steps_total.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t / steps_total, 1.0))))
else:
    sched = None
start = time.time()
def deqc_batches(epoch):
    order = torch.tensor(epoch_order(len(xtr), seed, epoch))
    size = int(options.get("batch", 128))
    for first in range(0, len(order), size):
        rows = order[first:first + size]
        yield xtr[rows], ytr[rows]


for epoch in range(EPOCHS):
    model.train()
    for x, y in (deqc_batches(epoch) if "deqc_order" in sys.argv[3:] else loader):
        loss = nn.functional.cross_entropy(model(x), y)
        if "losses" in sys.argv[3:]:
            print(f"step loss {loss.item():.9f}", flush=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    acc = evaluate()
    print(f"seed {seed} epoch {epoch + 1}: test accuracy {100 * acc:.2f}%, "
          f"{time.time() - start:.1f} s", flush=True)

if "save" in options:
    save(options["save"])

"""Step-time twins of the three example families in PyTorch + TorchDEQ.

Each twin is the example's model with PyTorch's layers, the example's
optimizer, batch size and backward mode, and the solver iteration counts
given on the command line with a tolerance no solve reaches, so that every
step runs exactly that many iterations (as `deqc bench --set solver.tol=0
--set solver.max_iter=N ...` does on the deqc side). A step is forward
(solve), loss, backward (adjoint solve or phantom steps) and the optimizer
update. The Jacobian regularizer of the MDEQ example is off on both sides.

    python compare/torchdeq/step_time.py mlp|transformer|mdeq \
        --fwd N [--bwd N] [--steps N] [--threads N]

Prints one line per step and `median step: X ms (steps 2..N)`, the format of
`deqc bench`, so that `compare.py` reads both the same way. Random inputs of
the data's shapes and ranges: at fixed iteration counts the values do not
change the work.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchdeq import get_deq

NO_TOL = 1e-30


class DeqMlp(nn.Module):
    """examples/mnist_mlp.deq: Anderson forward, implicit (Anderson) adjoint."""

    def __init__(self, fwd, bwd):
        super().__init__()
        self.inject = nn.Linear(784, 256)
        self.cell = nn.Linear(256, 256)
        self.head = nn.Linear(256, 10)
        self.deq = get_deq(f_solver="anderson", f_max_iter=fwd, f_tol=NO_TOL,
                           b_solver="anderson", b_max_iter=bwd, b_tol=NO_TOL, ift=True)

    def forward(self, x):
        u = self.inject(x)
        zs, info = self.deq(lambda z: torch.tanh(self.cell(z) + u), torch.zeros_like(u),
                            solver_kwargs={"m": 5})
        return self.head(zs[-1]), info


class Block(nn.Module):
    """The weight-tied block of examples/char_lm.deq (post-norm, causal)."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def attn(self, x):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, -1e9)
        mixed = scores.softmax(-1) @ v
        return self.o(mixed.transpose(1, 2).reshape(b, t, d))

    def forward(self, z, u):
        h = self.ln1(z + u + self.attn(z + u))
        return self.ln2(h + self.fc2(F.gelu(self.fc1(h), approximate="tanh")))


class CharDeq(nn.Module):
    """examples/char_lm.deq: Anderson forward, phantom(5, 0.8) backward."""

    def __init__(self, fwd, steps=5, tau=0.8, d=128, vocab=64):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.block = Block(d, 4)
        self.out = nn.Linear(d, vocab)
        self.deq = get_deq(f_solver="anderson", f_max_iter=fwd, f_tol=NO_TOL,
                           ift=False, grad=steps, tau=tau)

    def forward(self, x):
        u = self.embed(x)
        zs, info = self.deq(lambda z: self.block(z, u), torch.zeros_like(u),
                            solver_kwargs={"m": 5})
        return self.out(zs[-1]), info


class Mdeq(nn.Module):
    """examples/mdeq_mnist.deq: Broyden forward, implicit (Broyden) adjoint."""

    def __init__(self, fwd, bwd):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.n0 = nn.GroupNorm(4, 8)
        self.hi = nn.Conv2d(8, 8, 3, padding=1)
        self.lo = nn.Conv2d(16, 16, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up = nn.Conv2d(16, 8, 1)
        self.n1, self.n2 = nn.GroupNorm(4, 8), nn.GroupNorm(4, 16)
        self.head = nn.Linear(16 * 7 * 7, 10)
        self.deq = get_deq(f_solver="broyden", f_max_iter=fwd, f_tol=NO_TOL,
                           b_solver="broyden", b_max_iter=bwd, b_tol=NO_TOL, ift=True)

    def forward(self, x):
        u = self.n0(self.stem(x))

        def f(h, l):
            h_next = F.relu(self.n1(self.hi(h)) + u + F.interpolate(self.up(l), scale_factor=2))
            return h_next, F.relu(self.n2(self.lo(l)) + self.down(h))

        b = x.shape[0]
        z0 = (torch.zeros(b, 8, 28, 28), torch.zeros(b, 16, 14, 14))
        zs, info = self.deq(f, z0)
        _, l = zs[-1]
        return self.head(F.avg_pool2d(l, 2, 2).flatten(1)), info


def family(name, fwd, bwd):
    """Model, optimizer, batch maker and gradient clip of an example."""
    if name == "mlp":
        m = DeqMlp(fwd, bwd)
        batch = lambda: (torch.rand(128, 784), torch.randint(0, 10, (128,)))
        return m, torch.optim.Adam(m.parameters(), lr=1e-3), batch, None
    if name == "transformer":
        m = CharDeq(fwd, steps=bwd)
        batch = lambda: (torch.randint(0, 64, (32, 64)), torch.randint(0, 64, (32, 64)))
        opt = torch.optim.AdamW(m.parameters(), lr=3e-4, weight_decay=0.01)
        return m, opt, batch, 1.0
    if name == "mdeq":
        m = Mdeq(fwd, bwd)
        batch = lambda: (torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,)))
        return m, torch.optim.Adam(m.parameters(), lr=2e-3), batch, None
    raise SystemExit(f"unknown family {name}: use mlp, transformer or mdeq")


def train_step(model, opt, clip, x, y):
    """One training step: forward (solve), loss, backward, clip, update."""
    scores, info = model(x)
    loss = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("family")
    ap.add_argument("--fwd", type=int, required=True, help="forward solver iterations")
    ap.add_argument("--bwd", type=int, default=5,
                    help="adjoint iterations (phantom steps for the transformer)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model, opt, batch, clip = family(args.family, args.fwd, args.bwd)
    model.train()
    times = []
    for step in range(args.steps):
        x, y = batch()
        start = time.perf_counter()
        info = train_step(model, opt, clip, x, y)
        times.append(time.perf_counter() - start)
        nstep = info.get("nstep", torch.zeros(1)).float().mean().item()
        print(f"{step + 1:>5} {times[-1] * 1e3:>10.2f} fwd it {nstep:.1f}")
    timed = times[1:] if len(times) >= 2 else times
    which = f"steps 2..{len(times)}" if len(times) >= 2 else "step 1"
    print(f"median step: {statistics.median(timed) * 1e3:.2f} ms ({which})")


if __name__ == "__main__":
    main()

"""`deqc grad` against PyTorch + TorchDEQ on the same weights and batch.

    cargo build --release
    python compare/torchdeq/gradcheck.py RUN/model.safetensors   # from the repository root

Loads a mnist_mlp checkpoint (Linear weights stored [in, out]), writes the
first 128 training digits as a batch, runs `deqc grad` (f32, the example's
tolerances) and compares its loss and gradients with PyTorch in float64 with
tight solves (relative tolerance 1e-12).
"""
import gzip
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from torchdeq import get_deq

torch.set_num_threads(2)
weights = load_file(sys.argv[1])
with gzip.open("data/mnist-10k/train-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16)[: 128 * 784].reshape(128, 784) / 255.0
with gzip.open("data/mnist-10k/train-labels-idx1-ubyte.gz") as f:
    y = torch.tensor(np.frombuffer(f.read(), np.uint8, offset=8)[:128].astype(np.int64))
x = torch.tensor(x, dtype=torch.float32)

with tempfile.TemporaryDirectory() as tmp:
    save_file({"x": x, "target": y}, f"{tmp}/batch.safetensors")
    subprocess.run(["target/release/deqc", "grad", "examples/mnist_mlp.deq",
                    "--weights", sys.argv[1], "--batch", f"{tmp}/batch.safetensors",
                    "--out", f"{tmp}/grads.safetensors"], check=True)
    ours = load_file(f"{tmp}/grads.safetensors")

p = {k: v.double().clone().requires_grad_() for k, v in weights.items()}
deq = get_deq(f_solver="anderson", f_max_iter=400, f_tol=1e-12, f_stop_mode="rel",
              b_max_iter=2000, b_tol=1e-12, b_stop_mode="rel", ift=True)
u = x.double() @ p["inject.w"] + p["inject.b"]
zs, _ = deq(lambda z: torch.tanh(z @ p["cell.w"] + p["cell.b"] + u), torch.zeros_like(u),
            solver_kwargs={"m": 5})
loss = nn.functional.cross_entropy(zs[-1] @ p["head.w"] + p["head.b"], y)
loss.backward()
print(f"loss: deqc {float(ours['loss']):.8f}, PyTorch (f64) {loss.item():.8f}")
for k in sorted(p):
    a, b = ours[k].double(), p[k].grad
    print(f"{k:9s} relative error {float((a - b).norm() / b.norm()):.1e}")

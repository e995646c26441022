"""Per-op profile of a step-time twin, the counterpart of `deqc bench --ops`.

    python compare/torchdeq/profile_twin.py mlp|transformer|mdeq \\
        --fwd N [--bwd N] [--steps N] [--threads N] [--rows N]

Runs two warm-up steps of the twin in `step_time.py`, then profiles
`--steps` steps with `torch.profiler` and prints the ops by their own CPU
time (totals over all profiled steps; divide by `--steps` for a step).
"""
import argparse
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_time  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("family")
    ap.add_argument("--fwd", type=int, required=True)
    ap.add_argument("--bwd", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=30)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model, opt, batch, clip = step_time.family(args.family, args.fwd, args.bwd)
    model.train()

    def step():
        step_time.train_step(model, opt, clip, *batch())

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    table = prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=args.rows,
        max_name_column_width=30, max_shapes_column_width=60)
    print(f"{args.steps} steps profiled")
    print(table)


if __name__ == "__main__":
    main()

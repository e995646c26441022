"""deqc against PyTorch + TorchDEQ, step time, the three example families.

Runs `deqc bench` and `step_time.py` alternately, round after round, in one
sitting, so that both sides see the same machine load (on a shared machine
absolute times drift; the ratio of neighbouring runs drifts much less).
Both sides use the same threads and the same fixed iteration counts (a
tolerance no solve reaches). Prints each round and, per family, the median
step times and the median of the per-round ratios deqc / TorchDEQ (below 1:
deqc is faster).

    cargo build --release
    python compare/torchdeq/compare.py [--rounds 3] [--steps 6] [--only mlp,mdeq]
"""
import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# family: (threads, deqc file and --set overrides, twin arguments)
FAMILIES = {
    "mlp": (1, "examples/mnist_mlp.deq",
            ["solver.max_iter=20", "solver.tol=0", "backward.max_iter=20", "backward.tol=0"],
            ["--fwd", "20", "--bwd", "20"]),
    "transformer": (2, "examples/char_lm.deq",
                    ["solver.max_iter=10", "solver.tol=0", "backward.steps=5"],
                    ["--fwd", "10", "--bwd", "5"]),
    "mdeq": (2, "examples/mdeq_mnist.deq",
             ["solver.max_iter=12", "solver.tol=0", "backward.max_iter=14", "backward.tol=0",
              "jacobian_reg.freq=0"],
             ["--fwd", "12", "--bwd", "14"]),
}

MEDIAN = re.compile(r"median step: ([0-9.]+) ms")


def median_ms(cmd):
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    m = MEDIAN.search(out.stdout)
    if out.returncode != 0 or not m:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--only", default="mlp,transformer,mdeq")
    ap.add_argument("--deqc", default=str(ROOT / "target/release/deqc"))
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()
    families = args.only.split(",")
    results = {f: [] for f in families}
    for r in range(args.rounds):
        for fam in families:
            threads, file, sets, twin = FAMILIES[fam]
            deqc = [args.deqc, "bench", file, "--steps", str(args.steps), "--threads", str(threads)]
            for s in sets:
                deqc += ["--set", s]
            torch = [args.python, str(HERE / "step_time.py"), fam, *twin,
                     "--steps", str(args.steps), "--threads", str(threads)]
            d, t = median_ms(deqc), median_ms(torch)
            results[fam].append((d, t))
            print(f"round {r + 1} {fam:>11}: deqc {d:9.2f} ms  TorchDEQ {t:9.2f} ms  "
                  f"ratio {d / t:.2f}", flush=True)
    print()
    print("| family | threads | deqc ms/step | TorchDEQ ms/step | deqc / TorchDEQ |")
    print("| --- | --- | --- | --- | --- |")
    for fam in families:
        rs = results[fam]
        d = statistics.median(x for x, _ in rs)
        t = statistics.median(y for _, y in rs)
        ratio = statistics.median(x / y for x, y in rs)
        print(f"| {fam} | {FAMILIES[fam][0]} | {d:.1f} | {t:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()

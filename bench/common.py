"""What the benchmark scripts share: running a binary, and the dataset of
otelhouse-loadgen (generated once, reused by every benchmark)."""

import json
import os
import subprocess


def run(cmd, **kw):
    env = dict(os.environ, RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out


def add_dataset_args(p):
    p.add_argument("--dataset", help="dataset directory (generated when missing)")
    p.add_argument("--logs", type=int, default=10_000_000)
    p.add_argument("--spans", type=int, default=2_000_000)
    p.add_argument("--hours", type=int, default=24)


def ensure_dataset(args, dataset):
    """Generates the dataset into `dataset` unless it is there; its summary."""
    if not os.path.exists(os.path.join(dataset, "dataset.json")):
        run([args.loadgen, "dataset", "--out", dataset, "--logs", str(args.logs),
             "--spans", str(args.spans), "--hours", str(args.hours),
             "--rare-every", str(max(1, args.logs // 10))])
    with open(os.path.join(dataset, "dataset.json")) as f:
        return json.load(f)

"""The reference for `scripts/bench.sh distributed`: PyTorch's own all-reduce (Gloo) of
one flat fp32 buffer between the ranks torchrun starts, as DistributedDataParallel would
average a model's gradients in one bucket. Prints rank 0's mean seconds as JSON.

usage: torchrun --nproc-per-node 2 scripts/bench_allreduce_torch.py NUMEL [--iters N]
"""

import argparse
import json
import time

import torch
import torch.distributed as dist


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("numel", type=int)
    p.add_argument("--iters", type=int, default=8)
    a = p.parse_args()
    dist.init_process_group("gloo")
    buf = torch.ones(a.numel)
    dist.all_reduce(buf)
    dist.barrier()
    started = time.perf_counter()
    for _ in range(a.iters):
        dist.all_reduce(buf, op=dist.ReduceOp.AVG)
    secs = (time.perf_counter() - started) / a.iters
    if dist.get_rank() == 0:
        print(json.dumps({"numel": a.numel, "allreduce_s": secs, "ranks": dist.get_world_size()}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

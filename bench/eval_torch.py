"""Reference for bench/speed: top-10 recommendation with PyTorch on the CPU (the same work as xdrec's
recommend(): scores = U_batch @ Y^T, seen items set to -inf, torch.topk), on the factors bench_speed wrote.

usage: eval_torch.py DIR THREADS   (DIR holds users.f32, items.f32, seen_indptr.i64, seen_indices.i32, meta.json)
Prints one JSON line: {"users_per_second": ..., "users": ..., "batch": ..., "threads": ..., "torch": ...}.
"""
import json
import sys
import time

import numpy as np
import torch


def main():
    d, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    meta = json.load(open(f"{d}/meta.json"))
    nu, ni, f = meta["users"], meta["items"], meta["factors"]
    U = torch.from_numpy(np.fromfile(f"{d}/users.f32", dtype=np.float32).reshape(nu, f))
    Y = torch.from_numpy(np.fromfile(f"{d}/items.f32", dtype=np.float32).reshape(ni, f))
    indptr = np.fromfile(f"{d}/seen_indptr.i64", dtype=np.int64)
    indices = np.fromfile(f"{d}/seen_indices.i32", dtype=np.int32).astype(np.int64)
    batch = 256
    Yt = Y.t().contiguous()
    lists = 0
    start = time.perf_counter()
    for b in range(0, nu, batch):
        e = min(nu, b + batch)
        s = U[b:e] @ Yt
        rows = np.repeat(np.arange(e - b), np.diff(indptr[b : e + 1]))
        cols = indices[indptr[b] : indptr[e]]
        s[torch.from_numpy(rows), torch.from_numpy(cols)] = -float("inf")
        top = torch.topk(s, 10, dim=1)
        lists += top.indices.shape[0]
    sec = time.perf_counter() - start
    assert lists == nu
    print(json.dumps({"users_per_second": nu / sec, "users": nu, "batch": batch, "threads": threads,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()

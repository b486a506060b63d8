#!/usr/bin/env python3
"""PyTorch baseline for bench/encoders: the same BERT, written with torch.nn.functional, with the weights of the
benchmark's model folder (model.safetensors read with numpy) and its token ids (ids.json).

usage: encoders_torch.py MODEL_DIR --threads N --batches 1,32 --seconds S

Prints one JSON object: {"version", "threads", "results": {"<batch>": {"sentences_per_second" (best round),
"sentences_per_second_median"}},
"peak_rss_mb", "check": [vectors of the first 4 texts]}. Set OMP_NUM_THREADS / OPENBLAS_NUM_THREADS to the same
thread count before starting it (bench/encoders does).
"""
import argparse
import json
import math
import resource
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", name
        a, b = info["data_offsets"]
        arr = np.frombuffer(data, dtype=np.float32, count=(b - a) // 4, offset=8 + n + a)
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out


class Bert:
    def __init__(self, folder):
        cfg = json.load(open(folder + "/config.json"))
        self.h = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.d = self.h // self.heads
        self.eps = cfg["layer_norm_eps"]
        self.layers = cfg["num_hidden_layers"]
        self.w = load_safetensors(folder + "/model.safetensors")

    def forward(self, ids):
        w, h, eps = self.w, self.h, self.eps
        b, n = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids]
        x = x + w["embeddings.position_embeddings.weight"][:n] + w["embeddings.token_type_embeddings.weight"][0]
        x = F.layer_norm(x, (h,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        for l in range(self.layers):
            p = f"encoder.layer.{l}."
            lin = lambda t, name: F.linear(t, w[p + name + ".weight"], w[p + name + ".bias"])
            split = lambda t: t.view(b, n, self.heads, self.d).transpose(1, 2)
            q = split(lin(x, "attention.self.query"))
            k = split(lin(x, "attention.self.key"))
            v = split(lin(x, "attention.self.value"))
            s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d)
            ctx = torch.matmul(torch.softmax(s, dim=-1), v).transpose(1, 2).reshape(b, n, h)
            x = F.layer_norm(lin(ctx, "attention.output.dense") + x, (h,),
                             w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
            y = F.gelu(lin(x, "intermediate.dense"))
            x = F.layer_norm(lin(y, "output.dense") + x, (h,), w[p + "output.LayerNorm.weight"],
                             w[p + "output.LayerNorm.bias"], eps)
        return F.normalize(x.mean(dim=1), dim=-1)  # mean pooling (no padding: equal lengths), Normalize


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = Bert(a.folder)
    ids = torch.tensor(json.load(open(a.folder + "/ids.json")), dtype=torch.long)
    out = {"version": torch.__version__, "threads": a.threads, "results": {}}
    with torch.inference_mode():
        out["check"] = model.forward(ids[:4]).tolist()
        for batch in [int(x) for x in a.batches.split(",")]:
            model.forward(ids[:batch])  # warm-up
            # Rounds of batches; the best round is reported (the machine may be shared), the median too.
            round_seconds = max(0.25, a.seconds / 8)
            rates, pos, t_total = [], 0, time.perf_counter()
            while time.perf_counter() - t_total < a.seconds or len(rates) < 3:
                done, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < round_seconds or done < batch:
                    if pos + batch > len(ids):
                        pos = 0
                    model.forward(ids[pos : pos + batch])
                    done += batch
                    pos += batch
                rates.append(done / (time.perf_counter() - t0))
            rates.sort()
            out["results"][str(batch)] = {"sentences_per_second": rates[-1],
                                          "sentences_per_second_median": rates[len(rates) // 2]}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(out))


if __name__ == "__main__":
    main()

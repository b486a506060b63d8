#!/usr/bin/env python3
"""PyTorch baseline for bench/encoders, written with torch.nn.functional:
  --arch bert (default): the same BERT with the weights of the benchmark's model folder (model.safetensors read
    with numpy) and its token ids (MODEL_DIR/ids.json);
  --arch use-lite: Universal Sentence Encoder Lite as xdrec runs it (src/text/use_lite.cpp), with the weights of
    the TensorFlow.js model in MODEL_DIR (package/dist/model.json or model.json and its shards, read with numpy)
    and the token ids of --ids FILE (a JSON list of id lists, as xdrec's use-lite tokenizer produced them).

usage: encoders_torch.py MODEL_DIR [--arch bert|use-lite] [--ids FILE] --threads N --batches 1,32 --seconds S

Prints one JSON object: {"version", "threads", "results": {"<batch>": {"sentences_per_second" (best round),
"sentences_per_second_median"}},
"peak_rss_mb", "check": [vectors of the first 4 texts]}. Set OMP_NUM_THREADS / OPENBLAS_NUM_THREADS to the same
thread count before starting it (bench/encoders does).
"""
import argparse
import json
import math
import os
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


def load_tfjs(model_json):
    """Weights of a TensorFlow.js graph model: {name: numpy array}, from the shards of each manifest group."""
    folder = os.path.dirname(model_json)
    spec = json.load(open(model_json))
    out = {}
    sizes = {"float32": 4, "int32": 4}
    for group in spec["weightsManifest"]:
        data = b"".join(open(os.path.join(folder, p), "rb").read() for p in group["paths"])
        pos = 0
        for w in group["weights"]:
            assert "quantization" not in w and w["dtype"] in sizes, w["name"]
            count = int(np.prod(w["shape"], dtype=np.int64))
            dt = np.float32 if w["dtype"] == "float32" else np.int32
            out[w["name"]] = np.frombuffer(data, dtype=dt, count=count, offset=pos).reshape(w["shape"]).copy()
            pos += count * sizes[w["dtype"]]
        assert pos == len(data), "shard sizes differ from the manifest"
    return out


class UseLite:
    """x = e + (e + timing); per layer: h = [x Wres + bres | x] + Attn(LN(x)); h = h + FFN(LN(h)); mean over
    tokens; tanh(. W + b); L2 normalisation (the graph's epsilon)."""

    APPLY = "module_apply_default/Encoder_en/KonaTransformer/"
    MODULE = "module/Encoder_en/KonaTransformer/"

    def __init__(self, folder):
        model_json = os.path.join(folder, "package", "dist", "model.json")
        if not os.path.isfile(model_json):
            model_json = os.path.join(folder, "model.json")
        g = load_tfjs(model_json)
        t = lambda name: torch.from_numpy(g[name])
        lin = lambda kernel, bias: (t(kernel).reshape(-1, g[kernel].shape[-1]).t().contiguous(), t(bias))
        A, M = self.APPLY, self.MODULE
        stack = A + "Encode/TransformerStack/"
        self.emb = t("module/Embeddings_en")
        self.inv_timescales = t(stack + "Layer_0/AddTimingSignal/TimingSignal/ExpandDims_1").reshape(-1)
        self.eps = float(g[stack + "Layer_1/TransformerLayer/FFN/layer_prepostprocess/layer_norm/Cast/x"])
        self.l2_eps = float(g["module_apply_default/Encoder_en/hidden_layers/l2_normalize/Maximum/y"])
        self.layers = []
        l = 0
        while M + f"Encode/Layer_{l}/TransformerLayer/MultiheadAttention/qkv_transform_single/kernel/part_0" in g:
            L = f"Layer_{l}/TransformerLayer/"
            enc, mha = A + "Encode/" + L, stack + L + "MultiheadAttention/"
            width = g[M + "Encode/" + L + "MultiheadAttention/qkv_transform_single/kernel/part_0"].shape[2]
            layer = {
                "width": width,
                "depth": int(g[mha + "split_heads/split_last_dimension/Reshape/shape/3"]),
                "q_scale": float(g[mha + "mul/y"]),
                "ln_attn": (t(enc + "layer_prepostprocess/layer_norm/layer_norm_scale/ConcatPartitions/concat"),
                            t(enc + "layer_prepostprocess/layer_norm/layer_norm_bias/ConcatPartitions/concat")),
                "qkv": lin(M + "Encode/" + L + "MultiheadAttention/qkv_transform_single/kernel/part_0",
                           enc + "MultiheadAttention/qkv_transform_single/bias/ConcatPartitions/concat"),
                "out": lin(M + "Encode/" + L + "MultiheadAttention/output_transform_single/kernel/part_0",
                           enc + "MultiheadAttention/output_transform_single/bias/ConcatPartitions/concat"),
                "residual": lin(enc + "dense/kernel/ConcatPartitions/concat", enc + "dense/bias/ConcatPartitions/concat")
                if enc + "dense/kernel/ConcatPartitions/concat" in g else None,
                "ln_ffn": (t(enc + "FFN/layer_prepostprocess/layer_norm/layer_norm_scale/ConcatPartitions/concat"),
                           t(enc + "FFN/layer_prepostprocess/layer_norm/layer_norm_bias/ConcatPartitions/concat")),
                "ffn1": lin(stack + L + "FFN/conv1/Tensordot/Reshape_1", enc + "FFN/conv1/bias/ConcatPartitions/concat"),
                "ffn2": lin(stack + L + "FFN/conv2/Tensordot/Reshape_1", enc + "FFN/conv2/bias/ConcatPartitions/concat"),
            }
            layer["d_model"] = layer["out"][0].shape[0]
            self.layers.append(layer)
            l += 1
        self.tanh = lin("module/Encoder_en/hidden_layers/tanh_layer_0/weights",
                        "module/Encoder_en/hidden_layers/tanh_layer_0/bias")

    def forward(self, ids):
        b, n = ids.shape  # sentences of equal length (no padding)
        e = self.emb[ids]
        angle = torch.arange(n, dtype=torch.float32)[:, None] * self.inv_timescales[None, :]
        x = e + (e + torch.cat([torch.sin(angle), torch.cos(angle)], dim=1))
        for L in self.layers:
            D, dh = L["width"], L["depth"]
            heads = D // dh
            split = lambda t: t.reshape(b, n, heads, dh).transpose(1, 2)
            h = F.layer_norm(x, (D,), L["ln_attn"][0], L["ln_attn"][1], self.eps)
            q, k, v = F.linear(h, *L["qkv"]).split(D, dim=-1)
            s = torch.matmul(split(q * L["q_scale"]), split(k).transpose(-1, -2))
            ctx = torch.matmul(torch.softmax(s, dim=-1), split(v)).transpose(1, 2).reshape(b, n, D)
            y = F.linear(ctx, *L["out"])
            y = y + (F.linear(x, *L["residual"]) if L["residual"] is not None else x)
            h = F.layer_norm(y, (L["d_model"],), L["ln_ffn"][0], L["ln_ffn"][1], self.eps)
            x = y + F.linear(torch.relu(F.linear(h, *L["ffn1"])), *L["ffn2"])
        z = torch.tanh(F.linear(x.mean(dim=1), *self.tanh))
        return z / torch.sqrt(torch.clamp((z * z).sum(dim=-1, keepdim=True), min=self.l2_eps))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--arch", choices=["bert", "use-lite"], default="bert")
    ap.add_argument("--ids", help="token ids (JSON list of lists); default FOLDER/ids.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = Bert(a.folder) if a.arch == "bert" else UseLite(a.folder)
    ids = torch.tensor(json.load(open(a.ids or a.folder + "/ids.json")), dtype=torch.long)
    out = {"version": torch.__version__, "arch": a.arch, "threads": a.threads, "results": {}}
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

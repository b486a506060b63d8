#!/usr/bin/env python3
"""PyTorch CPU reference for xdrec's `sasrec` model (src/models/sasrec.cpp): the same architecture, objective,
optimiser and batch, written the way a PyTorch user would, so that a benchmark can compare training throughput
(target positions, "tokens", per second) of xdrec against PyTorch on the same machine and thread count.

What it trains (defaults of xdrec's sasrec on Amazon Food-Kitchen, LLMCDSR split):
  * sequences: every line of train_A/train_B/train_overlap, plus valid/test lines without their last item; each
    truncated to its last L+1 = 51 items; inputs s[0..n-2], targets s[1..n-1]; sequences shorter than 2 skipped.
  * input x_t = sqrt(d) * (E[i_t] + P[r_t] + D[dom(i_t)]), r_t = (n-2) - t (the most recent input has position 0),
    then dropout 0.3; d = 64.
  * 2 pre-norm transformer blocks: h = x + drop(Attn(LN1(x))); y = h + drop(W2(drop(GELU(W1 LN2(h))))), 1 head,
    fused qkv Linear(d, 3d) + output Linear(d, d), causal softmax attention with dropout on the probabilities,
    ff width d, exact (erf) GELU, LayerNorm eps 1e-6; a final LayerNorm.
  * loss: sampled softmax per target domain, 1000 negatives per domain per minibatch drawn uniformly with
    replacement from that domain's items that occur in training, shared by all positions of the batch whose
    target is in that domain; output embeddings tied with E; a candidate equal to the target is masked out;
    cross-entropy with the positive as class 0, summed over positions / positions of the batch.
  * AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0) with dense updates of every parameter (the item
    table too), linear warm-up over 100 steps, gradient clipping to global norm 5; 256 users per step, users
    shuffled each epoch.
  * initialisation as in xdrec: E, P, D ~ N(0, 1/sqrt(d)) (std); Linear weights U(-sqrt(3/fan_in), +sqrt(3/fan_in)),
    zero biases; LayerNorm gamma 1, beta 0; rows of E for items that never occur in training start at zero (as
    xdrec does; they are never sampled and only the held-out targets can be such items).

Padding: a batch is left-padded to its longest sequence and attention uses a causal mask plus a key-padding mask.
The padding positions ARE computed (embeddings, layer norms, linear layers, attention rows) and then masked: this
is real work PyTorch does and xdrec does not (xdrec packs the sequences without padding). Padding positions are
never part of the loss and receive no gradient.

usage:
  sasrec_torch.py DATA_DIR --threads 2 --steps N --out OUT.json
      5 untimed warm-up steps, then N timed steps. JSON: {"torch_version", "threads", "steps", "batch",
      "negatives", "dim", "seconds", "tokens" (target positions in the timed steps), "tokens_per_second",
      "seconds_per_epoch_estimate" (seconds per step * steps per epoch), ...}.
  sasrec_torch.py DATA_DIR --threads 2 --epochs E [--eval] --out OUT.json
      trains E full epochs (timed as a whole); with --eval, ranks each test user's last item against 999
      negatives drawn uniformly without replacement from the same domain's items (not the target, not the user's
      history) by <h_last, E[j]>, ties pessimistic (the target ranks below every equal score), and reports HR@10
      and NDCG@10 for food, kitchen and overall.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DIM, MAX_LEN, BLOCKS, HEADS, DROPOUT = 64, 50, 2, 1, 0.3
BATCH, NEGATIVES, LR, WARMUP, CLIP = 256, 1000, 1e-3, 100, 5.0
LN_EPS = 1e-6
WARMUP_STEPS_UNTIMED = 5
EVAL_NEGATIVES, TOP_K = 999, 10


# ---------------------------------------------------------------------------------------------------------- data

def read_lines(path):
    seqs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            _, items = line.split("\t")
            seqs.append(np.array([int(x) for x in items.split(",")], dtype=np.int64))
    return seqs


def load_data(data_dir):
    with open(os.path.join(data_dir, "num.txt")) as f:
        n_food, n_kitchen = [int(x) for x in f.read().split()]
    train = []
    for name in ("train_A.txt", "train_B.txt", "train_overlap.txt"):
        train += read_lines(os.path.join(data_dir, name))
    valid = read_lines(os.path.join(data_dir, "valid.txt"))
    test = read_lines(os.path.join(data_dir, "test.txt"))
    # Held-out users train on their history (their last item is the target).
    train += [s[:-1] for s in valid] + [s[:-1] for s in test]
    # Truncate to the last L+1 items; skip sequences with fewer than 2 items.
    train = [s[-(MAX_LEN + 1):] for s in train if len(s) >= 2]
    return n_food, n_kitchen, train, test


# --------------------------------------------------------------------------------------------------------- model

def init_linear(lin):
    bound = math.sqrt(3.0 / lin.in_features)
    nn.init.uniform_(lin.weight, -bound, bound)
    nn.init.zeros_(lin.bias)
    return lin


class CausalSelfAttention(nn.Module):
    def __init__(self, d, heads, p):
        super().__init__()
        self.heads, self.dh = heads, d // heads
        self.qkv = init_linear(nn.Linear(d, 3 * d))
        self.out = init_linear(nn.Linear(d, d))
        self.drop = nn.Dropout(p)

    def forward(self, x, mask):
        # x: (B, T, d); mask: (B, 1, T, T) bool, True = not allowed.
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q = q.view(b, t, self.heads, self.dh).transpose(1, 2)
        k = k.view(b, t, self.heads, self.dh).transpose(1, 2)
        v = v.view(b, t, self.heads, self.dh).transpose(1, 2)
        s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.dh))
        s = s.masked_fill(mask, float("-inf"))
        a = self.drop(torch.softmax(s, dim=-1))
        y = (a @ v).transpose(1, 2).reshape(b, t, d)
        return self.out(y)


class Block(nn.Module):
    def __init__(self, d, ff, heads, p):
        super().__init__()
        self.ln1 = nn.LayerNorm(d, eps=LN_EPS)
        self.attn = CausalSelfAttention(d, heads, p)
        self.ln2 = nn.LayerNorm(d, eps=LN_EPS)
        self.ff1 = init_linear(nn.Linear(d, ff))
        self.ff2 = init_linear(nn.Linear(ff, d))
        self.drop = nn.Dropout(p)

    def forward(self, x, mask):
        h = x + self.drop(self.attn(self.ln1(x), mask))
        return h + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.ln2(h))))))


class SASRec(nn.Module):
    def __init__(self, n_items, n_food, seen):
        super().__init__()
        d = DIM
        sd = 1.0 / math.sqrt(d)
        self.n_food = n_food
        self.item = nn.Embedding(n_items, d)  # dense gradients (sparse=False): the whole table is updated
        self.pos = nn.Embedding(MAX_LEN, d)
        self.dom = nn.Embedding(2, d)
        for e in (self.item, self.pos, self.dom):
            nn.init.normal_(e.weight, 0.0, sd)
        with torch.no_grad():
            self.item.weight[~seen] = 0.0  # as xdrec: items never in training start at zero
        self.emb_drop = nn.Dropout(DROPOUT)
        self.blocks = nn.ModuleList(Block(d, d, HEADS, DROPOUT) for _ in range(BLOCKS))
        self.ln_f = nn.LayerNorm(d, eps=LN_EPS)

    def domain(self, ids):
        return (ids >= self.n_food).long()

    def forward(self, ids, pad):
        """ids: (B, T) left-padded item ids, pad: (B, T) bool (True = padding). Returns h: (B, T, d)."""
        b, t = ids.shape
        # Left padding: column c has reverse position T-1-c for every sequence (the last column is position 0).
        rev = torch.arange(t - 1, -1, -1)
        x = math.sqrt(DIM) * (self.item(ids) + self.pos(rev)[None] + self.dom(self.domain(ids)))
        x = self.emb_drop(x)
        # Causal mask plus key padding mask; a padding query may see itself so that its softmax row is finite
        # (padding rows are computed and discarded; real queries never see padding keys).
        causal = torch.ones(t, t, dtype=torch.bool).triu(1)
        mask = causal[None] | pad[:, None, :]
        mask = mask & ~torch.eye(t, dtype=torch.bool)[None]
        mask = mask[:, None]  # (B, 1, T, T): broadcast over heads
        for blk in self.blocks:
            x = blk(x, mask)
        return self.ln_f(x)


# ---------------------------------------------------------------------------------------------------- training

def make_batch(seqs, users, with_targets=True):
    """Left-padded inputs (and targets) of the given users. Padding id 0, target -1 at padding."""
    if with_targets:
        ins = [seqs[u][:-1] for u in users]
        tgs = [seqs[u][1:] for u in users]
    else:
        ins = [seqs[u] for u in users]
    t = max(len(s) for s in ins)
    ids = np.zeros((len(users), t), dtype=np.int64)
    tgt = np.full((len(users), t), -1, dtype=np.int64)
    for r, s in enumerate(ins):
        ids[r, t - len(s):] = s
        if with_targets:
            tgt[r, t - len(s):] = tgs[r]
    ids = torch.from_numpy(ids)
    tgt = torch.from_numpy(tgt)
    pad = torch.ones(ids.shape, dtype=torch.bool)
    for r, s in enumerate(ins):
        pad[r, t - len(s):] = False
    return ids, tgt, pad


def sampled_softmax_loss(model, h, tgt, pad, pools):
    """Sum over the batch's target positions of the per-domain sampled-softmax cross-entropy, and their count."""
    keep = ~pad.view(-1)
    hq = h.reshape(-1, DIM)[keep]
    tq = tgt.view(-1)[keep]
    dq = model.domain(tq)
    E = model.item.weight
    total = h.new_zeros(())
    for dd, pool in enumerate(pools):
        sel = dq == dd
        if not bool(sel.any()):
            continue
        # Shared candidates of this domain for the whole batch (uniform, with replacement).
        cand = pool[torch.randint(len(pool), (NEGATIVES,))]
        hs, ts = hq[sel], tq[sel]
        pos_logit = (hs * E[ts]).sum(-1, keepdim=True)
        cand_logit = hs @ E[cand].t()
        cand_logit = cand_logit.masked_fill(cand[None, :] == ts[:, None], float("-inf"))
        logits = torch.cat([pos_logit, cand_logit], dim=1)
        total = total + F.cross_entropy(logits, torch.zeros(len(ts), dtype=torch.long), reduction="sum")
    return total, int(keep.sum())


class Trainer:
    def __init__(self, model, seqs, pools, rng, total_steps):
        self.model, self.seqs, self.pools, self.rng = model, seqs, pools, rng
        self.opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / WARMUP))
        self.steps_per_epoch = (len(seqs) + BATCH - 1) // BATCH
        self.order, self.cursor, self.epoch = None, 0, 0
        self.total_steps = total_steps

    def next_users(self):
        if self.order is None or self.cursor >= len(self.order):
            self.order = self.rng.permutation(len(self.seqs))  # users shuffled each epoch
            self.cursor = 0
            self.epoch += 1
        u = self.order[self.cursor:self.cursor + BATCH]
        self.cursor += BATCH
        return u

    def step(self):
        """One optimiser step; returns (summed loss, target positions)."""
        self.model.train()
        ids, tgt, pad = make_batch(self.seqs, self.next_users())
        h = self.model(ids, pad)
        loss_sum, n = sampled_softmax_loss(self.model, h, tgt, pad, self.pools)
        self.opt.zero_grad(set_to_none=True)
        (loss_sum / n).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.opt.step()
        self.sched.step()
        return float(loss_sum), n


# ------------------------------------------------------------------------------------------------------ evaluation

@torch.no_grad()
def evaluate(model, test, n_food, n_items, rng):
    model.eval()
    ranges = [(0, n_food), (n_food, n_items)]
    hr = {0: [], 1: []}
    ndcg = {0: [], 1: []}
    hists = [s[:-1][-MAX_LEN:] for s in test]
    E = model.item.weight
    for b0 in range(0, len(test), BATCH):
        users = list(range(b0, min(len(test), b0 + BATCH)))
        ids, _, pad = make_batch(hists, users, with_targets=False)
        h_last = model(ids, pad)[:, -1]  # left padding: the most recent item is the last column
        for r, u in enumerate(users):
            target = int(test[u][-1])
            dd = int(target >= n_food)
            lo, hi = ranges[dd]
            excluded = set(int(i) for i in test[u][:-1]) | {target}
            negs = set()
            while len(negs) < EVAL_NEGATIVES:  # uniform without replacement, rejection sampling
                i = int(rng.integers(lo, hi))
                if i not in excluded:
                    negs.add(i)
            negs = torch.tensor(sorted(negs), dtype=torch.long)
            st = float(h_last[r] @ E[target])
            sn = E[negs] @ h_last[r]
            rank = 1 + int((sn >= st).sum())  # pessimistic ties
            hr[dd].append(1.0 if rank <= TOP_K else 0.0)
            ndcg[dd].append(1.0 / math.log2(rank + 1) if rank <= TOP_K else 0.0)
    out = {}
    for name, keys in (("food", [0]), ("kitchen", [1]), ("overall", [0, 1])):
        h = sum((hr[k] for k in keys), [])
        n = sum((ndcg[k] for k in keys), [])
        out[name] = {"users": len(h), "HR@10": float(np.mean(h)) if h else None,
                     "NDCG@10": float(np.mean(n)) if n else None}
    return out


# ------------------------------------------------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50, help="timed training steps (after 5 untimed warm-up steps)")
    ap.add_argument("--epochs", type=int, default=0, help="train this many full epochs instead of --steps")
    ap.add_argument("--eval", action="store_true", help="with --epochs: evaluate on test.txt after training")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    n_food, n_kitchen, seqs, test = load_data(args.data_dir)
    n_items = n_food + n_kitchen
    seen = torch.zeros(n_items, dtype=torch.bool)
    for s in seqs:
        seen[torch.from_numpy(s)] = True
    ids = torch.arange(n_items)
    pools = [ids[seen & (ids < n_food)], ids[seen & (ids >= n_food)]]  # negatives: items that occur in training

    model = SASRec(n_items, n_food, seen)
    steps_per_epoch = (len(seqs) + BATCH - 1) // BATCH
    tokens_per_epoch = sum(len(s) - 1 for s in seqs)
    result = {"torch_version": torch.__version__, "threads": args.threads, "batch": BATCH, "negatives": NEGATIVES,
              "dim": DIM, "max_len": MAX_LEN, "blocks": BLOCKS, "heads": HEADS, "users": len(seqs),
              "steps_per_epoch": steps_per_epoch, "tokens_per_epoch": tokens_per_epoch, "seed": args.seed}

    if args.epochs > 0:
        tr = Trainer(model, seqs, pools, rng, steps_per_epoch * args.epochs)
        tokens, start = 0, time.perf_counter()
        for ep in range(args.epochs):
            loss, n_ep, t0 = 0.0, 0, time.perf_counter()
            for _ in range(steps_per_epoch):
                l, n = tr.step()
                loss += l
                n_ep += n
            tokens += n_ep
            print(f"epoch {ep + 1}: loss {loss / n_ep:.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)
        sec = time.perf_counter() - start
        result.update({"epochs": args.epochs, "steps": steps_per_epoch * args.epochs, "seconds": sec,
                       "tokens": tokens, "tokens_per_second": tokens / sec,
                       "seconds_per_epoch": sec / args.epochs})
        if args.eval:
            result["test"] = evaluate(model, test, n_food, n_items, np.random.default_rng(args.seed + 1))
    else:
        tr = Trainer(model, seqs, pools, rng, WARMUP_STEPS_UNTIMED + args.steps)
        for _ in range(WARMUP_STEPS_UNTIMED):
            tr.step()
        tokens, loss, start = 0, 0.0, time.perf_counter()
        for _ in range(args.steps):
            l, n = tr.step()
            tokens += n
            loss += l
        sec = time.perf_counter() - start
        result.update({"steps": args.steps, "seconds": sec, "tokens": tokens, "tokens_per_second": tokens / sec,
                       "seconds_per_epoch_estimate": sec / args.steps * steps_per_epoch,
                       # Batches differ in length; the token-based figure is less sensitive to which batches ran.
                       "seconds_per_epoch_estimate_by_tokens": tokens_per_epoch / (tokens / sec),
                       "mean_loss": loss / tokens})

    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

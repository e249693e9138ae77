"""A small character-level GPT following nanoGPT's documented CPU recipe: the baseline that quality.py compares with.

nanoGPT's README (shakespeare_char on a CPU): 4 layers, 4 heads, 128-dim embeddings, context 64, batch 12,
AdamW at lr 1e-3 (beta2 0.99, weight decay 0.1), 100 warm-up steps, cosine decay to 1e-4, clip 1, no dropout,
no biases. Here the cosine runs over a wall-clock budget (its progress is the elapsed fraction), as RNN Studio's does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64  # context
    batch_size: int = 12
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.1
    beta2: float = 0.99  # nanoGPT's shakespeare_char: small batches, so a shorter memory
    clip: float = 1.0


class Block(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(c.n_embd, bias=False)
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd, bias=False)
        self.proj = nn.Linear(c.n_embd, c.n_embd, bias=False)
        self.ln2 = nn.LayerNorm(c.n_embd, bias=False)
        self.fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=False)
        self.fc_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=False)
        self.n_head = c.n_head

    def forward(self, x):  # (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, h, T, d)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.config = c
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, bias=False)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # weight tying, as nanoGPT
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", "fc_proj.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx):  # (B, T) -> logits (B, T, V)
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def _optimizer(model: GPT, c: GPTConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=c.lr, betas=(0.9, c.beta2))


def lr_at(c: GPTConfig, step: int, progress: float) -> float:
    """nanoGPT's get_lr: linear warm-up, then cosine from lr to min_lr (progress: 0 to 1)."""
    if step < c.warmup:
        return c.lr * (step + 1) / (c.warmup + 1)
    p = min(max(progress, 0.0), 1.0)
    return c.min_lr + 0.5 * (1 + math.cos(math.pi * p)) * (c.lr - c.min_lr)


def train(train_ids: torch.Tensor, vocab_size: int, seconds: float, *, seed: int = 0) -> tuple[GPT, int]:
    """Train for ``seconds`` of wall time on random windows of ``train_ids``; returns the model and its steps."""
    torch.manual_seed(seed)
    c = GPTConfig(vocab_size=vocab_size)
    model = GPT(c)
    opt = _optimizer(model, c)
    gen = torch.Generator().manual_seed(seed)
    start, step = time.monotonic(), 0
    model.train()
    while (elapsed := time.monotonic() - start) < seconds:
        for group in opt.param_groups:
            group["lr"] = lr_at(c, step, elapsed / seconds)
        ix = torch.randint(len(train_ids) - c.block_size - 1, (c.batch_size,), generator=gen)
        x = torch.stack([train_ids[i:i + c.block_size] for i in ix.tolist()])
        y = torch.stack([train_ids[i + 1:i + 1 + c.block_size] for i in ix.tolist()])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.clip)
        opt.step()
        step += 1
    return model, step


@torch.no_grad()
def nats_per_char(model: GPT, ids: torch.Tensor, *, batch: int = 256) -> float:
    """Mean NLL over every character of ``ids`` after the first, in windows of the context length (each
    character sees the window's earlier characters)."""
    model.eval()
    T = model.config.block_size
    total, count = 0.0, 0
    windows = [(s, min(T, len(ids) - 1 - s)) for s in range(0, len(ids) - 1, T)]  # only the last may be short
    full = [s for s, n in windows if n == T]
    groups = [full[i:i + batch] for i in range(0, len(full), batch)] + [[s] for s, n in windows if n < T]
    for group in groups:
        n = min(T, len(ids) - 1 - group[0])
        x = torch.stack([ids[s:s + n] for s in group])
        y = torch.stack([ids[s + 1:s + 1 + n] for s in group])
        total += F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return total / count


@torch.no_grad()
def sample(model: GPT, prefix: torch.Tensor, length: int, *, temperature: float = 0.8, seed: int = 0) -> list[int]:
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    ids = prefix.tolist()
    for _ in range(length):
        ctx = torch.tensor([ids[-model.config.block_size:]])
        probs = torch.softmax(model(ctx)[0, -1] / temperature, dim=-1)
        ids.append(int(torch.multinomial(probs, 1, generator=gen)))
    return ids

"""Generation, d2l predict_ch8 style: warm the state up on the prefix once, then predict token by token."""

from __future__ import annotations

import os
import re
import warnings
from typing import Iterator

import torch

from .data import Vocab
from .errors import RNNStudioError
from .model import onednn_off


# The generation settings live in config.py with the training settings; re-exported here.
from .config import SamplingConfig  # noqa: E402,F401


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    """``\\n``, ``\\t``, ``\\r`` and ``\\\\`` as typed on a command line become the characters; the rest stays."""
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], text)


def prefix_to_ids(vocab: Vocab, prefix: str, *, strict: bool = False) -> list[int]:
    """Encode the prefix; unknown tokens map to <unk> with a warning (or an error when ``strict``)."""
    unknown = vocab.unknown_tokens(prefix)
    if unknown:
        shown = ", ".join(repr(t) for t in unknown[:10])
        if strict:
            raise RNNStudioError(f"the prefix has tokens the model never saw: {shown}; remove them")
        warnings.warn(f"the prefix has tokens the model never saw ({shown}); they are read as <unk>", stacklevel=3)
    ids = vocab.encode(prefix)
    if not ids:
        raise RNNStudioError("the prefix is empty; give at least one token to start from")
    return ids


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Mask all but the top-k tokens and/or the top-p nucleus with -inf. logits: (N, V)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens before it already reach top_p (the first always stays)
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


_MAX_CHUNK = 32  # tokens computed per entry into inference mode (a few ms at most)
TINY_TEMPERATURE = 1e-30  # below this, logits / T can overflow float32: shift by the max and divide in float64
MEMORY_SHARE = 0.5  # a generation may plan to use at most this share of the memory that is free


def available_memory() -> int | None:
    """Bytes of memory free for new allocations (Linux's MemAvailable, else all physical memory), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def estimate_bytes(model, prefix_tokens: int, cfg: SamplingConfig) -> int:
    """A lower bound on what ``stream`` and its caller hold at once for ``cfg.num_samples`` samples."""
    mc = model.config
    n, V, H, L = cfg.num_samples, mc.vocab_size, mc.hidden_size, mc.num_layers
    warm_up = prefix_tokens * (4 * V + 8 * H * L)  # the prefix's logits (L*N, V) and the cell's activations
    per_step = 4 * (4 * V + 8 * H * L) + 120  # scaled logits, probabilities, states; a token string per sample
    text = 2 * max(cfg.length, 0) + 60  # the growing text of each sample (the CLI keeps them)
    return n * (warm_up + per_step + text)


def check_fits(model, prefix_tokens: int, cfg: SamplingConfig) -> None:
    """Refuse, before allocating anything, a generation that cannot fit in memory."""
    need = estimate_bytes(model, prefix_tokens, cfg)
    free = available_memory()
    if free is not None and need > MEMORY_SHARE * free:
        raise RNNStudioError(
            f"{cfg.num_samples:,} samples of {cfg.length:,} tokens need about {need / 2**30:,.1f} GB (samples x "
            f"(prefix + vocabulary {model.config.vocab_size:,} + text length)), more than half of the "
            f"{free / 2**30:,.1f} GB free; generate fewer samples at once, or shorter ones")


def stream(model, vocab: Vocab, prefix: str, cfg: SamplingConfig, *, strict_prefix: bool = False) -> Iterator[list[str]]:
    """Yield, for every step, the text of the next token of each of ``cfg.num_samples`` samples.

    The prefix runs through the model once; after that each step feeds one token and carries
    the state, so the prefix is never re-run. A finished sample (``stop_at``) yields "".
    Tokens are computed in chunks (1, 2, 4, ... up to 32) under one ``torch.inference_mode`` each:
    entering and leaving it around every token cost ~10% of a small model's step, and the mode
    must not stay on while the caller runs between yields.
    """
    cfg.validate()
    was_training = model.training
    model.eval()
    try:
        n = cfg.num_samples
        with torch.inference_mode():  # cheaper per op than no_grad; nothing made here is ever trained on
            device = next(model.parameters()).device
            ids = prefix_to_ids(vocab, prefix, strict=strict_prefix)
            check_fits(model, len(ids), cfg)
            x = torch.tensor(ids, device=device).unsqueeze(0).expand(n, -1)  # (N, L)
            state = model.begin_state(n, device)
            with onednn_off():
                logits, state = model.forward_flat(x, state)  # warm-up over the whole prefix: (L*N, V)
            last = logits[-n:]  # time-major: the final step's N rows
        gen = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None
        pieces = [vocab.separator + t for t in vocab.idx_to_token]  # token id -> the text it adds
        stop_at, greedy, temperature = cfg.stop_at, cfg.greedy, cfg.temperature
        filtering = cfg.top_k or cfg.top_p < 1.0
        tails = [""] * n  # the end of each sample's generated text, kept only to look for stop_at
        done = [False] * n
        step, on_gpu = model.step, device.type != "cpu"
        left, chunk, finished = cfg.length, 1, False
        while left > 0 and not finished:
            outs = []
            with torch.inference_mode():
                for _ in range(min(chunk, left)):
                    if greedy:
                        toks = last.argmax(dim=-1).tolist()
                    else:
                        scaled = last if last.dtype == torch.float32 else last.float()
                        if temperature < TINY_TEMPERATURE:  # (x - max) / T: 0 for the top token, -inf for the rest
                            scaled = (scaled - scaled.amax(dim=-1, keepdim=True)).double() / temperature
                        elif temperature != 1.0:  # x / 1 == x exactly, so skipping the op changes nothing
                            scaled = scaled / temperature
                        if filtering:
                            scaled = filter_logits(scaled, cfg.top_k, cfg.top_p)
                        probs = torch.softmax(scaled, dim=-1)
                        if on_gpu:  # the seeded generator lives on the CPU
                            probs = probs.cpu()
                        toks = [tok for (tok,) in torch.multinomial(probs, 1, generator=gen).tolist()]  # (N, 1) -> N ids
                    out = [pieces[tok] for tok in toks]
                    if stop_at:
                        for i, piece in enumerate(out):
                            if done[i]:
                                out[i] = ""
                                continue
                            tail = tails[i] + piece
                            done[i] = tail.endswith(stop_at)
                            tails[i] = tail[-len(stop_at):]  # all that endswith needs next time
                        finished = all(done)
                    outs.append(out)
                    left -= 1
                    if left == 0 or finished:
                        break
                    last, state = step(toks, state)  # one token per sample: logits (N, V)
            yield from outs
            chunk = min(2 * chunk, _MAX_CHUNK)
    finally:
        model.train(was_training)


def generate_text(model, vocab: Vocab, prefix: str, cfg: SamplingConfig, **kw) -> list[str]:
    """The prefix followed by the generated text, one string per sample."""
    texts = [prefix] * cfg.num_samples
    for pieces in stream(model, vocab, prefix, cfg, **kw):
        texts = [t + p for t, p in zip(texts, pieces)]
    return texts

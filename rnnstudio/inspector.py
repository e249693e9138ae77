"""The perplexity inspector: per-token probabilities, NLL and top-k predictions, and how they add up to perplexity."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .data import _pieces, encode_text, tokenize
from .errors import RNNStudioError

TOP_K = 5  # predictions shown per token
CHUNK = 512  # tokens per forward call; the state is carried from chunk to chunk
WORKED_TOKENS = 5  # tokens spelled out in the worked example


@dataclass
class TokenizedText:
    """A text as the model sees it: token strings (for display) and their ids (B=1 stream)."""

    tokens: list[str]
    ids: torch.Tensor  # (N,) int64
    preprocess: str
    tokenizer: str


def model_preprocess(loaded) -> str:
    return loaded.config.get("data", {}).get("preprocess", "raw")


def tokenize_for_model(loaded, text: str) -> TokenizedText:
    """Apply the model's own preprocessing, tokenizer and vocabulary (as ``cli.score_text`` does)."""
    preprocess = model_preprocess(loaded)
    vocab = loaded.vocab
    encoded = encode_text(text, tokenizer=vocab.tokenizer, preprocess=preprocess, vocab=vocab)
    ids = encoded.ids.long()
    shown = "".join(_pieces([text], vocab.tokenizer, preprocess))  # the very text encode_text tokenized
    tokens = tokenize(shown, vocab.tokenizer)
    if len(tokens) != len(ids):  # never expected; fall back to the vocabulary's spelling
        tokens = [vocab.idx_to_token[i] for i in ids.tolist()]
    return TokenizedText(tokens, ids, preprocess, vocab.tokenizer)


@torch.no_grad()
def token_log_probs(model, ids: torch.Tensor, *, device=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One left-to-right pass with the state carried (B=1), a chunk at a time.

    Yields ``(log_probs, targets)``: (T, V) float64 on the CPU, row t the distribution over the token
    that follows, and the (T,) ids that did follow. Only one chunk's matrix is in memory at once.
    """
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        state = model.begin_state(1, device)
        n = len(ids) - 1  # tokens that have a successor
        for start in range(0, n, CHUNK):
            end = min(start + CHUNK, n)
            x = ids[start:end].to(device)[None, :]  # (1, T)
            logits, state = model.forward_flat(x, state)  # (T, V) since B=1
            yield torch.log_softmax(logits.double(), dim=-1).cpu(), ids[start + 1: end + 1]
    finally:
        model.train(was)


def explain(loaded, text: str, *, host=None, top_k: int = TOP_K, device=None) -> dict:
    """Per-token breakdown of a text's perplexity under ``loaded`` (a ``checkpoint.LoadedModel``).

    ``rows[i]`` is the prediction of token ``position`` (>= 1) from the tokens before it: its
    ``probability``, ``nll`` = -ln p (nats), ``bits`` = -log2 p, ``rank`` (1 = the model's top pick) and
    the ``top`` k predictions. Token 0 has no prediction; it only starts the state. All sums are
    float64, so ``exp(mean(row nll))`` reproduces ``perplexity``. The metric plugins (accuracy and any
    third-party ones) see the same predictions.
    """
    from .plugins import default_host
    from .trainer import MetricSet

    tok = tokenize_for_model(loaded, text)
    if len(tok.ids) < 2:
        raise RNNStudioError("the text has fewer than 2 tokens; there is nothing to score")
    vocab = loaded.vocab
    host = host or default_host()
    warns: list[str] = []
    metrics = MetricSet({n: host.metric(n) for n in host.names("metric")}, warns.append)
    metrics.reset()
    rows: list[dict] = []
    nll_list: list[float] = []
    for log_probs, targets in token_log_probs(loaded.model, tok.ids, device=device):
        nll = -log_probs.gather(1, targets[:, None])[:, 0]  # (T,) float64
        metrics.update(log_probs.float(), targets, nll.float())
        k = max(1, min(top_k, log_probs.shape[1]))
        top_lp, top_ids = log_probs.topk(k, dim=-1)  # (T, k)
        ranks = ((log_probs > (-nll)[:, None]).sum(dim=1) + 1).tolist()
        for i, (t_id, value) in enumerate(zip(targets.tolist(), nll.tolist())):
            position = len(rows) + 1
            rows.append({
                "position": position,
                "token": tok.tokens[position],
                "id": t_id,
                "unknown": t_id == vocab.unk,
                "probability": math.exp(-value),
                "nll": value,
                "bits": value / math.log(2),
                "rank": ranks[i],
                "top": [{"token": vocab.idx_to_token[j], "probability": math.exp(lp)}
                        for j, lp in zip(top_ids[i].tolist(), top_lp[i].tolist())],
            })
            nll_list.append(value)
    values = metrics.values()
    nll_np = np.asarray(nll_list, dtype=np.float64)
    mean_nll = float(nll_np.mean())
    unit = "words" if tok.tokenizer == "word" else "characters"
    return {
        **values,
        "model": loaded.name,
        "tokens": len(tok.ids),
        "scored": len(rows),
        "unit": unit,
        "unknown": int((tok.ids == vocab.unk).sum()),
        "first_token": tok.tokens[0],
        "preprocess": tok.preprocess,
        "tokenizer": tok.tokenizer,
        "sum_nll": float(nll_np.sum()),
        "mean_nll": mean_nll,
        "cross-entropy": mean_nll,
        "perplexity": math.exp(mean_nll),
        "bits-per-token": mean_nll / math.log(2),
        "accuracy": float(np.mean([r["rank"] == 1 for r in rows])),
        "worked_example": worked_example(rows),
        "rows": rows,
        "warnings": warns,
    }


def worked_example(rows: list[dict], first: int = WORKED_TOKENS) -> dict:
    """How the numbers add up: -ln p per token, their mean, exp of the mean; then the same over all tokens."""
    head = rows[:first]
    nlls = [r["nll"] for r in head]
    sum_head = math.fsum(nlls)
    mean_head = sum_head / len(head)
    total = math.fsum(r["nll"] for r in rows)
    mean = total / len(rows)
    steps = [f"token {r['position']} {r['token']!r}: p = {r['probability']:.4f}, NLL = -ln p = {r['nll']:.4f}"
             for r in head]
    steps.append(f"mean NLL of these {len(head)} = ({' + '.join(f'{v:.4f}' for v in nlls)}) / {len(head)} "
                 f"= {mean_head:.4f} nats")
    steps.append(f"perplexity of these {len(head)} = exp({mean_head:.4f}) = {math.exp(mean_head):.4f}")
    steps.append(f"all {len(rows)} tokens: mean NLL = {total:.4f} / {len(rows)} = {mean:.6f} nats")
    steps.append(f"perplexity = exp(mean NLL) = exp({mean:.6f}) = {math.exp(mean):.6f}")
    steps.append(f"bits per token = mean NLL / ln 2 = {mean:.6f} / {math.log(2):.6f} = {mean / math.log(2):.6f}")
    return {
        "first": [{"position": r["position"], "token": r["token"], "probability": r["probability"], "nll": r["nll"]}
                  for r in head],
        "first_sum_nll": sum_head,
        "first_mean_nll": mean_head,
        "first_perplexity": math.exp(mean_head),
        "sum_nll": total,
        "count": len(rows),
        "mean_nll": mean,
        "perplexity": math.exp(mean),
        "bits_per_token": mean / math.log(2),
        "steps": steps,
    }


def format_explanation(result: dict, *, max_rows: int = 40) -> str:
    """The CLI's text form of ``explain``: a per-token table, then the worked example."""
    lines = [f"{'pos':>5}  {'token':<10} {'p':>8} {'nll':>8}  top predictions"]
    for r in result["rows"][:max_rows]:
        top = "  ".join(f"{t['token']!r} {t['probability']:.3f}" for t in r["top"])
        lines.append(f"{r['position']:>5}  {r['token']!r:<10} {r['probability']:>8.4f} {r['nll']:>8.4f}  {top}")
    hidden = len(result["rows"]) - max_rows
    if hidden > 0:
        lines.append(f"  ... {hidden} more rows (use --json for all of them)")
    lines.append("")
    lines.append("how the numbers add up:")
    lines.extend(f"  {s}" for s in result["worked_example"]["steps"])
    return "\n".join(lines)


def compare(loaded_a, loaded_b, text: str, *, host=None, top_k: int = TOP_K, device=None) -> dict:
    """Score ``text`` under two models and compare them token by token (lower NLL wins).

    Both models must tokenize the text the same way (tokenizer and preprocessing). When their
    vocabularies differ, tokens one of them does not know are scored as its ``<unk>``; the result's
    ``notes`` says so and such rows carry ``unknown_in``.
    """
    va, vb = loaded_a.vocab, loaded_b.vocab
    if va.tokenizer != vb.tokenizer:
        raise RNNStudioError(f"the models use different tokenizers ({loaded_a.name}: {va.tokenizer}, "
                             f"{loaded_b.name}: {vb.tokenizer}); per-token comparison needs the same tokens")
    pa, pb = model_preprocess(loaded_a), model_preprocess(loaded_b)
    if pa != pb:
        raise RNNStudioError(f"the models preprocess text differently ({loaded_a.name}: {pa}, {loaded_b.name}: {pb}); "
                             f"compare models trained with the same preprocessing")
    a = explain(loaded_a, text, host=host, top_k=top_k, device=device)
    b = explain(loaded_b, text, host=host, top_k=top_k, device=device)
    notes = []
    same_vocab = va.idx_to_token == vb.idx_to_token
    if not same_vocab:
        only_a = len(set(va.idx_to_token) - set(vb.idx_to_token))
        only_b = len(set(vb.idx_to_token) - set(va.idx_to_token))
        notes.append(f"the vocabularies differ ({len(va)} vs {len(vb)} tokens; {only_a} only in {loaded_a.name}, "
                     f"{only_b} only in {loaded_b.name}): tokens a model does not know are scored as its <unk>, "
                     f"so those rows are not a like-for-like comparison")
    rows = []
    wins = {"a": 0, "b": 0, "tie": 0}
    for ra, rb in zip(a["rows"], b["rows"]):
        diff = rb["nll"] - ra["nll"]  # > 0: model b was more surprised, so a wins
        winner = "tie" if abs(diff) < 1e-9 else ("a" if diff > 0 else "b")
        wins[winner] += 1
        row = {"position": ra["position"], "token": ra["token"], "nll_a": ra["nll"], "nll_b": rb["nll"],
               "probability_a": ra["probability"], "probability_b": rb["probability"], "diff": diff,
               "winner": winner, "top_a": ra["top"], "top_b": rb["top"]}
        unknown_in = [name for name, r in (("a", ra), ("b", rb)) if r["unknown"]]
        if unknown_in:
            row["unknown_in"] = unknown_in
        rows.append(row)
    biggest = sorted(rows, key=lambda r: -abs(r["diff"]))[:10]
    return {
        "model_a": loaded_a.name,
        "model_b": loaded_b.name,
        "same_vocab": same_vocab,
        "notes": notes,
        "scored": len(rows),
        "perplexity_a": a["perplexity"],
        "perplexity_b": b["perplexity"],
        "mean_nll_a": a["mean_nll"],
        "mean_nll_b": b["mean_nll"],
        "wins": wins,
        "biggest_differences": [{"position": r["position"], "token": r["token"], "diff": r["diff"],
                                 "winner": r["winner"]} for r in biggest],
        "rows": rows,
        "explain_a": a,
        "explain_b": b,
    }


def probability_colour(p: float) -> tuple[int, int, int]:
    """Red for tokens the model found unlikely, through amber, to green for likely ones (log scale)."""
    # log10 p in [-3, 0] -> t in [0, 1]: p = 0.001 is fully red, p = 1 fully green
    t = 0.0 if p <= 0 else min(max((math.log10(p) + 3.0) / 3.0, 0.0), 1.0)
    if t < 0.5:
        u = t / 0.5
        return 248, int(105 + (200 - 105) * u), int(107 + (80 - 107) * u)
    u = (t - 0.5) / 0.5
    return int(248 + (120 - 248) * u), int(200 + (214 - 200) * u), int(80 + (130 - 80) * u)

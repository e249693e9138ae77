"""The perplexity inspector: per-token probabilities, NLL and top-k predictions, and how they add up to perplexity."""

from __future__ import annotations

import math

from .errors import RNNStudioError
from .scoring import TOP_K, explain_text
from .scoring import TokenizedText, model_preprocess, tokenize_for_model  # noqa: F401  (re-exported for older imports)

WORKED_TOKENS = 5  # tokens spelled out in the worked example


def explain(loaded, text: str, *, host=None, top_k: int = TOP_K, device=None, exact: bool = False) -> dict:
    """Per-token breakdown of a text's perplexity under ``loaded`` (a ``checkpoint.LoadedModel``).

    ``rows[i]`` is the prediction of token ``position`` (>= 1) from the tokens before it: its
    ``probability``, ``nll`` = -ln p (nats), ``bits`` = -log2 p, ``rank`` (1 = the model's top pick) and
    the ``top`` k predictions. Token 0 has no prediction; it only starts the state. All sums are
    float64, so ``exp(mean(row nll))`` reproduces ``perplexity``. The metric plugins (accuracy and any
    third-party ones) see the same predictions. The rows are made on demand (``scoring.ExplainedRows``),
    and the text is scored as parallel streams with a burn-in (``exact`` keeps one stream).
    """
    result = explain_text(loaded, text, host=host, top_k=top_k, device=device, exact=exact)
    result["worked_example"] = worked_example(result["rows"], chars=result.get("chars"))
    return result


def worked_example(rows: list[dict], first: int = WORKED_TOKENS, *, chars: int | None = None) -> dict:
    """How the numbers add up: -ln p per token, their mean, exp of the mean; then the same over all tokens,
    and per character of the predicted text when ``chars`` (its length) is given."""
    head = rows[:first]
    nlls = [r["nll"] for r in head]
    sum_head = math.fsum(nlls)
    mean_head = sum_head / len(head)
    nll = getattr(rows, "scores", None)
    total = math.fsum(nll.nll) if nll is not None else math.fsum(r["nll"] for r in rows)
    mean = total / len(rows)
    steps = [f"token {r['position']} {r['token']!r}: p = {r['probability']:.4f}, NLL = -ln p = {r['nll']:.4f}"
             for r in head]
    steps.append(f"mean NLL of these {len(head)} = ({' + '.join(f'{v:.4f}' for v in nlls)}) / {len(head)} "
                 f"= {mean_head:.4f} nats")
    steps.append(f"perplexity of these {len(head)} = exp({mean_head:.4f}) = {math.exp(mean_head):.4f}")
    steps.append(f"all {len(rows)} tokens: mean NLL = {total:.4f} / {len(rows)} = {mean:.6f} nats")
    steps.append(f"perplexity = exp(mean NLL) = exp({mean:.6f}) = {math.exp(mean):.6f}")
    steps.append(f"bits per token = mean NLL / ln 2 = {mean:.6f} / {math.log(2):.6f} = {mean / math.log(2):.6f}")
    if chars:
        steps.append(f"nats per character = total NLL / characters predicted = {total:.4f} / {chars} "
                     f"= {total / chars:.6f} (bits per character {total / chars / math.log(2):.6f})")
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
        "nats_per_char": total / chars if chars else None,
        "steps": steps,
    }


EXPLAIN_HEADER = f"{'pos':>5}  {'token':<10} {'p':>8} {'nll':>8}  top predictions"


def format_row(r: dict) -> str:
    """One row of the CLI's per-token table."""
    top = "  ".join(f"{t['token']!r} {t['probability']:.3f}" for t in r["top"])
    return f"{r['position']:>5}  {r['token']!r:<10} {r['probability']:>8.4f} {r['nll']:>8.4f}  {top}"


def explanation_lines(result: dict, *, max_rows: int | None = 40):
    """The CLI's text form of ``explain``, a line at a time: the per-token table, then the worked example."""
    rows = result["rows"]
    shown = len(rows) if max_rows is None else min(max_rows, len(rows))
    yield EXPLAIN_HEADER
    for i in range(shown):
        yield format_row(rows[i])
    if len(rows) > shown:
        yield f"  ... {len(rows) - shown} more rows (use --json for all of them)"
    yield ""
    yield "how the numbers add up:"
    for step in result["worked_example"]["steps"]:
        yield f"  {step}"


def compare(loaded_a, loaded_b, text: str, *, host=None, top_k: int = TOP_K, device=None) -> dict:
    """Score ``text`` under two models and compare them token by token (lower NLL wins).

    Both models must tokenize the text the same way (tokenizer and preprocessing). When their
    vocabularies differ, tokens one of them does not know are scored as its ``<unk>``; the result's
    ``notes`` says so and such rows carry ``unknown_in``.
    """
    va, vb = loaded_a.vocab, loaded_b.vocab
    if va.tokenizer != vb.tokenizer:
        raise RNNStudioError(f"the models use different tokenizers ({loaded_a.name}: {va.tokenizer}, "
                             f"{loaded_b.name}: {vb.tokenizer}); per-token comparison needs the same tokens "
                             f"(compare their nats per character instead: rnnstudio score)")
    if va.text_tokenizer.state() != vb.text_tokenizer.state():
        raise RNNStudioError(f"the models' {va.tokenizer} tokenizers learnt different tokens; per-token comparison "
                             f"needs the same tokens (compare their nats per character instead: rnnstudio score)")
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

"""The words for the trainer's events: one line per event, shared by the CLI's output and the GUI's Log tab."""

from __future__ import annotations

import math


def number(x, spec: str = ".3f") -> str:
    """A metric for a person: ``-`` for a missing or non-finite value."""
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def visible_sample(text: str) -> str:
    """A sample on one line: newlines as ↵, and trailing blanks counted (they are invisible at a line's end)."""
    body = text.rstrip()
    tail = len(text) - len(body)
    shown = body.replace("\n", "↵")
    return shown + (f" (then {tail} blank characters)" if tail > 1 else text[len(body):].replace("\n", "↵"))


def event_line(event) -> str | None:
    """The text line for one event (None for progress, which each front end shows its own way)."""
    kind = event.kind
    if kind == "started":
        resumed = f", resuming at step {event.step}" if event.step else ""
        return (f"training {event.model} on {event.device}: {event.parameters:,} parameters, vocabulary "
                f"{event.vocab_size}, {event.train_tokens:,} train / {event.val_tokens:,} validation tokens, "
                f"{event.steps_per_epoch} steps per epoch{resumed}")
    if kind == "evaluated":
        values = ", ".join(f"{k} {number(v)}" for k, v in event.val.items())
        return f"validation at step {event.step}: {values}{' (best so far)' if event.best else ''}"
    if kind == "sample":
        return f"sample at step {event.step}: {visible_sample(event.text)}"
    if kind == "checkpoint":
        return f"checkpoint saved at step {event.step}: {event.path}"
    if kind == "warning":
        return f"warning at step {event.step}: {event.message}"
    if kind == "summary":
        state = "stopped" if event.stopped else "finished"
        saved = f"saved to {event.path}" if event.path else "nothing was saved"  # no path: stopped before a step
        return (f"{state} after {event.steps} steps: train perplexity {number(event.train_perplexity)}, "
                f"validation perplexity {number(event.val_perplexity)}, {event.tokens_per_s:,.0f} tokens/s; {saved}")
    return None

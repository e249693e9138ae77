"""Built-in metrics: perplexity, cross-entropy, bits per token and per character, and top-1 accuracy."""

from __future__ import annotations

import math

import torch

import rnnstudio
from rnnstudio import Metric


class _NLLSum(Metric):
    """Sums negative log-likelihood over every token seen since ``reset``."""

    def reset(self):
        self.total = 0.0
        self.count = 0

    def update(self, logits, targets, nll):
        self.total += float(nll.double().sum())
        self.count += int(nll.numel())

    def state(self):
        return {"total": self.total, "count": self.count}

    def merge(self, state):
        self.total += state["total"]
        self.count += state["count"]

    def mean_nll(self) -> float:
        return self.total / self.count if self.count else float("nan")


class Perplexity(_NLLSum):
    name = "perplexity"
    on_train = True  # a sum per batch: the progress line and the train curves show it
    description = "exp(mean cross-entropy) over all tokens: the model is as unsure as a fair die with this many sides."

    def value(self):
        if not self.count:
            return float("nan")
        try:
            return math.exp(self.mean_nll())
        except OverflowError:  # a diverged model: above ~709.8 nats the perplexity is beyond float range
            return float("inf")


class CrossEntropy(_NLLSum):
    name = "cross-entropy"
    on_train = True
    description = "Mean negative log-likelihood per token, in nats."

    def value(self):
        return self.mean_nll()


class BitsPerToken(_NLLSum):
    name = "bits-per-token"
    description = "Mean negative log2-likelihood per token: bits to encode each token."

    def value(self):
        return self.mean_nll() / math.log(2)


class NatsPerChar(_NLLSum):
    name = "nats-per-char"
    description = ("Negative log-likelihood per character of the predicted text, in nats: compares models "
                   "whose tokenizers differ.")

    def use_vocab(self, vocab):
        self.lengths = torch.tensor(vocab.char_lengths(), dtype=torch.float64)  # characters each token id stands for

    def reset(self):
        super().reset()
        self.chars = 0.0

    def update(self, logits, targets, nll):
        lengths = getattr(self, "lengths", None)
        if lengths is None:
            return  # no vocabulary given: nothing to count characters with
        if lengths.device != targets.device:
            self.lengths = lengths = lengths.to(targets.device)
        super().update(logits, targets, nll)
        self.chars += float(lengths[targets].sum())

    def state(self):
        return {**super().state(), "chars": self.chars}

    def merge(self, state):
        super().merge(state)
        self.chars += state["chars"]

    def value(self):
        return self.total / self.chars if self.chars else float("nan")


class BitsPerChar(NatsPerChar):
    name = "bits-per-char"
    description = "Negative log2-likelihood per character of the predicted text: bits to encode each character."

    def value(self):
        return super().value() / math.log(2)


class Accuracy(Metric):
    name = "accuracy"
    description = "Top-1 next-token accuracy: how often the most likely token is the right one."
    higher_is_better = True

    def reset(self):
        self.correct = 0
        self.count = 0

    def update(self, logits, targets, nll):
        self.correct += int((logits.argmax(dim=-1) == targets).sum())
        self.count += int(targets.numel())

    def state(self):
        return {"correct": self.correct, "count": self.count}

    def merge(self, state):
        self.correct += state["correct"]
        self.count += state["count"]

    def value(self):
        return self.correct / self.count if self.count else float("nan")


@rnnstudio.hookimpl
def register_metrics(register):
    register(Perplexity)
    register(CrossEntropy)
    register(BitsPerToken)
    register(NatsPerChar)
    register(BitsPerChar)
    register(Accuracy)

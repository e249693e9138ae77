"""Sampling: greedy is d2l's predict_ch8, several samples in one batch, temperature lists, stop strings."""

from __future__ import annotations

import json

import pytest
import torch

from rnnstudio import cli
from rnnstudio.settings import expand, from_args
from rnnstudio.data import Vocab
from rnnstudio.errors import RNNStudioError
from rnnstudio.model import ModelConfig, RNNLanguageModel
from rnnstudio.plugins import default_host
from rnnstudio.sampling import SamplingConfig, generate_text, unescape
from rnnstudio.trainer import TrainConfig, Trainer

VOCAB = Vocab(["<unk>", " ", "e", "t", "a", "h", "s", "n", "\n", "o"])


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is as fast, and does not stall when the shared test machine is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_model(cell: str, seed: int = 0) -> RNNLanguageModel:
    """An untrained model with large enough weights that its predictions vary from step to step."""
    torch.manual_seed(seed)
    cfg = ModelConfig(cell=cell, vocab_size=len(VOCAB), hidden_size=12, num_layers=2)
    model = RNNLanguageModel(cfg, default_host().cell(cell))
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.8, 0.8)
        model.head.weight.mul_(5)  # sharper predictions that follow the state
        model.head.bias[VOCAB.unk] = -1e4  # never sample "<unk>", so every sampled token is one character
    return model


def d2l_predict_ch8(prefix, num_preds, net, vocab, device="cpu"):
    """d2l 8.5's predict_ch8, literally: warm up one token at a time, then feed back the argmax."""
    state = net.begin_state(batch_size=1, device=device)
    outputs = [vocab[prefix[0]]]

    def get_input():
        return torch.tensor([outputs[-1]], device=device).reshape((1, 1))

    for y in prefix[1:]:  # warm-up period
        _, _, state = net(get_input(), state)
        outputs.append(vocab[y])
    for _ in range(num_preds):  # predict num_preds steps
        y, _, state = net(get_input(), state)
        outputs.append(int(y.reshape(-1, len(vocab)).argmax(dim=1).reshape(1)))
    return "".join([vocab.idx_to_token[i] for i in outputs])


@pytest.mark.parametrize("cell", ["rnn-scratch", "gru", "lstm-scratch", "lstm"])
def test_greedy_is_exactly_d2l_predict_ch8(cell):
    model = random_model(cell).eval()
    outputs = set()
    for prefix in ("the hat", "so eat", "a\nnest", "t"):
        with torch.no_grad():
            want = d2l_predict_ch8(prefix, 40, model, VOCAB)
        got = generate_text(model, VOCAB, prefix, SamplingConfig(length=40, greedy=True))
        assert got == [want]
        outputs.add(want[len(prefix):])
    assert len(outputs) > 1  # the prefix matters, so the warm-up is really being compared


def test_top_k_1_sampling_is_greedy():
    model = random_model("gru-scratch")
    greedy = generate_text(model, VOCAB, "eat", SamplingConfig(length=30, greedy=True))
    top1 = generate_text(model, VOCAB, "eat", SamplingConfig(length=30, top_k=1, temperature=1.7, seed=3))
    assert top1 == greedy


def test_several_samples_come_from_one_batch_and_a_seed_repeats_them():
    model = random_model("lstm")
    cfg = SamplingConfig(length=25, temperature=1.5, seed=11, num_samples=4)
    texts = generate_text(model, VOCAB, "sea", cfg)
    assert len(texts) == 4
    assert all(t.startswith("sea") and len(t) == 3 + 25 for t in texts)
    assert len(set(texts)) > 1  # independent samples, not copies
    assert generate_text(model, VOCAB, "sea", cfg) == texts


def test_stop_at_ends_each_sample_after_the_stop_text():
    model = random_model("rnn-scratch", seed=1)
    free = generate_text(model, VOCAB, "the", SamplingConfig(length=60, temperature=1.0, seed=5, num_samples=3))
    stop = free[0][3 + 5: 3 + 7]  # two characters that sample 0 generates
    stopped = generate_text(model, VOCAB, "the",
                            SamplingConfig(length=60, temperature=1.0, seed=5, num_samples=3, stop_at=stop))
    for full, cut in zip(free, stopped):
        at = full.find(stop, 3)
        expected = full if at == -1 else full[: at + len(stop)]
        assert cut == expected
    assert stopped[0] != free[0]


def test_temperatures_accept_spaces_and_commas():
    def temperatures(*argv):
        args = cli.build_parser().parse_args(["generate", "--model", "m", *argv])
        return [c.temperature for c in expand(from_args(SamplingConfig, args))]

    assert temperatures("--temperature", "0.5", "1.0") == [0.5, 1.0]
    assert temperatures("--temperature", "0.5,1.0", "2") == [0.5, 1.0, 2.0]
    assert temperatures() == [1.0]
    with pytest.raises(RNNStudioError):
        temperatures("--temperature", "hot")


def test_stop_text_escapes_from_the_command_line():
    assert unescape(r"\n\n") == "\n\n"
    assert unescape(r"end\té") == "end\té"
    assert unescape(r"a\\n") == "a\\n"


def test_invalid_sampling_settings_are_user_errors():
    with pytest.raises(RNNStudioError):
        SamplingConfig(num_samples=0).validate()
    with pytest.raises(RNNStudioError):
        SamplingConfig(temperature=0).validate()


def test_generate_command(tiny_corpus, capsys):
    """One saved model (training is the slow part), three ways to sample from it."""
    from rnnstudio.checkpoint import load_model

    cfg = TrainConfig(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, cell="gru-scratch",
                      hidden_size=16, batch_size=4, seq_len=8, max_steps=2, eval_every=0, optimizer="sgd",
                      name="tiny-gru")
    list(Trainer(cfg).run())
    capsys.readouterr()

    # greedy: exactly predict_ch8
    loaded = load_model("tiny-gru")
    with torch.no_grad():
        want = d2l_predict_ch8("the ", 15, loaded.model.eval(), loaded.vocab)
    assert cli.main(["generate", "--model", "tiny-gru", "--prefix", "the ", "--length", "15", "--greedy"]) == 0
    assert capsys.readouterr().out == want + "\n"

    # a list of temperatures, two samples each, as JSON
    rc = cli.main(["generate", "--model", "tiny-gru", "--prefix", "the ", "--length", "12", "--samples", "2",
                   "--temperature", "0.5,1.0", "2", "--seed", "0", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    got = [(s["temperature"], s["sample"]) for s in out["samples"]]
    assert got == [(0.5, 1), (0.5, 2), (1.0, 1), (1.0, 2), (2.0, 1), (2.0, 2)]
    for s in out["samples"]:
        assert s["text"].startswith("the ")
        assert len(s["text"][4:].replace("<unk>", "?")) == 12  # 12 tokens, one character each

    # the same as text, with a header per sample
    assert cli.main(["generate", "--model", "tiny-gru", "--length", "5", "--samples", "2",
                     "--temperature", "0.5", "1", "--seed", "0"]) == 0
    text = capsys.readouterr().out
    assert text.count("--- sample 1, temperature 0.5 ---") == 1 and text.count("--- sample 2, temperature 1 ---") == 1

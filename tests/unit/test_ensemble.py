"""Ensembles decode the mixture of their members: each step's distribution is the log of the members'
mean probability, and every search (beam, streamed greedy, sampling) scores its outputs as the
members' teacher-forced distributions, mixed by hand, say they should."""
import itertools

import pytest
import torch

from tests.unit.test_search import SOURCES, copy_model, pad
from transduce.constants import BOS, EOS, PAD, UNK
from transduce.decoding.beam import beam_search
from transduce.decoding.greedy import greedy_search
from transduce.decoding.sampling import sample_search
from transduce.decoding.search import decode_examples
from transduce.config import Config, DecodeConfig, ModelConfig
from transduce.inference import ModelLoadError, Translator
from transduce.models.builder import build_model
from transduce.models.ensemble import Ensemble, mean_of_probabilities
from transduce.training.trainer import Trainer

A, B_, V = 4, 5, 6


def members():
    """Two partly trained models of one vocabulary, of different kinds (they disagree)."""
    return [copy_model("lstm", "general"), copy_model("gru", "bahdanau")]


@torch.inference_mode()
def mixture_log_prob(models, source: list[int], output: list[int]) -> float:
    """log p(output + EOS | source) under the mean of the members' teacher-forced distributions."""
    src, mask, lengths = pad([source])
    tgt_in = torch.tensor([[BOS] + output])  # (1, T)
    gold = torch.tensor(output + [EOS])
    probs = torch.stack([m(src, mask, lengths, tgt_in)[0].double().exp() for m in models]).mean(0)  # (T, V)
    return float(probs.gather(1, gold.unsqueeze(1)).log().sum())


def test_mean_of_probabilities_by_hand():
    a = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    b = torch.log(torch.tensor([[0.1, 0.7, 0.2]]))
    expected = torch.log(torch.tensor([[0.3, 0.475, 0.225]]))
    assert torch.allclose(mean_of_probabilities([a, b]), expected, atol=1e-6)
    assert mean_of_probabilities([a]) is a
    inf = torch.tensor([[float("-inf"), 0.0]])  # a token both members rule out stays ruled out
    assert torch.isneginf(mean_of_probabilities([inf, inf])[0, 0])


def test_each_step_is_the_log_of_the_members_mean_probability():
    models = members()  # trained on first use: outside inference mode
    with torch.inference_mode():
        _steps_match_by_hand(models)


def _steps_match_by_hand(models):
    ensemble = Ensemble(models).eval()
    src, mask, lengths = pad(SOURCES)
    enc, encs = ensemble.encode(src, mask, lengths), [m.encode(src, mask, lengths) for m in models]
    state, states = ensemble.init_state(enc), [m.init_state(e) for m, e in zip(models, encs)]
    prev = torch.full((len(SOURCES),), BOS)
    for token in (A, B_, A):
        lp, state = ensemble.decode_step(prev, enc, state)
        steps = [m.decode_step(prev, e, s) for m, e, s in zip(models, encs, states)]
        states = [s for _, s in steps]
        by_hand = torch.stack([step.double().exp() for step, _ in steps]).mean(0).log()
        assert torch.allclose(lp.double(), by_hand, atol=1e-6)
        assert torch.allclose(lp.exp().sum(1), torch.ones(len(SOURCES)), atol=1e-5)
        members_attention = torch.stack([s.attention for s in states]).mean(0)
        assert torch.allclose(state.attention, members_attention)
        prev = torch.full_like(prev, token)
    assert not torch.allclose(steps[0][0], steps[1][0], atol=1e-2)  # the members do disagree


def test_beam_equals_exhaustive_enumeration_of_the_mixture():
    models = members()
    ensemble = Ensemble(models).eval()
    cap = 3
    outputs = [list(o) for n in range(cap + 1) for o in itertools.product([UNK, A, B_], repeat=n)]  # 40
    src, mask, lengths = pad(SOURCES)
    beams = beam_search(ensemble, src, mask, lengths, torch.full((len(SOURCES),), cap), beam=64, nbest=64)
    for source, hyps in zip(SOURCES, beams):
        exact = {tuple(o): mixture_log_prob(models, source, o) for o in outputs}
        found = {tuple(h.tokens): h for h in hyps}
        assert found.keys() == exact.keys()
        for output, log_prob in exact.items():
            assert found[output].log_prob == pytest.approx(log_prob, abs=1e-5)
        assert tuple(hyps[0].tokens) == max(exact, key=lambda o: exact[o] / (len(o) + 1))


def test_streamed_greedy_and_sampling_score_the_mixture():
    models = members()
    ensemble = Ensemble(models).eval()
    gen = torch.Generator().manual_seed(3)
    sources = [torch.randint(4, V, (n,), generator=gen).tolist() for n in (3, 1, 4, 2, 4, 1)]
    src, mask, lengths = pad(sources)
    caps = torch.tensor([5, 3, 6, 4, 6, 2])
    whole = greedy_search(ensemble, src, mask, lengths, caps)
    streamed = greedy_search(ensemble, src, mask, lengths, caps, max_rows=2)  # sentences join running rows
    assert [h.tokens for h in streamed] == [h.tokens for h in whole]
    for source, hyp in zip(sources, whole):
        assert hyp.log_prob == pytest.approx(mixture_log_prob(models, source, hyp.tokens), abs=1e-5)

    def sample(seed):
        return sample_search(ensemble, src, mask, lengths, caps, generator=torch.Generator().manual_seed(seed))

    first, again = sample(7), sample(7)
    assert [h.tokens for h in first] == [h.tokens for h in again]
    for source, hyp in zip(sources, first):
        assert hyp.log_prob == pytest.approx(mixture_log_prob(models, source, hyp.tokens), abs=1e-5)


def test_one_model_twice_decodes_as_the_model():
    model = copy_model("lstm", "general")
    src, mask, lengths = pad(SOURCES)
    caps = torch.full((len(SOURCES),), 4)
    alone = beam_search(model, src, mask, lengths, caps, beam=4, nbest=3)
    twice = beam_search(Ensemble([model, model]).eval(), src, mask, lengths, caps, beam=4, nbest=3)
    for a, b in zip(alone, twice):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)


@torch.inference_mode()
def test_copy_members_mix_over_the_extended_vocabulary():
    """A Transformer and an LSTM that copy: reference scores and decoding steps are the mixture of
    their extended distributions, and a source word outside the vocabulary keeps its mass."""
    torch.manual_seed(0)
    shared = dict(embed_dim=16, hidden=16, encoder_layers=1, decoder_layers=1, dropout=0.0, copy=True)
    models = [build_model(ModelConfig(arch="transformer", heads=2, ff_size=32, **shared), 9, 9).eval(),
              build_model(ModelConfig(arch="lstm", **shared), 9, 9).eval()]
    ensemble = Ensemble(models).eval()
    src = torch.tensor([[4, 5, 6, UNK], [7, 4, PAD, PAD]])
    mask, lengths = src.ne(PAD), torch.tensor([4, 2])
    src_ext = src.clone()
    src_ext[0, 3] = 9  # a word outside the vocabulary: extended id 9
    tgt_in = torch.tensor([[BOS, 4, UNK], [BOS, 7, PAD]])
    tgt_mask = torch.tensor([[True, True, True], [True, True, False]])
    mixed, aux = ensemble.training_scores(src, mask, lengths, tgt_in, tgt_mask, src_ext)  # (5, 10)
    parts = [m.training_scores(src, mask, lengths, tgt_in, tgt_mask, src_ext)[0].double().exp() for m in models]
    assert aux is None and mixed.shape == (5, 10)
    assert torch.allclose(mixed.double(), torch.stack(parts).mean(0).log(), atol=1e-6)
    assert bool((mixed[:3, 9] > -20).all())  # the first source's unknown word can be copied

    enc, encs = ensemble.encode(src, mask, lengths, src_ext), [m.encode(src, mask, lengths, src_ext) for m in models]
    state, states = ensemble.init_state(enc), [m.init_state(e) for m, e in zip(models, encs)]
    for t in range(3):
        lp, state = ensemble.decode_step(tgt_in[:, t], enc, state)
        steps = [m.decode_step(tgt_in[:, t], e, s) for m, e, s in zip(models, encs, states)]
        states = [s for _, s in steps]
        assert torch.allclose(lp.double(), torch.stack([x.double().exp() for x, _ in steps]).mean(0).log(), atol=1e-6)


def _briefly_trained(root, train, seed):
    config = Config.from_dict({
        "data": {"train": str(train), "tokenizer": "char", "shared_vocab": True},
        "model": {"arch": "gru", "embed_dim": 16, "hidden": 16, "encoder_layers": 1, "decoder_layers": 1,
                  "dropout": 0.0},
        "train": {"steps": 30, "batch_tokens": 300, "lr": 1e-2, "warmup": 5, "eval_every": 0, "save_every": 0,
                  "threads": 1, "progress": False, "seed": seed},
        "decode": {"beam": 3, "max_length": 10},
    })
    Trainer(config, root, device="cpu", log=lambda message: None).fit()
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    words = ["abc", "cab", "bca", "aab", "cca", "bbc", "acb"]
    (root / "train.tsv").write_text("".join(f"{w}\t{w[::-1]}\n" for w in words * 8), encoding="utf-8")
    (root / "other.tsv").write_text("".join(f"{w}\t{w}x\n" for w in words * 8), encoding="utf-8")
    return (_briefly_trained(root / "a", root / "train.tsv", 1), _briefly_trained(root / "b", root / "train.tsv", 2),
            _briefly_trained(root / "c", root / "other.tsv", 1))


def test_translator_from_dirs_decodes_the_members_ensemble(folders):
    a, b, _ = folders
    translator = Translator.from_dirs([a, b], device="cpu")
    assert isinstance(translator.model, Ensemble) and len(translator.model.members) == 2
    texts = ["abc", "ca", "bbca"]
    got = translator.translate_nbest(texts, nbest=2)
    single = [Translator.from_dir(d, device="cpu") for d in (a, b)]
    by_hand = Ensemble([t.model for t in single]).eval()
    examples = [translator.codec.example(text, None, i) for i, text in enumerate(texts)]
    expected = decode_examples(by_hand, examples, DecodeConfig(beam=3, max_length=10), nbest=2)
    for row, hyps in zip(got, expected):
        assert [t.score for t in row] == pytest.approx([h.score for h in hyps], abs=1e-6)
        assert [t.text for t in row] == [translator.codec.decode_target(h.tokens) for h in hyps]
    assert Translator.from_dirs([a], device="cpu").model.__class__ is single[0].model.__class__


def test_members_of_another_vocabulary_are_refused_with_the_folder(folders):
    a, _, c = folders
    with pytest.raises(ModelLoadError, match=f"{c}: cannot join an ensemble with {a} \\(other vocabularies\\)"):
        Translator.from_dirs([a, c], device="cpu")

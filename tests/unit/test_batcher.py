"""Dynamic batching: requests with equal decoding settings share a batch, others wait for their
own, sampled requests always decode alone, and each request gets back its own rows."""
import asyncio

from transduce.config import Config, DecodeConfig
from transduce.inference import TranslatorBase
from transduce.serving.app import _batch_options
from transduce.serving.batcher import BatchOptions, Batcher
from transduce.serving.schemas import TranslateRequest


def _batches(requests: list[tuple[list[str], BatchOptions]], max_batch_size: int = 16) -> tuple[list, list]:
    """Submit all requests at once; the batches `run` was given, and each request's rows."""
    seen = []

    def run(texts, options):
        seen.append((list(texts), options))
        return [f"{text}:{options.decode.beam}" for text in texts]

    async def main():
        batcher = Batcher(run, max_batch_size=max_batch_size, max_wait_s=0.2)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(texts, options) for texts, options in requests))
        finally:
            await batcher.stop()

    return seen, asyncio.run(main())


def test_equal_options_share_a_batch_and_each_request_gets_its_rows():
    options = BatchOptions(DecodeConfig(beam=2), nbest=1)
    seen, rows = _batches([(["a", "b"], options), (["c"], BatchOptions(DecodeConfig(beam=2))), (["d"], options)])
    assert seen == [(["a", "b", "c", "d"], options)]
    assert rows == [["a:2", "b:2"], ["c:2"], ["d:2"]]


def test_other_options_wait_for_their_own_batch_in_order():
    two, three = BatchOptions(DecodeConfig(beam=2)), BatchOptions(DecodeConfig(beam=3))
    with_attention = BatchOptions(DecodeConfig(beam=2), attention=True)
    seen, rows = _batches([(["a"], two), (["b"], three), (["c"], two), (["d"], with_attention), (["e"], three)])
    assert seen == [(["a", "c"], two), (["b", "e"], three), (["d"], with_attention)]
    assert rows == [["a:2"], ["b:3"], ["c:2"], ["d:2"], ["e:3"]]


def test_sampled_requests_never_share():
    sampled = BatchOptions(DecodeConfig(sample=True, seed=1))
    seen, rows = _batches([(["a"], sampled), (["b"], sampled), (["c"], sampled)])
    assert [texts for texts, _ in seen] == [["a"], ["b"], ["c"]]
    assert rows == [["a:5"], ["b:5"], ["c:5"]]


def test_a_batch_holds_at_most_max_batch_size_texts():
    options = BatchOptions(DecodeConfig())
    seen, _ = _batches([(["a", "b"], options), (["c", "d"], options), (["e"], options)], max_batch_size=3)
    assert [texts for texts, _ in seen] == [["a", "b", "e"], ["c", "d"]]


class _SavedSettings(TranslatorBase):
    config = Config.from_dict({"decode": {"beam": 2, "max_length": 16}})


def test_requests_that_come_to_the_same_settings_have_equal_options():
    """The batch options hold the settings in force: a request that names the model's own beam
    and one that leaves it out decode alike, so they may share a batch."""
    translator = _SavedSettings()
    named = _batch_options(translator, TranslateRequest(texts=["a"], beam=2, max_length=16))
    left_out = _batch_options(translator, TranslateRequest(texts=["b"]))
    assert named == left_out == BatchOptions(DecodeConfig(beam=2, max_length=16))
    assert _batch_options(translator, TranslateRequest(texts=["a"], beam=3)) != named
    assert _batch_options(translator, TranslateRequest(texts=["a"], nbest=2)) != named

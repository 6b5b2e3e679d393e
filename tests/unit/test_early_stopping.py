"""The best dev evaluation and patience: loss lower-better, BLEU/chrF/ROUGE-L higher-better, counts
of evaluations since the best, early stop when patience runs out, state that survives JSON."""
import json

import pytest

from transduce.training.early_stopping import METRICS, BestTracker


def _figures(step, loss, bleu=10.0, chrf=30.0, rouge=40.0):
    return {"step": step, "dev_loss": loss, "dev_ppl": 2.0 ** loss, "dev_bleu": bleu, "dev_chrf": chrf,
            "dev_rougeL": rouge}


def test_loss_is_lower_better():
    tracker = BestTracker("loss")
    assert tracker.best is None and tracker.since_best == 0
    assert tracker.update(_figures(1, 3.0))
    assert tracker.update(_figures(2, 2.5))
    assert not tracker.update(_figures(3, 2.7))  # worse
    assert not tracker.update(_figures(4, 2.5))  # equal is not better
    assert tracker.best["step"] == 2 and tracker.best["dev_loss"] == 2.5
    assert tracker.since_best == 2
    assert tracker.update(_figures(5, 1.0))
    assert tracker.best["step"] == 5 and tracker.since_best == 0


@pytest.mark.parametrize("metric,key", [("bleu", "dev_bleu"), ("chrf", "dev_chrf"), ("rougeL", "dev_rougeL")])
def test_scores_are_higher_better(metric, key):
    tracker = BestTracker(metric)
    assert tracker.key == key and tracker.larger_is_better
    first = _figures(1, 3.0)
    assert tracker.update(first)
    # a lower score with a lower loss is no progress for this metric
    assert not tracker.update({**_figures(2, 1.0), key: first[key] - 1})
    assert not tracker.update({**_figures(3, 1.0), key: first[key]})
    assert tracker.best["step"] == 1 and tracker.since_best == 2
    assert tracker.update({**_figures(4, 5.0), key: first[key] + 0.5})  # higher score despite the worse loss
    assert tracker.best["step"] == 4 and tracker.best[key] == first[key] + 0.5 and tracker.since_best == 0


def test_metric_table():
    assert METRICS["loss"] == ("dev_loss", False)
    assert BestTracker("loss").key == "dev_loss" and not BestTracker("loss").larger_is_better
    with pytest.raises(KeyError):
        BestTracker("accuracy")


def test_best_is_a_copy_of_the_figures():
    tracker = BestTracker("loss")
    figures = _figures(1, 2.0)
    tracker.update(figures)
    figures["dev_loss"] = 99.0
    assert tracker.best["dev_loss"] == 2.0


def test_patience_counts_evaluations_without_progress():
    tracker = BestTracker("bleu", patience=3)
    tracker.update(_figures(1, 2.0, bleu=20.0))
    assert not tracker.exhausted
    for step, bleu in ((2, 19.0), (3, 20.0)):
        tracker.update(_figures(step, 2.0, bleu=bleu))
        assert not tracker.exhausted, step
    assert tracker.since_best == 2
    tracker.update(_figures(4, 2.0, bleu=21.0))  # progress resets the count
    assert tracker.since_best == 0 and not tracker.exhausted
    for step in (5, 6):
        tracker.update(_figures(step, 2.0, bleu=1.0))
        assert not tracker.exhausted, step
    tracker.update(_figures(7, 2.0, bleu=1.0))
    assert tracker.since_best == 3 and tracker.exhausted
    tracker.update(_figures(8, 2.0, bleu=1.0))
    assert tracker.exhausted
    assert tracker.best["step"] == 4


def test_patience_zero_never_exhausts():
    tracker = BestTracker("loss", patience=0)
    tracker.update(_figures(1, 1.0))
    for step in range(2, 50):
        assert not tracker.update(_figures(step, 2.0))
        assert not tracker.exhausted
    assert tracker.since_best == 48


def test_state_round_trips_through_json():
    tracker = BestTracker("chrf", patience=4)
    for step, chrf in ((1, 30.0), (2, 35.5), (3, 34.0), (4, 33.0)):
        tracker.update(_figures(step, 1.0, chrf=chrf))
    state = json.loads(json.dumps(tracker.state()))
    assert state == {"best": _figures(2, 1.0, chrf=35.5), "since_best": 2}

    restored = BestTracker("chrf", patience=4, state=state)
    assert restored.best == tracker.best and restored.since_best == 2 and not restored.exhausted
    # the restored tracker goes on exactly like the original
    for step, chrf in ((5, 35.5), (6, 10.0)):
        assert restored.update(_figures(step, 1.0, chrf=chrf)) == tracker.update(_figures(step, 1.0, chrf=chrf))
        assert restored.state() == tracker.state()
    assert restored.exhausted and tracker.exhausted
    assert restored.update(_figures(7, 1.0, chrf=36.0))
    assert restored.state()["best"]["step"] == 7 and not restored.exhausted

    empty = BestTracker("loss", state=None)
    assert empty.state() == {"best": None, "since_best": 0}
    assert BestTracker("loss", state=json.loads(json.dumps(empty.state()))).update(_figures(1, 9.0))

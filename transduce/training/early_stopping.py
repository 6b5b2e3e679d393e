"""Which dev evaluation was the best so far, and when to stop for lack of progress."""
from __future__ import annotations

# eval_metric -> (the dev figure it reads, whether larger is better)
METRICS = {"loss": ("dev_loss", False), "bleu": ("dev_bleu", True), "chrf": ("dev_chrf", True),
           "rougeL": ("dev_rougeL", True)}


class BestTracker:
    """Keeps the best evaluation by one metric and counts evaluations since it (patience)."""

    def __init__(self, metric: str = "loss", patience: int = 0, state: dict | None = None):
        self.key, self.larger_is_better = METRICS[metric]
        self.patience = patience
        state = state or {}
        self.best: dict | None = state.get("best")
        self.since_best: int = int(state.get("since_best", 0))

    def update(self, figures: dict) -> bool:
        """Record an evaluation; True when it is the new best."""
        value = figures[self.key]
        if self.best is None or self._better(value, self.best[self.key]):
            self.best, self.since_best = dict(figures), 0
            return True
        self.since_best += 1
        return False

    def _better(self, value: float, best: float) -> bool:
        return value > best if self.larger_is_better else value < best

    @property
    def exhausted(self) -> bool:
        """Patience ran out: `patience` evaluations in a row without a new best."""
        return self.patience > 0 and self.since_best >= self.patience

    def state(self) -> dict:
        return {"best": self.best, "since_best": self.since_best}

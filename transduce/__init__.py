"""transduce: sequence-to-sequence models from pairs of texts.

    import transduce
    model = transduce.load("runs/x")
    model.translate(["..."], beam=5)
    transduce.train(transduce.Config.load("my.yaml"), "runs/y")
"""
from transduce.config import Config
from transduce.inference import Translator, load

__all__ = ["Config", "Translator", "load", "train"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """`transduce.train`, imported when first asked for: training brings the metric libraries
    (sacreBLEU, rouge-score, NLTK), which a process that only decodes does not need."""
    if name == "train":
        from transduce.training.trainer import train

        return train
    raise AttributeError(f"module 'transduce' has no attribute {name!r}")

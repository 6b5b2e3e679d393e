"""transduce: sequence-to-sequence models from pairs of texts.

    import transduce
    model = transduce.load("runs/x")
    model.translate(["..."], beam=5)
    transduce.train(transduce.Config.load("my.yaml"), "runs/y")
"""
from transduce.config import Config
from transduce.inference import Translator, load
from transduce.training.trainer import train

__all__ = ["Config", "Translator", "load", "train"]
__version__ = "0.1.0"

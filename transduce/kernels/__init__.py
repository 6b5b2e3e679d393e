"""The CPU fast paths, behind one switch.

The model files are plain PyTorch: they build `Linear` and `Dropout` (an `nn.Linear` and an
`nn.Dropout` in all but speed), multiply recurrent weights through `step_weight`, take the loss
from `label_smoothed_nll` / `linear_cross_entropy`, and keep RNN input projections in a
`ProjectionTable`. Behind those names sit the measured CPU wins: oneDNN products for float32
linear maps and their gradients, weight gradients of recurrences computed once for all steps,
dropout masks from raw random bits, a fused output layer and loss, the decoding lookup table,
and bounded kernel caches. `use("torch")` turns them all off (plain PyTorch, the reference the
fast paths are tested against); `use("auto" | "onednn" | "mkl")` picks the fast paths with a
fixed rule for weight gradients (see `switch`). Training sets it from `train.kernels`.
"""
from transduce.kernels import environment  # noqa: F401  (sets the CPU libraries' cache sizes first)
from transduce.kernels.cross_entropy import label_smoothed_nll, linear_cross_entropy, smoothed_cross_entropy
from transduce.kernels.dropout import Dropout, dropout_mask
from transduce.kernels.linear_maps import Linear, linear, weight_gradient
from transduce.kernels.recurrent import step_weight
from transduce.kernels.switch import MODES, KernelPolicy, active, fast, resolve, use, using
from transduce.kernels.tables import ProjectionTable

__all__ = ["MODES", "Dropout", "KernelPolicy", "Linear", "ProjectionTable", "active", "dropout_mask", "fast",
           "label_smoothed_nll", "linear", "linear_cross_entropy", "resolve", "smoothed_cross_entropy",
           "step_weight", "use", "using", "weight_gradient"]

"""Which kernels compute the products: one process-wide switch, settled by a fixed rule.

Every choice that changes the arithmetic is made here from the asked mode and what the CPU
reports (`torch.backends.cpu.get_cpu_capability()`), never from a timing, so the same config,
seed, data and machine give the same bits whatever else the machine is doing. A run records the
policy it used (`KernelPolicy.to_dict`) and a resumed run computes with the recorded one.

Modes:
- `torch`: plain PyTorch throughout (`F.linear`, `F.dropout`, autograd's own gradients, the
  loss over materialised logits): the reference the fast paths are tested against.
- `onednn`: the fast paths, every float32 product of a linear map on the CPU through oneDNN.
- `mkl`: the fast paths, weight gradients through torch's own product (MKL), which reads the
  transposed operands in place where oneDNN reorders them first.
- `auto`: the fast paths; weight gradients by shape on CPUs with AVX-512 (MKL for maps with at
  least as many outputs as inputs, where it was measured ahead), oneDNN elsewhere.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

import torch

from transduce.constants import KERNEL_MODES as MODES

WEIGHT_GRADIENTS = ("onednn", "mkl", "by_shape")
# Weight-gradient products of at most this many floating-point operations stay on oneDNN under
# `by_shape`: there the two libraries are level and the choice is not worth a branch.
BY_SHAPE_ABOVE_FLOPS = 50_000_000


@dataclass(frozen=True)
class KernelPolicy:
    """A settled choice: `fast` False is plain PyTorch; `weight_gradients` says which library
    computes the weight gradients of float32 linear maps on the CPU (onednn, mkl, by_shape)."""

    mode: str
    fast: bool
    weight_gradients: str
    cpu: str

    def describe(self) -> str:
        if not self.fast:
            return f"{self.mode}: plain PyTorch"
        rule = {"by_shape": "by shape", "onednn": "oneDNN", "mkl": "MKL"}[self.weight_gradients]
        return f"{self.mode}: oneDNN products, weight gradients {rule} ({self.cpu} CPU)"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> "KernelPolicy":
        policy = cls(str(record["mode"]), bool(record["fast"]), str(record["weight_gradients"]), str(record["cpu"]))
        if policy.mode not in MODES or policy.weight_gradients not in WEIGHT_GRADIENTS:
            raise ValueError(f"unknown kernel policy {record!r}")
        return policy


def resolve(mode: str) -> KernelPolicy:
    """The policy a mode stands for on this machine."""
    if mode not in MODES:
        raise ValueError(f"kernels: {mode!r} is not one of {', '.join(MODES)}")
    cpu = torch.backends.cpu.get_cpu_capability()
    if mode == "auto":
        return KernelPolicy(mode, True, "by_shape" if cpu.startswith("AVX512") else "onednn", cpu)
    if mode == "torch":
        return KernelPolicy(mode, False, "mkl", cpu)
    return KernelPolicy(mode, True, mode, cpu)


_active: list[KernelPolicy] = []


def use(choice: str | KernelPolicy) -> KernelPolicy:
    """Compute with this mode (or a recorded policy) from now on, in this process; returns the policy."""
    policy = choice if isinstance(choice, KernelPolicy) else resolve(choice)
    _active[:] = [policy]
    return policy


def active() -> KernelPolicy:
    """The policy in force (`auto` until `use` says otherwise)."""
    if not _active:
        use("auto")
    return _active[0]


@contextmanager
def using(choice: str | KernelPolicy) -> Iterator[KernelPolicy]:
    """`use` for the length of a block, then the policy before it again."""
    before = active()
    try:
        yield use(choice)
    finally:
        use(before)


def fast() -> bool:
    """Whether the fast paths are on (any mode but `torch`)."""
    return active().fast


def mkl_weight_gradient(outputs: int, inputs: int, flops: int) -> bool:
    """Whether the weight gradient of an (outputs x inputs) map, `flops` in all, goes through MKL."""
    rule = active().weight_gradients
    if rule == "by_shape":
        return outputs >= inputs and flops > BY_SHAPE_ABOVE_FLOPS
    return rule == "mkl"

"""CIFAR ResNets (He et al. 2015, sec. 4.2) for 32x32 inputs: a 3x3 conv to 16 channels,
then three stages of ``n`` basic blocks with 16/32/64 channels at strides 1/2/4 (depth
``6n + 2``). Feature levels: ``c1`` the stem (stride 1), ``c2..c4`` the stages.

Shortcuts use the paper's option A (subsample + zero-pad, no parameters), which gives
its parameter counts: resnet20 0.27M, resnet32 0.46M, resnet44 0.66M, resnet56 0.85M,
resnet110 1.7M.

- ``resnet{20,32,44,56,110}``: post-activation blocks, as in the paper.
- ``preact_resnet{...}``: pre-activation blocks (He et al. 2016), same parameter counts
  plus one final BN (+128 parameters).
- ``resnet{...}_plain``: the same nets with every shortcut removed (the paper's "plain"
  baselines, whose training error rises with depth).
- ``resnet8_cifar_wide``: one block per stage at 64/128/256 channels with 1x1-conv
  shortcuts (1.2M parameters), a shallow, wide net that reaches a usable accuracy within a
  few minutes of CPU training.
"""

from __future__ import annotations

from dataclasses import replace

from backbones.blocks import BasicBlock, PreActBasicBlock
from backbones.resnet import ResNetSpec, register_spec

DEPTHS = (20, 32, 44, 56, 110)


def _cifar_specs() -> list[ResNetSpec]:
    specs = []
    for depth in DEPTHS:
        n = (depth - 2) // 6
        base = ResNetSpec(
            f"resnet{depth}", BasicBlock, (n, n, n), planes=(16, 32, 64), stem="cifar",
            shortcut="pad", doc=f"CIFAR ResNet-{depth} (He et al. 2015, option A shortcuts).",
        )  # fmt: skip
        specs += [
            base,
            replace(
                base,
                name=f"preact_resnet{depth}",
                block=PreActBasicBlock,
                stem="cifar_preact",
                doc=f"CIFAR pre-activation ResNet-{depth} (He et al. 2016).",
            ),  # fmt: skip
            replace(
                base,
                name=f"resnet{depth}_plain",
                residual=False,
                doc=f"CIFAR plain-{depth}: resnet{depth} without shortcuts.",
            ),  # fmt: skip
        ]
    specs.append(
        ResNetSpec(
            "resnet8_cifar_wide",
            BasicBlock,
            (1, 1, 1),
            planes=(64, 128, 256),
            stem="cifar",
            doc="CIFAR ResNet-8 at 64/128/256 channels, 1x1-conv shortcuts (fast CPU recipe).",
        )  # fmt: skip
    )
    return specs


for _spec in _cifar_specs():
    register_spec(_spec)

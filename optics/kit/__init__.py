"""The kit: helpers every privlens package uses, importing nothing of privlens.

- :mod:`.config`: dataclass configs to and from YAML, ``--set KEY=VALUE`` overrides;
- :mod:`.cli`: the shared command-line style (``tool COMMAND``, one-line errors, exit 2);
- :mod:`.paths`: ``PRIVLENS_HOME`` and confined user-supplied names;
- :mod:`.imageio`: image files to ``(C, H, W)`` tensors in [0, 1] and back;
- :mod:`.resize`: the one resize policy for images;
- :mod:`.progress`: progress bars that print sparse lines when not on a terminal;
- :mod:`.checkpoint`: atomic, ``weights_only`` checkpoints;
- :mod:`.distributed`: one process, one GPU or ``torchrun`` DDP, and its safe teardown.
"""

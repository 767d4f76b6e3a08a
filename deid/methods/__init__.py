"""Methods: what privlens trains.

- :mod:`.teacher`: the heatmap teacher U* on clean faces (``optics pretrain-fan``);
- :mod:`.stage1`: the learned phase plate jointly with the heatmap regressor U
  (``optics train-stage1``).
"""

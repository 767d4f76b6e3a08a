"""Stage 1: the phase plate's Zernike coefficients trained jointly with the heatmap
regressor U (:mod:`.trainer`, with :mod:`.losses` and :mod:`.plots`; :mod:`.run` loads data,
teacher and identity twin and trains)."""

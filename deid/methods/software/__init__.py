"""Software-level de-identification peers run over privlens' own stage-2 generator: FALCO-style
latent optimisation (:mod:`.falco`) and a Private-Encoder-style encoder with a differentially
private code (:mod:`.private_encoder`, noise in :mod:`.dp`). Both need the clean image."""

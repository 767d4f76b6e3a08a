"""Stage 2: the StarGAN v2-based de-identification generator."""

"""Device-level fakes of the bench hardware, driven by the real backend code."""

"""privlens optics: the physics of the privacy camera (Zernike phase plate, Fresnel
propagation, PSF, image formation) over :mod:`optics.kit`, and the ``optics`` command line
(:mod:`optics.cli`). See ``docs/architecture.md`` for the layers."""

"""Attacks on the privacy camera: recover the scene ``x`` from the privacy image ``y`` given
the PSF, or re-identify without recovering it.

Interface shared by every reconstruction attack (one function per method)::

    x_hat = method(y, psf, **params)

- ``y``: ``(B, C, H, W)`` float tensor in [0, 1], the sensor image (any device);
- ``psf``: ``(C, K, K)`` (or ``(B, C, K, K)``) float tensor, each channel summing to 1, on the
  sensor's pixel grid, optical axis at pixel ``K // 2`` (as :meth:`optics.camera.Camera.psf`
  returns it); each colour channel is deconvolved with its own PSF;
- returns ``x_hat``: ``(B, C, H, W)`` in [0, 1], same device and dtype as ``y``.

Methods live in their own modules: :mod:`.deconv` (Wiener, Richardson-Lucy), :mod:`.tv`
(total-variation ADMM), :mod:`.pnp` (plug-and-play), :mod:`.ddrm` (DDRM with a circulant
operator), :mod:`.inversion` (a learned U-Net), :mod:`.matched` (matched-degradation
re-identification, which reconstructs nothing).
"""

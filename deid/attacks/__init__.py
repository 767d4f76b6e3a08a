"""Attacks on the privacy camera: recover the scene ``x`` from the privacy image ``y`` given
the PSF, or re-identify without recovering it.

Interface shared by every reconstruction attack (one function per method)::

    x_hat = method(y, psf, **params)

- ``y``: ``(B, C, H, W)`` float tensor in [0, 1], the sensor image (any device);
- ``psf``: ``(C, K, K)`` (or ``(B, C, K, K)``) float tensor, each channel summing to 1, on the
  sensor's pixel grid, optical axis at pixel ``K // 2`` (as :meth:`optics.camera.Camera.psf`
  returns it); each colour channel is deconvolved with its own PSF;
- returns ``x_hat``: ``(B, C, H, W)`` in [0, 1], same device and dtype as ``y``.

Modules:

- :mod:`optics.deconv` (physics layer, as stage 1 differentiates through it): Wiener and
  Richardson-Lucy;
- :mod:`.tv`: total-variation deconvolution (ADMM) and the Chambolle TV denoiser;
- :mod:`.pnp`: plug-and-play ADMM/HQS with a pluggable denoiser;
- :mod:`.denoisers`: the noise-conditioned face denoiser PnP uses, trained by privlens;
- :mod:`.ddrm` and :mod:`.ddpm_unet`: DDRM with a circulant operator, and the DDPM UNet
  layout it can load from a local checkpoint;
- :mod:`.inversion`: a learned U-Net trained against the attacker's copy of the camera;
- :mod:`.cameras`: the threat-model cameras (``build_camera``), each with the PSF the
  attacker knows;
- :mod:`.attacker`: one method against one camera, tuned on the attacker's own faces;
  ``matched`` there re-identifies against a gallery through the same camera and
  reconstructs nothing.
"""

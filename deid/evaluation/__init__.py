"""Evaluation: what an attack recovers, and how private and useful a camera or method is.

- :mod:`.reid`: nearest-neighbour re-identification against clean and matched galleries;
- :mod:`.judge`: scores one attack's reconstructions (PSNR, SSIM, LPIPS, FR distance, re-id);
- :mod:`.attack_job`: ``optics attack`` (one method, one camera, written to a folder);
- :mod:`.privacy_report`: ``optics privacy-report`` (every attack on every camera), with
  :mod:`.tables` and :mod:`.figures`;
- :mod:`.stage1` and :mod:`.stage1_report`: ``optics train-stage1``'s run and its report.

Protocol and measured numbers: ``docs/identity.md``, ``docs/attacks.md``.
"""

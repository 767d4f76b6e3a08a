"""Face data: the offline demo corpus, dlib landmarks, and the ``FaceFolder`` dataset.

- :mod:`deid.data.dataset`: ``FaceFolder`` over any folder, the StarGAN v2 layout, or the
  demo corpus (``FaceFolder.from_manifest``);
- :mod:`deid.data.corpus`: ``fetch_demo_data`` builds ``HOME/demo-faces`` (``deid
  fetch-demo-data``);
- :mod:`deid.data.sources`: the pinned package archives that ship face photos;
- :mod:`deid.data.detect`: dlib's HOG face detector and 68-point predictor;
- :mod:`deid.data.landmarks`: landmark files, boxes and crop geometry.

See ``docs/data.md``. Submodules are imported on use (torch and dlib load only when needed).
"""

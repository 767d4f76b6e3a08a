"""Face data: the offline demo corpus, dlib landmarks, and the ``FaceFolder`` dataset.

- :mod:`deid.faces.dataset`: ``FaceFolder`` over any folder, the StarGAN v2 layout, or the
  demo corpus (``FaceFolder.from_manifest``);
- :mod:`deid.faces.corpus_builder`: ``fetch_demo_data`` builds ``HOME/demo-faces`` (``deid
  fetch-demo-data``);
- :mod:`deid.faces.sources`: the pinned package archives that ship face photos;
- :mod:`deid.faces.detect`: dlib's HOG face detector and 68-point predictor;
- :mod:`deid.faces.landmarks`: landmark files, boxes and crop geometry.

See ``docs/data.md``. Submodules are imported on use (torch and dlib load only when needed).
"""

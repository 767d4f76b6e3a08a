"""Training of the learned optics (stage 1) and of the heatmap teacher.

This subpackage joins the optics core with the face models in :mod:`deid`; the optics core
itself imports nothing from here.
"""

"""Shared pytest set-up: tests marked ``hw`` need the real bench and run only with
``PRIVLENS_HW=1`` (and ``PRIVLENS_RIG_CONFIG`` pointing at its rig config)."""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PRIVLENS_HW") == "1":
        return
    skip = pytest.mark.skip(reason="needs the real bench (set PRIVLENS_HW=1)")
    for item in items:
        if "hw" in item.keywords:
            item.add_marker(skip)

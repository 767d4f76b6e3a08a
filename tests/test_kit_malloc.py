"""optics.kit.malloc: freed tensors stay in the process, so a loop stops re-faulting pages."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LOOP = """
import resource, sys, torch
from optics.kit.malloc import keep_freed_memory
on = keep_freed_memory()
x = torch.ones(16_000_000)  # 64 MB blocks: above the most glibc's mmap threshold adapts to
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # an iterative loop's temporaries, each allocated and freed
    x = ((x * 1.0001 + 0.5) - 0.5).sqrt()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(on, faults)
"""


def _run(env_extra: dict) -> tuple[bool, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    out = subprocess.run([sys.executable, "-c", LOOP], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_instead_of_refaulted():
    on, faults_kept = _run({})
    off, faults_default = _run({"PRIVLENS_MALLOC": "off"})
    assert on and not off
    # 80 fresh 64 MB blocks are 1.25 M page faults with glibc's defaults; kept, 110-140k
    assert faults_default > 1_000_000, faults_default
    assert faults_kept * 4 < faults_default, (faults_kept, faults_default)

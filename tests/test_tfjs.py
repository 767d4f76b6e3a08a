"""The tfjs graph reader (deid.judges.tfjs): op semantics on tiny hand-built graphs (no
download), and the two held-out judges' graphs checked against TensorFlow.js itself.

The oracle is ``@tensorflow/tfjs@4.22.0`` (pure-JS CPU backend) running the same model files
in node on the same inputs; it is installed once with npm into
``$PRIVLENS_HOME/tools/tfjs-4.22.0``. Those tests skip only when node or npm is absent.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from deid.faces.sources import ensure_source, get_source, image_from_bytes, read_members
from deid.judges.heldout import (
    FaceResJudge,
    MobileFaceNetJudge,
    fetch_human_model,
    repair_mobilefacenet,
)
from deid.judges.tfjs import TfjsGraph, TfNode, UnsupportedOp, read_weights, same_padding
from optics.kit.paths import privlens_home

TFJS = "@tensorflow/tfjs@4.22.0"
REL_TOL = 1e-4  # max |torch - tfjs| relative to max |tfjs|


# ---------------------------------------------------------------------------- op semantics


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _node(name, op, inputs=(), **attr):
    return TfNode(name, op, list(inputs), attr)


def _run(nodes, weights, x, outputs):
    g = TfjsGraph(nodes, {k: np.asarray(v) for k, v in weights.items()}, outputs)
    with torch.no_grad():
        return g(torch.from_numpy(np.asarray(x, np.float32)), outputs)


@pytest.mark.parametrize("size,k,s,d,expected", [
    (112, 3, 2, 1, (0, 1)),   # odd total: the extra pixel goes after (bottom/right)
    (224, 3, 2, 1, (0, 1)),
    (7, 3, 1, 1, (1, 1)),
    (5, 2, 1, 1, (0, 1)),     # even kernel
    (5, 4, 1, 1, (1, 2)),
    (7, 7, 1, 1, (3, 3)),
    (8, 3, 1, 2, (2, 2)),     # dilation 2: effective kernel 5
    (9, 1, 2, 1, (0, 0)),
    (3, 7, 1, 1, (3, 3)),     # padding larger than the input
])
def test_same_padding_is_tensorflows(size, k, s, d, expected):
    assert same_padding(size, k, s, d) == expected
    before, after = expected
    out = (size + before + after - (k - 1) * d - 1) // s + 1
    assert out == -(-size // s)


def test_strided_same_conv_pads_bottom_right():
    """TF SAME, 3x3 stride 2 on 4x4: padding (0, 1), so output (0, 0) sums rows and columns
    0-2 and output (1, 1) rows and columns 2-3 (torch's symmetric padding would differ)."""
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    nodes = [_node("x", "Placeholder"), _node("w", "Const"), _node("b", "Const"),
             _node("y", "_FusedConv2D", ["x", "w", "b"], strides=[1, 2, 2, 1], padding="SAME",
                   data_format="NHWC", fused_ops=["BiasAdd"], dilations=[1, 1, 1, 1])]
    w = {"w": np.ones((3, 3, 1, 1), np.float32), "b": np.array([0.5], np.float32)}
    y = _run(nodes, w, x, "y").numpy()[0, :, :, 0]
    a = x[0, :, :, 0]
    expected = np.array([[a[0:3, 0:3].sum(), a[0:3, 2:4].sum()],
                         [a[2:4, 0:3].sum(), a[2:4, 2:4].sum()]]) + 0.5
    np.testing.assert_array_equal(y, expected)


def _naive_tf_conv(x, w, stride, depthwise):
    """TensorFlow's definition, written out with loops: NHWC input, HWIO filter (depthwise:
    ``(kh, kw, in, mult)`` and output channel ``c * mult + m``), SAME padding."""
    n, h, wd, cin = x.shape
    kh, kw = w.shape[:2]
    (pt, _), (pl, _) = same_padding(h, kh, stride), same_padding(wd, kw, stride)
    oh, ow = -(-h // stride), -(-wd // stride)
    cout = cin * w.shape[3] if depthwise else w.shape[3]
    out = np.zeros((n, oh, ow, cout))
    for i in range(oh):
        for j in range(ow):
            for di in range(kh):
                for dj in range(kw):
                    r, c = i * stride + di - pt, j * stride + dj - pl
                    if not (0 <= r < h and 0 <= c < wd):
                        continue
                    px = x[:, r, c, :]
                    if depthwise:
                        out[:, i, j, :] += (px[:, :, None] * w[di, dj][None]).reshape(n, -1)
                    else:
                        out[:, i, j, :] += px @ w[di, dj]
    return out


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("size,k,stride", [(5, 2, 1), (7, 3, 2), (6, 3, 2), (5, 4, 1)])
def test_conv_matches_the_tensorflow_definition(depthwise, size, k, stride):
    rng = np.random.default_rng(size * 10 + k + stride)
    x = rng.normal(size=(2, size, size + 1, 3)).astype(np.float32)
    w = rng.normal(size=(k, k, 3, 2 if depthwise else 4)).astype(np.float32)
    op = "DepthwiseConv2dNative" if depthwise else "Conv2D"
    nodes = [_node("x", "Placeholder"), _node("w", "Const"),
             _node("y", op, ["x", "w"], strides=[1, stride, stride, 1], padding="SAME",
                   data_format="NHWC")]
    y = _run(nodes, {"w": w}, x, "y").numpy()
    np.testing.assert_allclose(y, _naive_tf_conv(x, w, stride, depthwise), rtol=1e-5,
                               atol=1e-5)


def test_elementwise_reductions_and_dense_ops_follow_tf_layout():
    """Per-channel constants broadcast against NHWC activations (kept NCHW inside), ReLU6 as
    Minimum/Maximum, the written-out PReLU, channel and spatial reductions, squeeze, pad,
    reshape, a fused dense layer and softmax, against numpy in TF's layout."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    c = {"scale": rng.normal(size=4), "shift": rng.normal(size=(1, 1, 1, 4)),
         "six": np.float32(6), "zero": np.float32(0), "alpha": rng.normal(size=4),
         "axes_c": np.array([3], np.int32), "axes_hw": np.array([1, 2], np.int32),
         "pads": np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32),
         "shape": np.array([2, -1], np.int32), "w": rng.normal(size=(4, 3)),
         "b": rng.normal(size=3)}
    c = {k: np.asarray(v, np.int32 if np.asarray(v).dtype.kind == "i" else np.float32)
         for k, v in c.items()}
    one = np.ones((1, 1, 4, 4), np.float32)
    nodes = [
        _node("x", "Placeholder"), *[_node(k, "Const") for k in [*c, "eye"]],
        _node("conv", "Conv2D", ["x", "eye"], strides=[1, 1, 1, 1], padding="VALID"),
        _node("mul", "Mul", ["conv", "scale"]),
        _node("add", "AddV2", ["shift", "mul"]),
        _node("relu", "Relu", ["add"]),
        _node("min", "Minimum", ["relu", "six"]),
        _node("relu6", "Maximum", ["min", "zero"]),
        _node("abs", "Abs", ["add"]), _node("sub", "Sub", ["add", "abs"]),
        _node("neg", "Mul", ["sub", "alpha"]), _node("prelu", "Add", ["relu", "neg"]),
        _node("sumc", "Sum", ["prelu", "axes_c"], keep_dims=True),
        _node("mean", "Mean", ["relu6", "axes_hw"], keep_dims=False),
        _node("mean_k", "Mean", ["prelu", "axes_hw"], keep_dims=True),
        _node("sq", "Squeeze", ["mean_k"], squeeze_dims=[1, 2]),
        _node("pad", "Pad", ["prelu", "pads"]),
        _node("flat", "Reshape", ["prelu", "shape"]),
        _node("dense", "_FusedMatMul", ["mean", "w", "b"], fused_ops=["BiasAdd", "Relu"],
              transpose_a=False, transpose_b=False),
        _node("soft", "Softmax", ["dense"]),
    ]
    outs = ["prelu", "relu6", "sumc", "mean", "sq", "pad", "flat", "dense", "soft"]
    got = _run(nodes, {**c, "eye": one * np.eye(4, dtype=np.float32)}, x, outs)
    add = x * c["scale"] + c["shift"]
    prelu = np.maximum(add, 0) + (add - np.abs(add)) * c["alpha"]
    relu6 = np.clip(add, 0, 6)
    mean = relu6.mean(axis=(1, 2))
    dense = np.maximum(mean @ c["w"] + c["b"], 0)
    e = np.exp(dense - dense.max(1, keepdims=True))
    want = [prelu, relu6, prelu.sum(3, keepdims=True), mean, prelu.mean(axis=(1, 2)),
            np.pad(prelu, [[0, 0], [1, 2], [0, 1], [0, 0]]), prelu.reshape(2, -1), dense,
            e / e.sum(1, keepdims=True)]
    for name, g, w in zip(outs, got, want, strict=True):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-5, atol=1e-5, err_msg=name)


def test_unsupported_op_is_named_in_one_line():
    nodes = [_node("x", "Placeholder"), _node("y", "Conv3D", ["x"])]
    with pytest.raises(UnsupportedOp, match="'Conv3D'") as e:
        TfjsGraph(nodes, {})
    assert "\n" not in str(e.value)
    with pytest.raises(UnsupportedOp, match="NCHW"):
        TfjsGraph([_node("x", "Placeholder"), _node("w", "Const"),
                   _node("y", "Conv2D", ["x", "w"], data_format="NCHW")],
                  {"w": np.ones((1, 1, 1, 1), np.float32)})
    with pytest.raises(UnsupportedOp, match="FusedBatchNorm"):
        TfjsGraph([_node("x", "Placeholder"), _node("w", "Const"),
                   _node("y", "_FusedConv2D", ["x", "w"], fused_ops=["FusedBatchNorm"])],
                  {"w": np.ones((1, 1, 1, 1), np.float32)})


def test_read_weights_dtypes_and_quantisation(tmp_path):
    f32 = np.array([1.5, -2.0], np.float32)
    q8 = np.array([0, 3, 255], np.uint8)
    f16 = np.array([0.5, -7.25, 1e-3], np.float16)
    i32 = np.array([[1, 2], [3, -4]], np.int32)
    (tmp_path / "w.bin").write_bytes(f32.tobytes() + q8.tobytes() + f16.tobytes()
                                     + i32.tobytes())
    manifest = [{"paths": ["w.bin"], "weights": [
        {"name": "a", "shape": [2], "dtype": "float32"},
        {"name": "b", "shape": [3], "dtype": "float32",
         "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "c", "shape": [3], "dtype": "float32",
         "quantization": {"dtype": "float16", "original_dtype": "float32"}},
        {"name": "d", "shape": [2, 2], "dtype": "int32"}]}]
    w = read_weights(manifest, tmp_path)
    np.testing.assert_array_equal(w["a"], f32)
    np.testing.assert_array_equal(w["b"], [-1.0, 0.5, 126.5])
    np.testing.assert_array_equal(w["c"], f16.astype(np.float32))
    np.testing.assert_array_equal(w["d"], i32)
    assert [w[k].dtype for k in "abcd"] == [np.float32] * 3 + [np.int32]
    manifest[0]["weights"].pop()
    with pytest.raises(ValueError, match="16 bytes left"):
        read_weights(manifest, tmp_path)


def test_float64_and_selectable_outputs():
    nodes = [_node("x", "Placeholder"), _node("k", "Const"), _node("a", "Mul", ["x", "k"]),
             _node("b", "Square", ["a"])]
    g = TfjsGraph(nodes, {"k": np.float32(3)}).double()
    assert g.outputs == ["b"]
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    assert g(x).dtype == torch.float64
    a, b = g(x, ["a", "b"])
    np.testing.assert_array_equal(a.numpy(), [[3, 6]])
    np.testing.assert_array_equal(b.numpy(), [[9, 36]])
    with pytest.raises(ValueError, match="no node named 'c'"):
        g(x, "c")


def test_fused_chains_and_in_place_ops_equal_the_graph_node_by_node():
    """Keras' exported PReLU (``Relu(x) + c * (x - Abs(x))``) and ReLU6 (``Maximum(Minimum(
    Relu(x), 6), 0)``) run as one op each, and elementwise ops write into inputs read for the
    last time: bit for bit what the graph gives node by node, with a value read twice (a
    residual ``x``), a chain node asked for as an output (no fusion then) and a fed input
    left untouched."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 4, 4)).astype(np.float32)
    nodes = [_node("x", "Placeholder"), _node("w", "Const"), _node("alpha", "Const"),
             _node("six", "Const"), _node("zero", "Const"), _node("bias", "Const"),
             _node("conv", "Conv2D", ["x", "w"], strides=[1, 1, 1, 1], padding="SAME"),
             _node("r", "Relu", ["conv"]), _node("ab", "Abs", ["conv"]),
             _node("sub", "Sub", ["conv", "ab"]), _node("neg", "Neg", ["alpha"]),
             _node("mul", "Mul", ["sub", "neg"]), _node("prelu", "Add", ["r", "mul"]),
             _node("b", "BiasAdd", ["prelu", "bias"]), _node("r2", "Relu", ["b"]),
             _node("mn", "Minimum", ["r2", "six"]), _node("mx", "Maximum", ["mn", "zero"]),
             _node("res", "AddV2", ["mx", "x"]), _node("out", "Mul", ["res", "x"])]
    weights = {"w": w, "alpha": rng.uniform(0.1, 0.3, 4).astype(np.float32),
               "six": np.float32(6), "zero": np.float32(0),
               "bias": rng.normal(size=4).astype(np.float32)}
    g = TfjsGraph(nodes, {k: np.asarray(v) for k, v in weights.items()}, ["out"])
    assert {f.kind for f in g._fusions.values()} == {"prelu", "relu_clip"}
    x = torch.from_numpy(rng.normal(scale=3, size=(2, 6, 6, 4)).astype(np.float32))
    x0 = x.clone()
    with torch.no_grad():
        fused = g(x)
        g.fuse = False
        plain = g(x)
        g.fuse = True
        both = g(x, ["out", "mul"])  # an inner node asked for: that chain runs node by node
    assert torch.equal(x, x0)
    assert torch.equal(fused, plain) and torch.equal(both[0], plain)
    assert len(g._plan(("out",))[0]) < len(g._plan(("out", "mul"))[0])
    # against numpy, node by node
    conv = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), torch.from_numpy(w).permute(
        3, 2, 0, 1), padding=1).permute(0, 2, 3, 1).numpy()
    pre = np.where(conv >= 0, conv, -2 * weights["alpha"] * conv) + weights["bias"]  # c = -alpha
    ref = (np.clip(pre, 0, 6) + x.numpy()) * x.numpy()
    np.testing.assert_allclose(fused.numpy(), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- tfjs oracle

ORACLE_JS = r"""
// node oracle.js JOBS.json: each job {model, inputs: [{file, shape}], outputs, prefix}
const fs = require('fs');
const path = require('path');
const tf = require(path.join(process.env.TFJS_DIR, 'node_modules', '@tensorflow', 'tfjs'));
async function load(modelJson) {
  const m = JSON.parse(fs.readFileSync(modelJson));
  const specs = [], bufs = [];
  for (const g of m.weightsManifest) {
    specs.push(...g.weights);
    for (const p of g.paths) bufs.push(fs.readFileSync(path.join(path.dirname(modelJson), p)));
  }
  const all = Buffer.concat(bufs);
  return tf.loadGraphModel(tf.io.fromMemorySync({
    modelTopology: m.modelTopology, weightSpecs: specs, format: m.format,
    weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength)}));
}
async function main() {
  await tf.setBackend('cpu');
  const jobs = JSON.parse(fs.readFileSync(process.argv[2]));
  const report = [];
  for (const job of jobs) {
    const model = await load(job.model);
    job.inputs.forEach((inp, i) => {
      const raw = fs.readFileSync(inp.file);
      const x = tf.tensor(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4),
                          inp.shape, 'float32');
      let ys = model.execute(x, job.outputs);
      if (!Array.isArray(ys)) ys = [ys];
      ys.forEach((y, k) => {
        const d = y.dataSync();
        const f = `${job.prefix}-${i}-${k}.f32`;
        fs.writeFileSync(f, Buffer.from(d.buffer, d.byteOffset, d.byteLength));
        report.push({file: f, shape: y.shape});
      });
    });
  }
  console.log(JSON.stringify({version: tf.version.tfjs, backend: tf.getBackend(), report}));
}
main().catch((e) => { console.error(String(e.stack || e)); process.exit(1); });
"""


@pytest.fixture(scope="module")
def tfjs_dir() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the TensorFlow.js oracle "
                    f"({TFJS}); install Node.js")
    dest = privlens_home() / "tools" / "tfjs-4.22.0"
    pkg = dest / "node_modules" / "@tensorflow" / "tfjs" / "package.json"
    if not (pkg.is_file() and json.loads(pkg.read_text())["version"] == "4.22.0"):
        dest.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([npm, "install", "--prefix", str(dest), TFJS, "--no-audit",
                               "--no-fund", "--loglevel=error"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"npm install {TFJS} failed: {proc.stderr[-500:]}"
    return dest


def _tfjs(tfjs_dir: Path, tmp: Path, jobs: list[dict]) -> list[np.ndarray]:
    """Run the jobs in node; each job's inputs are numpy arrays, written as raw float32."""
    spec = []
    for j, job in enumerate(jobs):
        inputs = []
        for i, x in enumerate(job["inputs"]):
            f = tmp / f"in-{j}-{i}.f32"
            np.ascontiguousarray(x, "<f4").tofile(f)
            inputs.append({"file": str(f), "shape": list(x.shape)})
        spec.append({"model": str(job["model"]), "inputs": inputs, "outputs": job["outputs"],
                     "prefix": str(tmp / f"out-{j}")})
    (tmp / "jobs.json").write_text(json.dumps(spec))
    (tmp / "oracle.js").write_text(ORACLE_JS)
    proc = subprocess.run(["node", str(tmp / "oracle.js"), str(tmp / "jobs.json")],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TFJS_DIR=str(tfjs_dir)))
    assert proc.returncode == 0, f"tfjs oracle failed: {proc.stderr[-800:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["version"] == "4.22.0" and result["backend"] == "cpu"
    return [np.fromfile(r["file"], "<f4").reshape(r["shape"]) for r in result["report"]]


def _johns(n_per_identity: int = 1) -> torch.Tensor:
    src = get_source("dlib")
    archive = ensure_source(src, privlens_home() / "sources")
    (johns,) = [m.path for m in src.members if "/johns/" in m.path]
    chips = read_members(archive, [johns])
    by_id: dict[str, list[bytes]] = {}
    for name, data in chips.items():
        by_id.setdefault(name.split("/")[-2], []).append(data)
    ims = [image_from_bytes(d) for v in by_id.values() for d in v[:n_per_identity]]
    return torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("judge_cls", [MobileFaceNetJudge, FaceResJudge],
                         ids=["mobilefacenet", "faceres"])
def test_reader_matches_tfjs(tfjs_dir, tmp_path, judge_cls):
    """Both graphs as shipped (all their outputs) and, for MobileFaceNet, the repaired graph
    the judge runs, on 2 random inputs and 3 real aligned johns faces; torch and tfjs agree
    to 1e-4 of the output scale."""
    judge = judge_cls()
    model_json = fetch_human_model(judge.model)
    s = judge.input_size
    rng = np.random.default_rng(0)
    real = judge.normalise(judge.chips(_johns()[:3])).numpy()
    noise = judge.normalise(torch.from_numpy(rng.random((2, 3, s, s), np.float32))).numpy()
    x = np.concatenate([noise, real]).astype(np.float32)
    models = [(model_json, TfjsGraph.load(model_json))]
    if judge_cls is MobileFaceNetJudge:
        fixed = tmp_path / "mobilefacenet.json"
        fixed.write_text(json.dumps(repair_mobilefacenet(json.loads(model_json.read_text()))))
        (tmp_path / "mobilefacenet.bin").symlink_to(model_json.with_suffix(".bin"))
        models.append((fixed, TfjsGraph.load(fixed, [judge.output_node])))
    jobs = [{"model": m, "inputs": [x], "outputs": g.outputs} for m, g in models]
    ref = iter(_tfjs(tfjs_dir, tmp_path, jobs))
    for (m, g), job in zip(models, jobs, strict=True):
        with torch.no_grad():
            got = g(torch.from_numpy(x), g.outputs)
        for name, y in zip(job["outputs"], got, strict=True):
            r = next(ref)
            assert y.shape == r.shape, name
            err = float(np.abs(y.numpy() - r).max() / np.abs(r).max())
            print(f"{Path(m).name} {name}: max |torch - tfjs| / max |tfjs| = {err:.2e}")
            assert err < REL_TOL, f"{Path(m).name} {name}: relative max diff {err:.2e}"
    # the judge runs exactly the graph checked above
    with torch.no_grad():
        e = judge.net(torch.from_numpy(real), judge.output_node)
        np.testing.assert_array_equal(e.numpy(), models[-1][1](torch.from_numpy(real),
                                                               judge.output_node).numpy())

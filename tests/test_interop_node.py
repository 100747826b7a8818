"""Interop with the formats' own tools, run under Node.js: PlayCanvas splat-transform (which reads
and writes SPZ through Niantic's own library, compiled to WebAssembly) and Niantic's decoder as
published on npm (``@spz-loader/core``).

* Our files read by them give our Gaussians: PLY, SPZ v3 and v4, compressed PLY and SOG through
  splat-transform (decoded to a PLY), SPZ v2 and v3 through ``@spz-loader/core`` (whose build
  predates SPZ v4).
* Their files read by us give theirs: splat-transform's SPZ v4 and v3, compressed PLY, SOG, and
  the PLY with ``opacity = +inf`` it decodes a compressed PLY to, all made in the test from one of
  our models.

The npm packages (pinned versions) are installed once into ``$SPLATDISTILL_NPM_CACHE`` (default
``~/.cache/splatdistill/npm``) and reused; the tests skip with a message when node/npm is missing
or the install fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import assert_close, random_scene
from splatdistill.formats.compressed_ply import write_compressed_ply
from splatdistill.formats.io import load_model
from splatdistill.formats.ply import read_ply, write_ply
from splatdistill.formats.sog import write_sog
from splatdistill.formats.spz import read_spz, read_spz_header, write_spz
from splatdistill.scene.gaussians import GaussianScene

# splat-transform 3.x needs Node >= 22; 2.7.1 runs on Node 20 and has SPZ v4 (Niantic's library)
NPM_PACKAGES = ["@playcanvas/splat-transform@2.7.1", "@spz-loader/core@0.3.1"]

# @spz-loader/core's bundle takes a Node.js code path that imports modules it does not ship; its
# WebAssembly is embedded, so its browser path works under Node: the script takes that one.
SPZ_LOADER_JS = r"""
process.type = "renderer";
const [,, mod, inp, out, frame] = process.argv;
const { pathToFileURL } = await import("node:url");
const { readFileSync, writeFileSync } = await import("node:fs");
const { loadSpz } = await import(pathToFileURL(mod).href);
const c = await loadSpz(readFileSync(inp), { colorScaleFactor: 1.0, unpackOptions: { coordinateSystem: frame } });
const parts = [c.positions, c.scales, c.rotations, c.alphas, c.colors, c.sh];
writeFileSync(out + ".json", JSON.stringify({ numPoints: c.numPoints, shDegree: c.shDegree, antialiased: c.antialiased }));
writeFileSync(out, Buffer.concat(parts.map(p => Buffer.from(p.buffer, p.byteOffset, p.byteLength))));
"""


def _npm_root() -> Path:
    env = os.environ.get("SPLATDISTILL_NPM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "splatdistill" / "npm"


@pytest.fixture(scope="module")
def tools():
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are needed for the splat-transform / Niantic interop tests")
    root = _npm_root()
    marker = root / "splatdistill-packages.json"
    st_cli = root / "node_modules" / "@playcanvas" / "splat-transform" / "bin" / "cli.mjs"
    loader = root / "node_modules" / "@spz-loader" / "core" / "dist" / "index.js"
    ok = marker.exists() and json.loads(marker.read_text()) == NPM_PACKAGES
    if not (ok and st_cli.exists() and loader.exists()):
        root.mkdir(parents=True, exist_ok=True)
        try:
            r = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--prefix", str(root), *NPM_PACKAGES],
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            pytest.skip("npm install of splat-transform / @spz-loader/core timed out")
        if r.returncode != 0 or not st_cli.exists() or not loader.exists():
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
            pytest.skip(f"npm install of {' '.join(NPM_PACKAGES)} failed: {tail[0]}")
        marker.write_text(json.dumps(NPM_PACKAGES))
    return {"node": node, "st": st_cli, "loader": loader}


def splat_transform(tools, *args, cwd: Path) -> None:
    r = subprocess.run(
        [tools["node"], str(tools["st"]), "-q", "-w", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, f"splat-transform {' '.join(map(str, args))} failed:\n{r.stderr[-2000:]}"


def niantic_decode(tools, path: Path, frame: str = "RDF") -> dict:
    """Niantic's decoder (@spz-loader/core): arrays in our layout (log-scales, wxyz, logits)."""
    script = path.parent / "spz_decode.mjs"
    script.write_text(SPZ_LOADER_JS)
    out = path.with_suffix(".niantic.bin")
    r = subprocess.run(
        [tools["node"], str(script), str(tools["loader"]), str(path), str(out), frame],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    head = json.loads(Path(str(out) + ".json").read_text())
    n, k = head["numPoints"], (head["shDegree"] + 1) ** 2 - 1
    buf, o = np.fromfile(out, dtype="<f4").astype(np.float64), 0
    arrays = {}
    for name, shape in [
        ("means", (n, 3)),
        ("scales", (n, 3)),
        ("quats", (n, 4)),
        ("alpha", (n,)),
        ("color", (n, 3)),
        ("shN", (n, k, 3)),
    ]:
        size = int(np.prod(shape))
        arrays[name] = buf[o : o + size].reshape(shape)
        o += size
    arrays["scales"] = np.log(arrays["scales"])
    arrays["quats"] = np.roll(arrays["quats"], 1, axis=1)  # xyzw -> wxyz
    arrays["sh0"] = arrays.pop("color") - 0.5  # colorScaleFactor 1: colour = sh0 + 0.5
    arrays["antialiased"] = head["antialiased"]
    return arrays


def make_model(n=1000, degree=3, seed=0) -> GaussianScene:
    scene = random_scene(n, degree, seed, extent=2.5, log_scales=(-7.0, -3.0), sh0=1.0, shN=0.3)
    scene.opacities[: n // 30] = 30.0  # alpha 1 after 8-bit quantisation: splat-transform decodes it to +inf
    return scene


def assert_same(
    ours: GaussianScene, theirs: GaussianScene, *, tol=2e-6, alpha_tol=0.25 / 255 + 1e-6, rot_tol=1e-6, what=""
):
    """The same Gaussians, in the same order, up to float32 rounding; alpha within a quarter 8-bit
    step (a byte of 0 or 255 decodes to +-inf in their decoders, a finite logit in ours)."""
    assert len(ours) == len(theirs) and ours.sh_degree == theirs.sh_degree, what
    for k in ("means", "scales", "sh0", "shN"):
        a, b = getattr(ours, k).double(), getattr(theirs, k).double()
        if a.numel():
            assert (a - b).abs().max() <= tol * max(1.0, float(b.abs().max())), (what, k, float((a - b).abs().max()))
    qa = torch.nn.functional.normalize(ours.quats.double(), dim=1)
    qb = torch.nn.functional.normalize(theirs.quats.double(), dim=1)
    assert (1 - (qa * qb).sum(1).abs()).max() <= rot_tol, what
    da = (torch.sigmoid(ours.opacities.double()) - torch.sigmoid(theirs.opacities.double())).abs().max()
    assert da <= alpha_tol, (what, float(da))


def read_their_ply(path: Path, capsys) -> GaussianScene:
    scene = read_ply(path)
    capsys.readouterr()  # their PLYs carry +-inf opacity: one warning, checked where it matters
    return scene


# --- ours read by them -------------------------------------------------------------------------
@pytest.mark.parametrize("degree,version", [(0, 2), (1, 3), (3, 3)])
def test_niantic_decoder_reads_our_spz(tools, tmp_path, degree, version):
    scene = make_model(n=400, degree=degree, seed=degree)
    scene.antialiased = True
    if True:
        path = tmp_path / f"v{version}.spz"
        write_spz(scene, path, version=version)
        theirs = niantic_decode(tools, path, "RDF")  # the spec's RUB file, converted to the PLY frame
        ours = read_spz(path)
        assert theirs["antialiased"] is True
        for k in ("means", "scales", "sh0", "shN"):
            np.testing.assert_allclose(
                theirs[k],
                getattr(ours, k).double().numpy().reshape(theirs[k].shape),
                atol=2e-6,
                err_msg=f"v{version} {k}",
            )
        unit = lambda q: q / np.linalg.norm(q, axis=1, keepdims=True)  # noqa: E731
        dots = (unit(theirs["quats"]) * unit(ours.quats.double().numpy())).sum(1)
        assert np.abs(np.abs(dots) - 1).max() < 1e-5
        # (byte 255 / 0 decode to alpha 1 / 0 there, a quarter step inside here)
        np.testing.assert_allclose(
            theirs["alpha"], torch.sigmoid(ours.opacities.double()).numpy(), atol=0.25 / 255 + 1e-6
        )
        if degree == 3:  # and the file's raw (RUB) values are ours after the flip y, z -> -y, -z
            raw = niantic_decode(tools, path, "UNSPECIFIED")
            np.testing.assert_allclose(raw["means"], theirs["means"] * [1, -1, -1], atol=1e-6)


def test_splat_transform_reads_our_files(tools, tmp_path, capsys):
    """splat-transform decodes each of our files to a PLY holding the Gaussians we decode."""
    scene = make_model(n=1000, degree=3)
    write_ply(scene, tmp_path / "ours.ply")
    write_spz(scene, tmp_path / "ours4.spz")
    write_spz(scene, tmp_path / "ours3.spz", version=3)
    write_compressed_ply(scene, tmp_path / "ours.compressed.ply")
    write_sog(scene, tmp_path / "sogdir" / "meta.json")  # (the .sog zip holds the same files)
    for name in ["ours.ply", "ours4.spz", "ours3.spz", "ours.compressed.ply", "sogdir/meta.json"]:
        splat_transform(tools, name, "dec.ply", cwd=tmp_path)
        theirs = read_their_ply(tmp_path / "dec.ply", capsys)
        ours = load_model(tmp_path / name)
        capsys.readouterr()
        if name == "ours.ply":  # PLY in, PLY out: bit for bit (only +inf... none here: finite)
            for (k, a), (_, b) in zip(ours.items(), theirs.items()):
                assert torch.equal(a, b), k
        else:
            assert_same(ours, theirs, what=name)


# --- theirs read by us -------------------------------------------------------------------------
def test_we_read_splat_transform_files(tools, tmp_path, capsys):
    scene = make_model(n=1000, degree=3, seed=7)
    write_ply(scene, tmp_path / "src.ply")
    splat_transform(tools, "src.ply", "st4.spz", cwd=tmp_path)
    splat_transform(tools, "src.ply", "--spz-version", "3", "st3.spz", cwd=tmp_path)
    splat_transform(tools, "src.ply", "st.compressed.ply", cwd=tmp_path)
    splat_transform(tools, "-g", "cpu", "-i", "2", "src.ply", "st.sog", cwd=tmp_path)
    assert read_spz_header(tmp_path / "st4.spz").version == 4
    assert read_spz_header(tmp_path / "st3.spz").version == 3
    for name in ["st4.spz", "st.compressed.ply", "st.sog"]:
        splat_transform(tools, name, f"{name}.dec.ply", cwd=tmp_path)
        theirs = read_their_ply(tmp_path / f"{name}.dec.ply", capsys)
        assert_same(load_model(tmp_path / name), theirs, what=name)
        if name == "st4.spz":  # versions 3 and 4 hold the same quantised values
            assert_same(load_model(tmp_path / "st3.spz"), theirs, what="st3.spz")
    # and within each format's quantisation of the original (SPZ keeps the order)
    spz4 = load_model(tmp_path / "st4.spz")
    assert_close(spz4.means, scene.means, rtol=0, atol=0.5 / 4096 + 1e-5, what="means")  # 12 fractional bits
    assert_close(spz4.scales, scene.scales, rtol=0, atol=0.5 / 16 + 1e-5, what="scales")
    assert_close(spz4.sh0, scene.sh0, rtol=0, atol=0.5 / (0.15 * 255) + 1e-5, what="sh0")
    # the PLY splat-transform decodes a compressed PLY to: +inf opacity where alpha was 255
    capsys.readouterr()
    plus_inf = read_ply(tmp_path / "st.compressed.ply.dec.ply")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("splatdistill: warning: ") and "dec.ply" in err[0]
    ours = load_model(tmp_path / "st.compressed.ply")
    n_inf = int((torch.sigmoid(ours.opacities.double()) > 1 - 0.5 / 255).sum())  # alpha byte 255
    assert n_inf >= 1000 // 30 and f"{n_inf} with opacity = +inf" in err[0]
    assert torch.isfinite(plus_inf.opacities).all()
    assert_same(ours, plus_inf, what="inf.ply")


def test_splat_transform_reads_every_lod_file(tools, tmp_path):
    """``compress --lod``: splat-transform reads every level's SPZ and PLY back, with that level's count."""
    from splatdistill.compress.pipeline import CompressConfig, compress_model

    src = tmp_path / "scene.ply"
    write_ply(random_scene(2000, degree=3, seed=3), src)
    out = tmp_path / "c"
    cfg = CompressConfig(
        importance_views=3, importance_resolution=32, resolution=32, eval_views=0, lpips=False, progress=False
    )
    compress_model(src, out, None, replace(cfg, lod="1,0.25"))
    for i, n in enumerate((2000, 500)):
        for ext in (".spz", ".ply"):
            back = tmp_path / f"back{i}{ext}.ply"
            splat_transform(tools, out / "lod" / f"lod{i}{ext}", back, cwd=tmp_path)
            assert len(read_ply(back)) == n

"""Compressed PLY and SOG: round trips within each format's quantisation, every SH degree, the
antialiased flag, empty models, detection by content, bad inputs; ``info`` / ``convert`` on every
format through the CLI."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from helpers import assert_close, random_scene
from splatdistill.errors import UserError
from splatdistill.formats.compressed_ply import write_compressed_ply
from splatdistill.formats.io import load_model, save_model
from splatdistill.formats.morton import morton_order
from splatdistill.formats.ply import ply_info, read_ply, write_ply
from splatdistill.formats.sog import kmeans_1d, read_sog, write_sog
from splatdistill.scene.gaussians import GaussianScene

SH_C0 = 0.28209479177387814


def make_scene(n=600, degree=3, seed=0, extent=3.0, sh_palette=None) -> GaussianScene:
    scene = random_scene(n, degree, seed, extent=extent, log_scales=(-8.0, -2.0), sh0=1.5, shN=0.4)
    if sh_palette:  # few distinct SH vectors made of few distinct values (exact in SOG's palette)
        g = torch.Generator().manual_seed(seed)
        levels = torch.linspace(-0.4, 0.4, 9)
        pal = levels[torch.randint(0, 9, (sh_palette, *scene.shN.shape[1:]), generator=g)]
        scene.params["shN"] = pal[torch.randint(0, sh_palette, (n,), generator=g)]
    return scene


def morton_sorted(scene: GaussianScene) -> GaussianScene:
    return scene[torch.as_tensor(morton_order(scene.means.double().numpy()))]


def quat_angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = torch.nn.functional.normalize(a.double(), dim=1)
    b = torch.nn.functional.normalize(b.double(), dim=1)
    return 2 * torch.arccos((a * b).sum(1).abs().clamp(max=1))


# --- compressed PLY ----------------------------------------------------------------------------
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_compressed_ply_round_trip(tmp_path, degree):
    scene = make_scene(n=700, degree=degree, seed=degree)  # 3 chunks, the last one partial
    scene.antialiased = degree == 2
    write_compressed_ply(scene, tmp_path / "m.compressed.ply")
    info = ply_info(tmp_path / "m.compressed.ply")
    assert info["elements"] == ({"chunk": 3, "vertex": 700, "sh": 700} if degree else {"chunk": 3, "vertex": 700})
    back = read_ply(tmp_path / "m.compressed.ply")
    want = morton_sorted(scene)
    assert back.sh_degree == degree and back.antialiased == (degree == 2)
    ext = 6.0  # the chunk ranges are at most the scene's extent
    # half a step of an 10-bit (y) / 11-bit (x, z) fraction of the chunk range
    assert_close(back.means, want.means, rtol=0, atol=0.5 * ext / 1023 + 1e-5, what="means")
    assert_close(back.scales, want.scales, rtol=0, atol=0.5 * 6.0 / 1023 + 1e-5, what="scales")
    color = lambda s: s.sh0 * SH_C0 + 0.5  # noqa: E731
    assert_close(color(back), color(want), rtol=0, atol=0.5 * (3 * SH_C0) / 255 + 1e-6, what="colour")
    assert_close(
        torch.sigmoid(back.opacities), torch.sigmoid(want.opacities), rtol=0, atol=0.5 / 255 + 1e-6, what="alpha"
    )
    assert quat_angle(back.quats, want.quats).max() < 0.01  # 10 bits per smallest-three component
    if degree:
        assert_close(back.shN, want.shN, rtol=0, atol=8 / 256 + 1e-6, what="shN")  # byte = trunc((v/8 + 1/2) 256)


def test_compressed_ply_is_detected_by_content(tmp_path):
    scene = make_scene(n=300, degree=1)
    write_compressed_ply(scene, tmp_path / "a.compressed.ply")
    (tmp_path / "plain_name.ply").write_bytes((tmp_path / "a.compressed.ply").read_bytes())
    a = load_model(tmp_path / "a.compressed.ply")
    b = load_model(tmp_path / "plain_name.ply")
    for (_, x), (_, y) in zip(a.items(), b.items()):
        assert torch.equal(x, y)
    # written back as an ordinary PLY, then compressed again: the same decoded values
    save_model(b, tmp_path / "plain.ply")
    assert ply_info(tmp_path / "plain.ply")["elements"] == {"vertex": 300}


def test_compressed_ply_empty_and_errors(tmp_path):
    write_compressed_ply(random_scene(0, 2), tmp_path / "e.compressed.ply")
    back = read_ply(tmp_path / "e.compressed.ply")
    assert len(back) == 0 and back.sh_degree == 2
    good = make_scene(n=300, degree=0)
    write_compressed_ply(good, tmp_path / "g.ply")
    data = (tmp_path / "g.ply").read_bytes()
    (tmp_path / "cut.ply").write_bytes(data[:-100])
    with pytest.raises(UserError, match="truncated") as e:
        read_ply(tmp_path / "cut.ply")
    assert "cut.ply" in str(e.value)
    (tmp_path / "chunks.ply").write_bytes(data.replace(b"element chunk 2", b"element chunk 1", 1))
    with pytest.raises(UserError, match="chunks"):
        read_ply(tmp_path / "chunks.ply")
    (tmp_path / "type.ply").write_bytes(data.replace(b"property uint packed_scale", b"property int packed_scale", 1))
    with pytest.raises(UserError, match="packed_scale"):
        read_ply(tmp_path / "type.ply")
    nan = good.clone()
    nan.params["means"][0, 0] = float("nan")
    with pytest.raises(UserError, match="NaN"):
        write_compressed_ply(nan, tmp_path / "nan.compressed.ply")


# --- SOG ---------------------------------------------------------------------------------------
def test_kmeans_1d():
    v = np.repeat(np.arange(40, dtype=np.float64) * 0.25, 3)
    code, idx = kmeans_1d(v)
    assert code.shape == (256,) and np.array_equal(code[idx], v)  # fewer values than entries: exact
    rng = np.random.default_rng(0)
    v = rng.normal(size=20000)
    code, idx = kmeans_1d(v)
    assert np.all(np.diff(code) >= 0)
    assert np.abs(code[idx] - v).mean() < 0.01  # (the sparse tails get few entries)
    assert np.array_equal(idx, np.abs(v[:, None] - code[None, :]).argmin(axis=1))  # nearest entry


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sog_round_trip(tmp_path, degree):
    scene = make_scene(n=1200, degree=degree, seed=10 + degree, sh_palette=40)
    scene.antialiased = degree == 1
    write_sog(scene, tmp_path / "m.sog")
    with zipfile.ZipFile(tmp_path / "m.sog") as z:
        meta = json.loads(z.read("meta.json"))
        names = set(z.namelist())
    assert meta["version"] == 2 and meta["count"] == 1200
    assert (meta.get("model") == "antialiased") == (degree == 1)
    want_files = {"meta.json", "means_l.webp", "means_u.webp", "quats.webp", "scales.webp", "sh0.webp"}
    if degree:
        want_files |= {"shN_centroids.webp", "shN_labels.webp"}
        assert meta["shN"]["bands"] == degree
    assert names == want_files
    back = read_sog(tmp_path / "m.sog")
    want = morton_sorted(scene)
    assert back.antialiased == (degree == 1) and back.sh_degree == degree
    # means: 16 bits of the log-transformed range; |d x / d l| = |x| + 1 <= 4
    lrange = 2 * math.log1p(3.0)
    assert_close(back.means, want.means, rtol=0, atol=0.5 * lrange / 65535 * 4 + 1e-5, what="means")
    assert quat_angle(back.quats, want.quats).max() < 0.03  # 8 bits per smallest-three component
    assert_close(
        torch.sigmoid(back.opacities), torch.sigmoid(want.opacities), rtol=0, atol=0.5 / 255 + 1e-6, what="alpha"
    )
    # 256-entry codebooks: every decoded value is a codebook entry, close to the original
    assert (back.scales - want.scales).abs().max() < 0.05
    assert (back.sh0 - want.sh0).abs().max() < 0.03
    assert set(np.unique(back.scales.numpy())) <= set(np.float32(meta["scales"]["codebook"]))
    if degree:  # 40 distinct SH vectors of 9 distinct values: the palette and codebook are exact
        assert torch.allclose(back.shN, want.shN, atol=1e-6)


def test_sog_folder_and_empty(tmp_path):
    scene = make_scene(n=200, degree=2, sh_palette=10)
    written = write_sog(scene, tmp_path / "sogdir")
    assert written == tmp_path / "sogdir" / "meta.json"
    a = read_sog(tmp_path / "sogdir")
    b = read_sog(tmp_path / "sogdir" / "meta.json")
    write_sog(scene, tmp_path / "z.sog")
    c = read_sog(tmp_path / "z.sog")
    for (_, x), (_, y), (_, z) in zip(a.items(), b.items(), c.items()):
        assert torch.equal(x, y) and torch.equal(x, z)
    write_sog(random_scene(0, 3), tmp_path / "e.sog")
    e = read_sog(tmp_path / "e.sog")
    assert len(e) == 0


def test_sog_errors(tmp_path):
    write_sog(make_scene(n=100, degree=1, sh_palette=5), tmp_path / "d")
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    (tmp_path / "d" / "quats.webp").unlink()
    with pytest.raises(UserError, match="quats.webp"):
        read_sog(tmp_path / "d")
    for _name, m in [
        ("v1", {k: v for k, v in meta.items() if k != "version"}),
        ("v9", dict(meta, version=9)),
        ("count", dict(meta, count=10**6)),
        ("codebook", dict(meta, scales={"codebook": [1, 2], "files": ["scales.webp"]})),
    ]:
        (tmp_path / "d" / "meta.json").write_text(json.dumps(m))
        with pytest.raises(UserError):
            read_sog(tmp_path / "d")
    (tmp_path / "bad.sog").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError):
        read_sog(tmp_path / "bad.sog")
    with zipfile.ZipFile(tmp_path / "nometa.sog", "w") as z:
        z.writestr("x.txt", "hi")
    with pytest.raises(UserError, match="meta.json"):
        read_sog(tmp_path / "nometa.sog")


# --- every format through the CLI --------------------------------------------------------------
OUTPUTS = ["m.ply", "m.compressed.ply", "m.spz", "m.sdz", "m.sog", "sogdir/meta.json"]


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_cli_convert_and_info_every_format(tmp_path, capsys, degree):
    scene = make_scene(n=300, degree=degree, seed=degree, sh_palette=8)
    scene.antialiased = True
    write_ply(scene, tmp_path / "src.ply")
    for out in OUTPUTS:
        code, stdout, err = run_cli(capsys, "convert", tmp_path / "src.ply", tmp_path / out)
        assert code == 0 and err == "", err
        assert "300 Gaussians" in stdout and f"SH degree {degree}" in stdout
        src = tmp_path / out if not out.endswith("meta.json") else tmp_path / "sogdir"
        code, stdout, err = run_cli(capsys, "info", "--json", src)
        assert code == 0, err
        d = json.loads(stdout)
        fmt = {"m.ply": "ply", "m.compressed.ply": "compressed_ply", "m.spz": "spz", "m.sdz": "sdz"}.get(out, "sog")
        assert (d["format"], d["num_gaussians"], d["sh_degree"], d["antialiased"]) == (fmt, 300, degree, True)
        # and back to an Inria PLY: the same count, degree and flag
        code, _, err = run_cli(capsys, "convert", src, tmp_path / "back.ply")
        assert code == 0, err
        back = read_ply(tmp_path / "back.ply")
        assert (len(back), back.sh_degree, back.antialiased) == (300, degree, True)
        assert (back.means.mean(0) - scene.means.mean(0)).abs().max() < 0.01


def test_cli_spz_version(tmp_path, capsys):
    from splatdistill.formats.spz import read_spz_header

    write_ply(make_scene(n=50, degree=1), tmp_path / "s.ply")
    for v in (2, 3, 4):
        code, _, err = run_cli(capsys, "convert", tmp_path / "s.ply", tmp_path / f"v{v}.spz", "--spz-version", v)
        assert code == 0, err
        assert read_spz_header(tmp_path / f"v{v}.spz").version == v
    code, _, _ = run_cli(capsys, "convert", tmp_path / "s.ply", tmp_path / "d.spz")
    assert read_spz_header(tmp_path / "d.spz").version == 4
    code, _, err = run_cli(capsys, "convert", tmp_path / "s.ply", tmp_path / "x.ply", "--spz-version", 3)
    assert_one_line_error(code, err, "x.ply", "spz-version")
    code, _, err = run_cli(capsys, "convert", tmp_path / "s.ply", tmp_path / "x.obj")
    assert_one_line_error(code, err, "x.obj", "unknown output format")


def test_render_and_eval_take_every_format(tmp_path, capsys, demo_scene_dir):
    """The commands that take a model load it through load_model: each format renders exactly like
    its own decode written as a plain PLY; eval takes a SOG folder."""
    from PIL import Image

    scene = make_scene(n=200, degree=1, extent=0.5, sh_palette=4)
    for name in ["m.compressed.ply", "m.sog", "m.spz"]:
        save_model(scene, tmp_path / name)
        save_model(load_model(tmp_path / name), tmp_path / f"{name}.plain.ply")
        imgs = []
        for src in (name, f"{name}.plain.ply"):
            code, _, err = run_cli(
                capsys,
                "render",
                tmp_path / src,
                "--out",
                tmp_path / f"r_{src}",
                "--orbit",
                1,
                "--width",
                24,
                "--height",
                24,
                "--backend",
                "cpu",
                "--device",
                "cpu",
            )
            assert code == 0, err
            pngs = sorted((tmp_path / f"r_{src}").glob("*.png"))
            assert len(pngs) == 1
            imgs.append(np.asarray(Image.open(pngs[0])))
        assert np.array_equal(imgs[0], imgs[1]), name
    write_sog(scene, tmp_path / "sogdir")
    for src in ("sogdir", "sogdir.plain.ply"):
        if src.endswith(".ply"):
            save_model(load_model(tmp_path / "sogdir"), tmp_path / src)
        code, out, err = run_cli(
            capsys,
            "eval",
            tmp_path / src,
            "--data",
            demo_scene_dir,
            "--device",
            "cpu",
            "--backend",
            "cpu",
            "--no-lpips",
            "--json",
        )
        assert code == 0, err
        imgs.append(json.loads(out.strip().splitlines()[-1]))
    a, b = imgs[-2], imgs[-1]
    assert a["psnr"] == b["psnr"] and a["num_gaussians"] == b["num_gaussians"] == 200


def test_compress_takes_other_formats_keeps_the_flag_and_spz_version(tmp_path, capsys):
    """compress reads a compressed PLY; its outputs keep the antialiased flag; --spz-version 3."""
    from splatdistill.formats.spz import read_spz_header

    scene = make_scene(n=400, degree=2, extent=0.5)
    scene.antialiased = True
    write_compressed_ply(scene, tmp_path / "in.compressed.ply")
    code, _, err = run_cli(
        capsys,
        "compress",
        tmp_path / "in.compressed.ply",
        "--out",
        tmp_path / "out",
        "--iterations",
        2,
        "--views",
        2,
        "--resolution",
        16,
        "--no-lpips",
        "--device",
        "cpu",
        "--spz-version",
        3,
    )
    assert code == 0, err
    assert read_spz_header(tmp_path / "out" / "model.spz").version == 3
    for name in ("model.sdz", "model.ply", "model.spz"):
        assert load_model(tmp_path / "out" / name).antialiased, name

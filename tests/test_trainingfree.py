"""Training-free compression: moment-matched merges, the closed-form SH fit, fast k-means, the
forward-only importance, the packed codec, the whole path end to end and the LOD ladder."""

import json

import numpy as np
import pytest
import torch

from helpers import box_scene
from splatdistill.compress.merge import (
    covariances,
    masses,
    merge_pairs,
    plan_reduction,
    quat_to_rotmat,
    reduce_gaussians,
    rotmat_to_quat,
)
from splatdistill.compress.pipeline import CompressConfig, compress_model
from splatdistill.compress.shfit import fit_lower_bands
from splatdistill.compress.trainingfree import blend_weights, parse_lod
from splatdistill.errors import UserError
from splatdistill.formats.kmeans import kmeans, scalar_assign, scalar_codebook
from splatdistill.formats.packed import decode_packed, encode_packed, from_smallest_three, smallest_three
from splatdistill.formats.ply import read_ply, write_ply
from splatdistill.formats.sdz import load_sdz
from splatdistill.scene.gaussians import GaussianScene
from splatdistill.scene.sh import sh_basis


def jittered(n=400, degree=3, opacity=0.5):
    """``box_scene`` with anisotropic Gaussians and view-dependent colour, as these tests use it."""
    return box_scene(n, degree, opacity=opacity, sh_std=0.1, jitter=0.3)


def np_params(s):
    return {k: v.detach().numpy().astype(np.float32) for k, v in s.items()}


# ---- merge ----------------------------------------------------------------------------------------------
def test_rotation_round_trip():
    q = np.random.default_rng(0).normal(size=(500, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    back = rotmat_to_quat(quat_to_rotmat(q))
    assert np.allclose(back, q, atol=1e-9)
    r = quat_to_rotmat(q)
    assert np.allclose(r @ r.transpose(0, 2, 1), np.eye(3), atol=1e-12) and np.allclose(np.linalg.det(r), 1)


def test_merge_preserves_mass_and_moments():
    s = jittered(60, opacity=0.05)  # faint: the merged opacity stays below its clip
    p = np_params(s)
    i, j = np.arange(0, 60, 2), np.arange(1, 60, 2)
    m = merge_pairs(p, i, j)
    alpha = lambda o: 1 / (1 + np.exp(-o.astype(np.float64)))  # noqa: E731
    mi, mj = masses(p["scales"][i], alpha(p["opacities"][i])), masses(p["scales"][j], alpha(p["opacities"][j]))
    mm = masses(m["scales"], alpha(m["opacities"]))
    assert np.allclose(mm, mi + mj, rtol=1e-4)  # zeroth moment (mass)
    mu_i, mu_j = p["means"][i].astype(np.float64), p["means"][j].astype(np.float64)
    first = (mi[:, None] * mu_i + mj[:, None] * mu_j) / (mi + mj)[:, None]
    assert np.allclose(m["means"], first, atol=1e-5)  # first moment
    # second moment of the mixture about the origin, E[x x^T] = Sigma + mu mu^T
    ci, cj = covariances(p["quats"][i], p["scales"][i]), covariances(p["quats"][j], p["scales"][j])
    outer = lambda v: v[:, :, None] * v[:, None, :]  # noqa: E731
    second = (mi[:, None, None] * (ci + outer(mu_i)) + mj[:, None, None] * (cj + outer(mu_j))) / (mi + mj)[
        :, None, None
    ]
    cm = covariances(m["quats"], m["scales"])
    got = cm + outer(m["means"].astype(np.float64))
    assert np.allclose(got, second, rtol=2e-4, atol=1e-7)
    # colours: mass-weighted means
    w = (mi / (mi + mj))[:, None, None]
    assert np.allclose(m["shN"], w * p["shN"][i] + (1 - w) * p["shN"][j], atol=1e-6)


def test_merge_of_a_gaussian_with_itself_doubles_its_mass_in_place():
    p = np_params(jittered(10, opacity=0.05))
    m = merge_pairs(p, np.arange(10), np.arange(10))
    assert np.allclose(m["means"], p["means"], atol=1e-6)
    assert np.allclose(covariances(m["quats"], m["scales"]), covariances(p["quats"], p["scales"]), rtol=1e-4, atol=1e-9)
    a = 1 / (1 + np.exp(-p["opacities"].astype(np.float64)))
    am = 1 / (1 + np.exp(-m["opacities"].astype(np.float64)))
    assert np.allclose(am, 2 * a, rtol=1e-4)


def test_plan_reduction_counts_and_prefers_merging_duplicates():
    s = jittered(300)
    p = np_params(s)
    # 50 exact duplicates of the first 50 Gaussians: merging them costs nothing
    p = {k: np.concatenate([v, v[:50]]) for k, v in p.items()}
    imp = np.ones(350)
    keep, i, j, info = plan_reduction(p, imp, 300)
    assert len(keep) + len(i) == 300 and info["merged"] + info["pruned"] == 50
    assert info["merged"] == 50
    assert set(map(tuple, np.sort(np.stack([i, j], 1), 1))) == {(k, 300 + k) for k in range(50)}
    q, qimp, _ = reduce_gaussians(p, imp, 120)
    assert len(qimp) == 120 and all(len(v) == 120 for v in q.values())
    keep, i, j, info = plan_reduction(p, np.arange(350.0), 200, merge=False)  # pruning only: the least important go
    assert len(i) == 0 and np.array_equal(keep, np.arange(150, 350))
    keep, i, j, info = plan_reduction(p, imp, 400)  # nothing to remove
    assert len(keep) == 350 and info["merged"] == info["pruned"] == 0


def test_large_reduction_prunes_merged_unimportant_pairs_before_important_gaussians():
    # 100 important Gaussians far apart, 200 close pairs of unimportant ones. Keeping 100 must keep
    # the important ones: merging the cheap pairs first uses both of each pair up while removing only
    # one, so a greedy that cannot prune a merged Gaussian afterwards ran out of cheap operations and
    # deleted the important ones (a distilled student at the small preset fell from 34 to 15 dB).
    rng = np.random.default_rng(3)
    important = jittered(100)
    p = np_params(important)
    p["means"] = (rng.permutation(1000)[:100, None] * np.array([[1.0, 0.0, 0.0]])).astype(np.float32)
    p["scales"] = np.full((100, 3), np.log(0.05), np.float32)
    pair = {k: np.repeat(v[:1], 400, axis=0) for k, v in p.items()}
    pair["means"] = np.repeat(rng.normal(size=(200, 3)) * 300 + 2000, 2, axis=0).astype(np.float32)
    pair["means"][1::2] += 0.001
    q = {k: np.concatenate([p[k], pair[k]]) for k in p}
    imp = np.concatenate([np.full(100, 10.0), np.full(400, 0.01)])
    keep, i, j, info = plan_reduction(q, imp, 100)
    assert len(keep) + len(i) == 100 and info["merged"] + info["pruned"] == 400
    assert np.array_equal(np.sort(keep), np.arange(100)) and len(i) == 0
    keep, i, j, info = plan_reduction(q, imp, 300)  # room for every merged pair: they all survive merged
    assert info["merged"] == 200 and np.array_equal(np.sort(keep), np.arange(100))


# ---- SH fit ---------------------------------------------------------------------------------------------
def _dirs_basis(means, centers, deg):
    d = torch.as_tensor(means[:, None, :] - centers[None], dtype=torch.float64)
    return sh_basis(deg, d).numpy()


@pytest.mark.parametrize("low", [0, 1, 2])
def test_sh_fit_is_exact_when_the_higher_bands_are_zero(low):
    rng = np.random.default_rng(low)
    n, kl = 50, (low + 1) ** 2
    sh = np.zeros((n, 16, 3), np.float32)
    sh[:, :kl] = rng.normal(size=(n, kl, 3))
    means, centers = rng.normal(size=(n, 3)), 4 * rng.normal(size=(7, 3))
    for rho in (0.0, 0.5, 5.0):
        got = fit_lower_bands(means, sh, low, centers, rho=max(rho, 1e-9))
        assert np.allclose(got, sh[:, :kl], atol=1e-5)


def test_sh_fit_is_the_least_squares_optimum():
    rng = np.random.default_rng(1)
    n = 20
    sh = rng.normal(size=(n, 16, 3)).astype(np.float32)
    means, centers = rng.normal(size=(n, 3)), 4 * rng.normal(size=(24, 3))
    got = fit_lower_bands(means, sh, 1, centers, rho=0.0)
    y = _dirs_basis(means, centers, 3)
    for g in range(n):
        target = y[g] @ sh[g].astype(np.float64)  # (V, 3) colours of degree 3
        ref = np.linalg.lstsq(y[g][:, :4], target, rcond=None)[0]
        assert np.allclose(got[g], ref, atol=1e-4)

    # better than truncation on the views, and the whole-sphere prior pulls towards truncation
    def err(x):
        return sum(float(((y[g][:, :4] @ x[g] - y[g] @ sh[g]) ** 2).sum()) for g in range(n))

    assert err(got) < err(sh[:, :4])
    strong = fit_lower_bands(means, sh, 1, centers, rho=1e6)
    assert np.allclose(strong, sh[:, :4], atol=1e-3)


# ---- k-means ---------------------------------------------------------------------------------------------
def _distortion(x, cb, lab):
    return float(((x - cb[lab]) ** 2).sum(1).mean())


@pytest.mark.parametrize("two_level", [False, True])
def test_kmeans_quality_against_scipy(two_level):
    from scipy.cluster.vq import kmeans2

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(400, 12))
    x = (centres[rng.integers(0, 400, 20000)] + 0.2 * rng.normal(size=(20000, 12))).astype(np.float32)
    cb, lab = kmeans(x, 256, two_level=two_level)
    assert lab.min() >= 0 and lab.max() < len(cb) <= 256
    ref_cb, ref_lab = kmeans2(x.astype(np.float64), 256, iter=20, minit="++", seed=0)
    ours, ref = _distortion(x, cb, lab), _distortion(x, ref_cb, ref_lab)
    assert ours <= (1.10 if not two_level else 1.30) * ref, (ours, ref)  # 8 Lloyd iterations vs 20
    # far better than a random codebook of the same size
    rand = x[rng.choice(len(x), 256, replace=False)]
    from splatdistill.formats.kmeans import assign

    assert ours < 0.8 * _distortion(x, rand, assign(x, rand))


def test_kmeans_edge_cases():
    cb, lab = kmeans(np.zeros((0, 5), np.float32), 8)
    assert cb.shape == (0, 5) and lab.shape == (0,)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    cb, lab = kmeans(x, 10)  # k capped at N: every point its own codeword
    assert np.allclose(cb[lab], x)
    lv = scalar_codebook(np.array([1.0, 1.0, 2.0]), 256)
    assert np.allclose(lv[scalar_assign(np.array([2.0, 1.0]), lv)], [2.0, 1.0])


# ---- importance ------------------------------------------------------------------------------------------
def test_forward_blend_weights_match_the_backward_pass():
    from splatdistill.compress.pipeline import CompressConfig, sample_cameras
    from splatdistill.ops.importance import accumulated_weights

    s = jittered(500, opacity=0.3)
    cams, _, _ = sample_cameras(s, CompressConfig(views=3, resolution=40))
    ref = accumulated_weights(s, cams, backend="cpu").numpy()
    got = blend_weights(s, cams)
    assert got.max() > 0 and np.allclose(got, ref, rtol=1e-4, atol=1e-5)


# ---- packed codec ----------------------------------------------------------------------------------------
def test_smallest_three_round_trip():
    q = np.random.default_rng(0).normal(size=(1000, 4))
    big, codes = smallest_three(q, 12)
    back = from_smallest_three(big, codes, 12)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dots = np.abs((back * qn).sum(1))
    assert np.all(dots > 1 - 1e-5)


def _sources(decoded, scene):
    """``scene`` in the decoded file's order (a permutation along the Morton curve): each decoded
    Gaussian matched to its nearest source, which must be a bijection."""
    idx = torch.cdist(decoded.means.double(), scene.means.double()).argmin(1)
    assert len(set(idx.tolist())) == len(scene)
    return scene[idx]


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_packed_codec_every_degree_and_empty(degree, tmp_path):
    from splatdistill.formats.container import write_container

    s = jittered(700, degree=degree)
    sections, meta = encode_packed(s, vq_size=64, opacity_bits=10)
    d = decode_packed(sections, meta)
    assert len(d) == 700 and d.sh_degree == degree
    ref = _sources(d, s)
    assert torch.allclose(d.means, ref.means, atol=1e-4)  # 16-bit log-uniform codes on a unit box
    assert torch.allclose(torch.sigmoid(d.opacities), torch.sigmoid(ref.opacities), atol=0.5 / 1023 + 1e-6)
    qr = ref.quats / ref.quats.norm(dim=1, keepdim=True)
    assert ((d.quats * qr).sum(1).abs() > 0.995).all()  # 8-bit smallest three
    from splatdistill.formats.quantize import dequantize, quantize

    for name in ("scales", "sh0"):  # the 256-level codebook beats 8-bit uniform codes in RMS error
        x = ref.params[name].numpy().reshape(700, 3)
        lo, hi = x.min(), x.max()
        codes, qlo, qhi = quantize(x.reshape(-1, 1), 8, lo=np.array([lo]), hi=np.array([hi]))
        uni = dequantize(codes, qlo, qhi, 8).reshape(x.shape)
        rms = float(np.sqrt(((d.params[name].numpy().reshape(700, 3) - x) ** 2).mean()))
        assert rms <= float(np.sqrt(((uni - x) ** 2).mean())), name
    write_container(tmp_path / "m.sdz", sections, meta)
    back = load_sdz(tmp_path / "m.sdz")  # through the container and the codec's dispatch
    for k, v in back.items():
        assert torch.equal(v, d.params[k]), k
    empty = GaussianScene(
        *(torch.zeros((0,) + sh) for sh in ((3,), (4,), (3,), (), (1, 3), ((degree + 1) ** 2 - 1, 3)))
    )
    e = decode_packed(*encode_packed(empty))
    assert len(e) == 0 and e.sh_degree == degree


def test_packed_rejects_corrupt_sections():
    sections, meta = encode_packed(jittered(100), vq_size=16)
    bad = dict(sections, quats_index=np.full(100, 7, np.uint8))
    with pytest.raises(UserError, match="quaternion index"):
        decode_packed(bad, meta)
    bad = dict(sections)
    del bad["opacities"]
    with pytest.raises(UserError, match="missing"):
        decode_packed(bad, meta)


def test_packed_positions_as_sorted_morton_gaps(tmp_path):
    """Positions are stored as gaps between sorted Morton codes: smaller than the per-axis differences
    along the curve on a clustered scene, files with those differences (written before) still decode to
    the same scene, and a corrupt gap is a user error."""
    from helpers import clustered_scene
    from splatdistill.formats.container import encode_container
    from splatdistill.formats.morton import deinterleave

    s = clustered_scene(3000, degree=1)
    sections, meta = encode_packed(s, vq_size=64, position_bits=12)
    assert meta["attributes"]["means"]["encoding"] == "sog_log_uniform_morton_gaps"
    keys = np.cumsum(sections["means_gaps"], dtype=np.uint64)
    assert (np.diff(keys.astype(np.float64)) >= 0).all()  # the file is sorted along the curve
    codes = deinterleave(keys).astype(np.int64)
    legacy = {k: v for k, v in sections.items() if k != "means_gaps"}
    legacy["means_delta"] = (np.diff(codes, axis=0, prepend=np.zeros((1, 3), np.int64)) % (1 << 16)).astype(np.uint16)
    old_meta = json.loads(json.dumps(meta))
    old_meta["attributes"]["means"]["encoding"] = "sog_log_uniform_delta"
    new, old = decode_packed(sections, meta), decode_packed(legacy, old_meta)
    for k, v in new.items():
        assert torch.equal(v, old.params[k]), k
    size = lambda name, sec: len(encode_container({name: sec[name]}))  # noqa: E731
    assert size("means_gaps", sections) < 0.9 * size("means_delta", legacy)
    bad = dict(sections, means_gaps=sections["means_gaps"].copy())
    bad["means_gaps"][5] = np.uint64(1 << 40)
    with pytest.raises(UserError, match="beyond"):
        decode_packed(bad, meta)
    wrap = dict(sections, means_gaps=np.full(len(s), (1 << 36) - 1, np.uint64))  # each valid, the sum too big
    with pytest.raises(UserError, match="beyond their bit count"):
        decode_packed(wrap, meta)
    unknown = json.loads(json.dumps(meta))
    unknown["attributes"]["means"]["encoding"] = "nope"
    with pytest.raises(UserError, match="unknown position encoding"):
        decode_packed(sections, unknown)


def test_packed_codebook_levels():
    s = jittered(700, degree=1)
    err = {}
    for levels in (16, 256, 1024):
        sections, meta = encode_packed(s, vq_size=64, codebook_levels=levels)
        d = decode_packed(sections, meta)
        x = _sources(d, s)
        for name in ("scales", "sh0", "shN_levels"):
            table = sections[name if name == "shN_levels" else f"{name}_codebook"]
            assert 1 < len(table) <= levels, name
        for name in ("scales", "sh0"):
            assert sections[name].dtype == (np.uint8 if levels <= 256 else np.uint16), name
            assert np.isin(d.params[name].numpy().reshape(-1), sections[f"{name}_codebook"]).all(), name
        err[levels] = float((d.scales - x.scales).square().mean())
    assert err[1024] < err[256] < err[16]  # finer tables, finer values
    for bad in (1, 65537):
        with pytest.raises(ValueError, match="codebook_levels"):
            encode_packed(s, codebook_levels=bad)


# ---- end to end ------------------------------------------------------------------------------------------
FAST_TF = dict(importance_views=3, importance_resolution=32, eval_views=2, resolution=32, lpips=False, progress=False)


@pytest.fixture(scope="module")
def small_ply(tmp_path_factory):
    p = tmp_path_factory.mktemp("tf") / "scene.ply"
    write_ply(jittered(2000), p)
    return p


def test_training_free_compress_end_to_end(small_ply, tmp_path):
    out = tmp_path / "c"
    s = compress_model(small_ply, out, None, CompressConfig(**FAST_TF))
    assert s["mode"] == "training-free"
    assert s["num_gaussians"] == 2000 - round(0.66 * 2000) and s["sh_degree"] == 2
    decoded = load_sdz(out / "model.sdz")
    for k, v in read_ply(out / "model.ply").items():
        assert torch.equal(v, decoded.params[k]), k
    summary = json.loads((out / "summary.json").read_text())
    for st in ("load", "importance", "reduce", "sh_fit", "encode", "evaluate"):
        rec = summary["stage_metrics"][st]
        assert rec["seconds"] >= 0 and rec["peak_rss_bytes"] > 0
    assert summary["stages"]["reduce"]["merged"] + summary["stages"]["reduce"]["pruned"] == 2000 - 680
    assert np.isfinite(s["psnr"]) and s["psnr"] > 15
    assert s["output_bytes"] < s["input_bytes"] / 5
    # no renders: opacity x volume
    s0 = compress_model(small_ply, tmp_path / "c0", None, CompressConfig(**{**FAST_TF, "importance_views": 0}))
    assert s0["data_free_views"]["importance"] == 0 and s0["num_gaussians"] == 680


def test_refine_runs_the_fine_tune(small_ply, tmp_path):
    s = compress_model(
        small_ply, tmp_path / "r", None, CompressConfig(**{**FAST_TF, "refine": 3, "views": 3, "quality": "small"})
    )
    assert s["mode"] == "training-free+refine" and s["stages"]["refine"]["loss"] is not None
    assert s["num_gaussians"] == 400 and s["sh_degree"] == 1


def test_lod_ladder(small_ply, tmp_path):
    out = tmp_path / "l"
    s = compress_model(small_ply, out, None, CompressConfig(**{**FAST_TF, "lod": "1,0.5,0.25,0.1", "eval_views": 0}))
    meta = json.loads((out / "lod" / "lod.json").read_text())
    counts = [lv["num_gaussians"] for lv in meta["levels"]]
    assert counts == [2000, 1000, 500, 200] and [lv["share"] for lv in meta["levels"]] == [1.0, 0.5, 0.25, 0.1]
    for i, c in enumerate(counts):
        assert len(load_sdz(out / "lod" / f"lod{i}.sdz")) == c
        assert len(read_ply(out / "lod" / f"lod{i}.ply")) == c
        assert (out / "lod" / f"lod{i}.spz").is_file()
    assert s["num_gaussians"] == 2000
    sizes = [lv["sdz_bytes"] for lv in meta["levels"]]
    assert sizes == sorted(sizes, reverse=True)


def test_codec_flags_coarsen_the_sdz_of_the_same_gaussians(small_ply, tmp_path, capsys):
    from conftest import run_cli
    from splatdistill.formats.container import read_container_header

    args = ["compress", small_ply, "--importance-views", "2", "--resolution", "24", "--no-lpips", "--eval-views", "2"]
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "d")
    assert code == 0, err
    coarse = ["--position-bits", "10", "--rotation-bits", "5", "--opacity-bits", "6", "--codebook-levels", "16"]
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "c", *coarse)
    assert code == 0, err
    attrs = read_container_header(tmp_path / "c" / "model.sdz")["meta"]["attributes"]
    assert (attrs["means"]["bits"], attrs["quats"]["bits"], attrs["opacities"]["bits"]) == (10, 5, 6)
    d, c = load_sdz(tmp_path / "d" / "model.sdz"), load_sdz(tmp_path / "c" / "model.sdz")
    assert len(c) == len(d) and c.sh_degree == d.sh_degree
    assert len(np.unique(c.scales.numpy())) <= 16 < len(np.unique(d.scales.numpy()))
    assert len(np.unique(torch.sigmoid(c.opacities).numpy().round(6))) <= 64
    # the codec settings change only the .sdz: the reduced Gaussians (their .spz) are the same
    assert (tmp_path / "c" / "model.spz").read_bytes() == (tmp_path / "d" / "model.spz").read_bytes()
    sc = json.loads((tmp_path / "c" / "summary.json").read_text())
    sd = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert sc["output_bytes"] < sd["output_bytes"] and sc["psnr"] < sd["psnr"]
    # the preset's codec is the default (balanced: 14-bit positions, 7-bit rotations, 9-bit opacity), a flag wins
    from splatdistill.compress.trainingfree import CODEC

    dattrs = read_container_header(tmp_path / "d" / "model.sdz")["meta"]["attributes"]
    assert (dattrs["means"]["bits"], dattrs["quats"]["bits"], dattrs["opacities"]["bits"]) == (14, 7, 9)
    assert CODEC["balanced"] == {"position_bits": 14, "quat_bits": 7, "codebook_levels": 128, "opacity_bits": 9}
    assert len(np.unique(d.scales.numpy())) <= 128


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--position-bits", "7"),
        ("--position-bits", "17"),
        ("--rotation-bits", "3"),
        ("--opacity-bits", "17"),
        ("--codebook-levels", "1"),
        ("--codebook-levels", "65537"),
    ],
)
def test_codec_flag_ranges(small_ply, tmp_path, capsys, flag, value):
    from conftest import assert_one_line_error, run_cli

    code, _, err = run_cli(capsys, "compress", small_ply, "--out", tmp_path / "e", flag, value)
    assert_one_line_error(code, err, flag)
    assert not (tmp_path / "e").exists()


def test_lod_and_flag_errors(small_ply, tmp_path, capsys):
    from conftest import assert_one_line_error, run_cli

    assert parse_lod("0.25,1,0.5") == [1.0, 0.5, 0.25] and parse_lod(None) is None
    for bad in ("0", "1,x", "1.5"):
        with pytest.raises(UserError, match="--lod"):
            parse_lod(bad)
    code, _, err = run_cli(capsys, "compress", small_ply, "--out", tmp_path / "e", "--lod", "2")
    assert_one_line_error(code, err, "--lod")
    assert not (tmp_path / "e").exists()


def test_sh_fit_kernel_matches_the_torch_reference():
    rng = np.random.default_rng(3)
    sh = rng.normal(size=(300, 16, 3)).astype(np.float32)
    means, centers = rng.normal(size=(300, 3)), 4 * rng.normal(size=(8, 3))
    for deg in (0, 1, 2):
        a = fit_lower_bands(means, sh, deg, centers)
        b = fit_lower_bands(means, sh, deg, centers, reference=True)
        assert np.allclose(a, b, atol=1e-5), deg


def test_pair_dissimilarity_kernel_matches_numpy():
    from splatdistill.compress.merge import bhattacharyya_coefficient
    from splatdistill.compress.merge import pair_dissimilarity as _pair_dissimilarity
    from splatdistill.scene.sh import C0

    p = np_params(jittered(200))
    a, b = np.arange(100), np.arange(100, 200)
    rgb = p["sh0"][:, 0].astype(np.float64) * C0
    got = np.empty(100)
    _pair_dissimilarity(
        p["means"].astype(np.float64),
        p["quats"].astype(np.float64),
        p["scales"].astype(np.float64),
        rgb,
        a,
        b,
        0.1,
        got,
    )
    bc = bhattacharyya_coefficient(
        p["means"][a].astype(np.float64),
        covariances(p["quats"][a], p["scales"][a]),
        p["means"][b].astype(np.float64),
        covariances(p["quats"][b], p["scales"][b]),
    )
    ref = 1 - bc * np.exp(-((rgb[a] - rgb[b]) ** 2).sum(1) / (2 * 0.1**2))
    assert np.allclose(got, ref, atol=1e-9)
    # identical Gaussians of one colour: dissimilarity 0
    same = np.empty(1)
    _pair_dissimilarity(
        p["means"].astype(np.float64),
        p["quats"].astype(np.float64),
        p["scales"].astype(np.float64),
        rgb,
        a[:1],
        a[:1],
        0.1,
        same,
    )
    assert abs(same[0]) < 1e-9


def test_cli_training_free_default_and_opt_out(small_ply, tmp_path, capsys):
    from conftest import run_cli

    code, out, err = run_cli(
        capsys,
        "compress",
        small_ply,
        "--out",
        tmp_path / "a",
        "--importance-views",
        "2",
        "--resolution",
        "24",
        "--no-lpips",
        "--no-spz",
        "--quality",
        "small",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["mode"] == "training-free"
    assert "splatdistill: reduce: 2,000 -> 400 Gaussians" in err  # per-stage progress with its counts
    code, out, err = run_cli(
        capsys,
        "compress",
        small_ply,
        "--out",
        tmp_path / "b",
        "--no-training-free",
        "--iterations",
        "1",
        "--views",
        "2",
        "--resolution",
        "16",
        "--no-lpips",
        "--no-spz",
        "--quality",
        "small",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["mode"] == "data-free"


def test_cli_compress_without_evaluation_writes_its_outputs(small_ply, tmp_path, capsys):
    """``--eval-views 0`` renders nothing to score: the command still finishes and says so."""
    from conftest import run_cli

    out = tmp_path / "o"
    code, stdout, err = run_cli(
        capsys,
        "compress",
        small_ply,
        "--importance-views",
        "2",
        "--resolution",
        "24",
        "--eval-views",
        "0",
        "--out",
        out,
    )
    assert code == 0, err
    assert "not evaluated (--eval-views 0)" in stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["psnr"] is None and s["num_gaussians"] == len(load_sdz(out / "model.sdz"))

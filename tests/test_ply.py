"""The Inria 3DGS PLY layout: bit-exact round trips, foreign files, and every error a user can cause."""

from __future__ import annotations

import warnings

import numpy as np
import plyfile
import pytest
import torch

from helpers import random_scene
from splatdistill.errors import UserError
from splatdistill.formats.ply import ply_info, property_names, read_ply, write_ply
from splatdistill.scene.gaussians import GaussianScene


def assert_bit_equal(a: GaussianScene, b: GaussianScene) -> None:
    for (name, x), (_, y) in zip(a.items(), b.items()):
        assert x.dtype == y.dtype == torch.float32, name
        assert x.shape == y.shape, name
        assert torch.isfinite(y).all(), name
        # torch.equal treats -0.0 == 0.0; compare the bit patterns
        assert torch.equal(x.contiguous().view(torch.int32), y.contiguous().view(torch.int32)), name


def inria_array(
    scene: GaussianScene, extra: dict | None = None, dtypes: dict | None = None, order: list[str] | None = None
) -> np.ndarray:
    """The vertex records as the Inria ``save_ply`` builds them (plyfile, 'f4'), plus extras."""
    p = scene.numpy()
    n = len(scene)
    k1 = p["shN"].shape[1]
    cols = {"x": p["means"][:, 0], "y": p["means"][:, 1], "z": p["means"][:, 2]}
    cols.update({k: np.zeros(n, np.float32) for k in ("nx", "ny", "nz")})
    cols.update({f"f_dc_{c}": p["sh0"][:, 0, c] for c in range(3)})
    rest = p["shN"].transpose(0, 2, 1).reshape(n, 3 * k1)
    cols.update({f"f_rest_{i}": rest[:, i] for i in range(3 * k1)})
    cols["opacity"] = p["opacities"]
    cols.update({f"scale_{i}": p["scales"][:, i] for i in range(3)})
    cols.update({f"rot_{i}": p["quats"][:, i] for i in range(4)})
    cols.update(extra or {})
    names = order or list(cols)
    dtypes = dtypes or {}
    arr = np.empty(n, dtype=[(k, dtypes.get(k, cols[k].dtype.str)) for k in names])
    for k in names:
        arr[k] = cols[k]
    return arr


def write_foreign(
    path, arr: np.ndarray, text: bool = False, byte_order: str = "<", elements: list | None = None
) -> None:
    el = plyfile.PlyElement.describe(arr, "vertex")
    plyfile.PlyData(list(elements or []) + [el], text=text, byte_order=byte_order).write(str(path))


# --- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_bit_exact(tmp_path, degree):
    scene = random_scene(257, degree, seed=degree, wide=True, extremes=True)
    path = write_ply(scene, tmp_path / "s.ply")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file of our own reads without warnings
        back = read_ply(path)
    assert back.sh_degree == degree
    assert_bit_equal(scene, back)
    info = ply_info(path)
    assert info["num_gaussians"] == 257 and info["sh_degree"] == degree
    assert info["properties"] == property_names(degree)
    assert info["truncated"] is False and info["expected_size"] == info["file_size"]


def test_write_is_inria_layout(tmp_path):
    scene = random_scene(10, 3, wide=True)
    write_ply(scene, tmp_path / "s.ply")
    ply = plyfile.PlyData.read(str(tmp_path / "s.ply"))
    v = ply["vertex"].data
    assert ply.byte_order == "<" and not ply.text
    assert list(v.dtype.names) == property_names(3)
    assert all(v.dtype[k] == np.dtype("<f4") for k in v.dtype.names)
    assert (v["nx"] == 0).all()
    # channel-major f_rest: f_rest_{c*(K-1)+k} = shN[:, k, c]
    shN = scene.shN.numpy()
    assert np.array_equal(v["f_rest_16"], shN[:, 1, 1])  # c=1, k=1: 1*15+1
    assert np.array_equal(v["f_rest_44"], shN[:, 14, 2])
    assert np.array_equal(v["rot_0"], scene.quats[:, 0].numpy())  # w first


def test_empty_scene_round_trip(tmp_path):
    scene = random_scene(0, 1, wide=True)
    back = read_ply(write_ply(scene, tmp_path / "e.ply"))
    assert len(back) == 0 and back.sh_degree == 1


@pytest.mark.parametrize("text,byte_order", [(False, "<"), (False, ">"), (True, "<")])
def test_foreign_file_read_write_identical(tmp_path, text, byte_order):
    """A PLY written by another tool (plyfile, as the Inria code does) -> read -> write -> read."""
    scene = random_scene(64, 3, seed=5, wide=True, extremes=not text)
    write_foreign(tmp_path / "foreign.ply", inria_array(scene), text=text, byte_order=byte_order)
    first = read_ply(tmp_path / "foreign.ply")
    if not text:
        assert_bit_equal(scene, first)
    second = read_ply(write_ply(first, tmp_path / "again.ply"))
    assert_bit_equal(first, second)


def test_ascii_ply(tmp_path):
    scene = random_scene(20, 1, wide=True)
    write_foreign(tmp_path / "a.ply", inria_array(scene), text=True)
    back = read_ply(tmp_path / "a.ply")
    for (_, x), (_, y) in zip(scene.items(), back.items()):
        assert torch.equal(x, y)  # numpy prints float32 with enough digits to round-trip


def one_warning(capsys, *fragments) -> str:
    """The one ``splatdistill: warning:`` line on stderr, containing each fragment."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("splatdistill: warning: "), err[0]
    for f in fragments:
        assert f in err[0], (f, err[0])
    return err[0]


def test_extra_properties_warn(tmp_path, capsys):
    scene = random_scene(30, 2, wide=True)
    n = len(scene)
    extra = {
        "filter_3D": np.full(n, np.nan, np.float32),  # NaN in an ignored property is fine
        "normal": np.ones(n, np.float32),
        "red": np.full(n, 200, np.uint8),
    }
    order = ["red", "filter_3D"] + list(inria_array(scene).dtype.names)[::-1] + ["normal"]
    write_foreign(tmp_path / "x.ply", inria_array(scene, extra, order=order))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one plain line on stderr, no Python warning
        back = read_ply(tmp_path / "x.ply")
    line = one_warning(capsys, "filter_3D", "normal", "red", "x.ply")
    assert "nx" not in line
    assert_bit_equal(scene, back)
    assert ply_info(tmp_path / "x.ply")["extra_properties"] == ["red", "filter_3D", "normal"]


def test_other_elements_and_lists(tmp_path, capsys):
    """Elements before 'vertex' (one with a list property) are skipped."""
    scene = random_scene(12, 0, wide=True)
    face = np.empty(2, dtype=[("vertex_indices", "O")])
    face["vertex_indices"] = [np.array([0, 1, 2], np.int32), np.array([2, 3, 4], np.int32)]
    meta = np.array([(1.5,)], dtype=[("v", "<f8")])
    els = [
        plyfile.PlyElement.describe(meta, "meta"),
        plyfile.PlyElement.describe(face, "face", val_types={"vertex_indices": "int32"}),
    ]
    write_foreign(tmp_path / "f.ply", inria_array(scene), elements=els)
    back = read_ply(tmp_path / "f.ply")
    one_warning(capsys, "face")
    assert_bit_equal(scene, back)
    # only scalar elements before 'vertex' (the fast binary path skips them by size), one after
    write_foreign(tmp_path / "g.ply", inria_array(scene), byte_order=">", elements=els[:1])
    with open(tmp_path / "g.ply", "ab") as f:
        f.write(b"trailing bytes are ignored")
    assert_bit_equal(scene, read_ply(tmp_path / "g.ply"))
    one_warning(capsys, "meta")


def test_non_float_properties(tmp_path):
    scene = random_scene(8, 0, wide=True)
    scene.params["opacities"] = torch.tensor([0, 1, -5, 7, 100, -128, 3, 2], dtype=torch.float32)
    scene.params["means"][:, 0] = 0.25  # exactly representable as double and float
    dt = {"opacity": "i1", "x": "<f8"}
    write_foreign(tmp_path / "ok.ply", inria_array(scene, dtypes=dt))
    assert_bit_equal(scene, read_ply(tmp_path / "ok.ply"))

    # float64 (some exporters write it): rounded to the nearest float32, written back as float32
    arr = inria_array(scene, dtypes={k: "<f8" for k in inria_array(scene).dtype.names})
    arr["scale_2"][3] = 0.1  # 0.1 as double is not a float32
    write_foreign(tmp_path / "f64.ply", arr)
    back = read_ply(tmp_path / "f64.ply")
    assert back.scales[3, 2].item() == float(np.float32(0.1))
    for name, col in [("x", back.means[:, 0]), ("opacity", back.opacities), ("rot_3", back.quats[:, 3])]:
        assert np.array_equal(col.numpy(), arr[name].astype(np.float32)), name
    write_ply(back, tmp_path / "f32.ply")
    assert ply_info(tmp_path / "f32.ply")["properties"] == property_names(0)
    assert_bit_equal(back, read_ply(tmp_path / "f32.ply"))
    arr["y"][2] = 1e300  # a double beyond float32's range
    write_foreign(tmp_path / "big.ply", arr)
    with pytest.raises(UserError, match="'y'.*Inf") as e:
        read_ply(tmp_path / "big.ply")
    assert "big.ply" in str(e.value)

    arr = inria_array(scene, dtypes={"y": "<i4"})
    arr["y"][0] = 2**24 + 1  # an int32 that float32 cannot hold
    write_foreign(tmp_path / "bigint.ply", arr)
    with pytest.raises(UserError, match="'y'"):
        read_ply(tmp_path / "bigint.ply")


# --- errors ---------------------------------------------------------------------------------------
def test_truncated(tmp_path):
    path = write_ply(random_scene(100, 3, wide=True, extremes=True), tmp_path / "cut.ply")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated") as e:
        read_ply(path)
    assert "cut.ply" in str(e.value) and e.value.path == str(path)
    assert ply_info(path)["truncated"] is True
    path.write_bytes(data[:40])  # cut inside the header
    with pytest.raises(UserError, match="cut.ply"):
        read_ply(path)


def test_truncated_ascii(tmp_path):
    scene = random_scene(50, 0, wide=True)
    write_foreign(tmp_path / "a.ply", inria_array(scene), text=True)
    text = (tmp_path / "a.ply").read_bytes()
    (tmp_path / "a.ply").write_bytes(text[: len(text) * 2 // 3])
    with pytest.raises(UserError, match="a.ply"):
        read_ply(tmp_path / "a.ply")


@pytest.mark.parametrize(
    "prop,value", [("scale_1", np.nan), ("f_rest_7", np.inf), ("opacity", np.nan), ("x", np.nan), ("scale_0", -np.inf)]
)
def test_nan_names_property(tmp_path, prop, value):
    scene = random_scene(40, 1, wide=True)
    arr = inria_array(scene)
    arr[prop][17] = value
    write_foreign(tmp_path / "nan.ply", arr)
    with pytest.raises(UserError, match=f"'{prop}'.*NaN") as e:
        read_ply(tmp_path / "nan.ply")
    assert "nan.ply" in str(e.value) and "vertex 17" in str(e.value)


@pytest.mark.parametrize("dtype", ["<f4", "<f8"])
def test_infinite_opacity_is_clamped(tmp_path, capsys, dtype):
    """splat-transform writes opacity = +inf for alpha 1: clamped to a finite logit, one warning."""
    scene = random_scene(40, 1, wide=True)
    arr = inria_array(scene, dtypes={"opacity": dtype})
    arr["opacity"][[3, 9, 11]] = np.inf
    arr["opacity"][20] = -np.inf
    write_foreign(tmp_path / "inf.ply", arr)
    back = read_ply(tmp_path / "inf.ply")
    one_warning(capsys, "inf.ply", "3 with opacity = +inf", "1 with opacity = -inf", "of 40")
    op = back.opacities
    assert torch.isfinite(op).all()
    assert torch.sigmoid(op[[3, 9, 11]]).min() > 1 - 1e-6 and torch.sigmoid(op[20]) < 1e-6
    keep = np.setdiff1d(np.arange(40), [3, 9, 11, 20])
    assert np.array_equal(op.numpy()[keep], arr["opacity"][keep].astype(np.float32))
    write_ply(back, tmp_path / "back.ply")  # a finite scene: writable and re-readable
    assert_bit_equal(back, read_ply(tmp_path / "back.ply"))
    assert capsys.readouterr().err == ""


def test_antialiased_comment(tmp_path):
    """Both comment conventions splat-transform reads (Brush's and Postshot's); we write Brush's."""
    scene = random_scene(10, 0, wide=True)
    write_ply(scene, tmp_path / "plain.ply")
    assert not read_ply(tmp_path / "plain.ply").antialiased
    assert ply_info(tmp_path / "plain.ply")["comments"] == []
    scene.antialiased = True
    write_ply(scene, tmp_path / "aa.ply")
    assert ply_info(tmp_path / "aa.ply")["comments"] == ["SplatRenderMode: mip"]
    back = read_ply(tmp_path / "aa.ply")
    assert back.antialiased
    assert_bit_equal(scene, back)
    data = (tmp_path / "plain.ply").read_bytes()
    for comments, want in [
        (["antialiased 1"], True),
        (["ANTIALIASED 0"], False),
        (["splatrendermode: MIP"], True),
        (["SplatRenderMode: mip", "antialiased 0"], False),
        (["antialiased 1", "SplatRenderMode: default"], False),
        (["made by x"], False),
    ]:
        extra = "".join(f"comment {c}\n" for c in comments).encode()
        (tmp_path / "c.ply").write_bytes(data.replace(b"element vertex", extra + b"element vertex", 1))
        assert read_ply(tmp_path / "c.ply").antialiased is want, comments


def test_nan_in_double_property(tmp_path):
    arr = inria_array(random_scene(5, 0, wide=True), dtypes={"rot_2": "<f8"})
    arr["rot_2"][1] = np.nan
    write_foreign(tmp_path / "nan.ply", arr)
    with pytest.raises(UserError, match="'rot_2'.*NaN"):
        read_ply(tmp_path / "nan.ply")


def test_missing_property(tmp_path):
    arr = inria_array(random_scene(10, 2, wide=True))
    keep = [k for k in arr.dtype.names if k != "scale_1"]
    write_foreign(tmp_path / "m.ply", _select(arr, keep))
    with pytest.raises(UserError, match="missing property 'scale_1'") as e:
        read_ply(tmp_path / "m.ply")
    assert "m.ply" in str(e.value)


def _select(arr: np.ndarray, names: list[str]) -> np.ndarray:
    out = np.empty(len(arr), dtype=[(k, arr.dtype[k]) for k in names])
    for k in names:
        out[k] = arr[k]
    return out


def test_wrong_f_rest_count(tmp_path):
    arr = inria_array(random_scene(10, 1, wide=True))
    keep = [k for k in arr.dtype.names if k != "f_rest_8"]
    write_foreign(tmp_path / "r.ply", _select(arr, keep))
    with pytest.raises(UserError, match="8 f_rest"):
        read_ply(tmp_path / "r.ply")
    # right count, wrong names: f_rest_0..7 and f_rest_9
    arr2 = arr.copy()
    arr2.dtype.names = [("f_rest_9" if k == "f_rest_8" else k) for k in arr.dtype.names]
    write_foreign(tmp_path / "r2.ply", arr2)
    with pytest.raises(UserError, match="missing property 'f_rest_8'"):
        read_ply(tmp_path / "r2.ply")


def test_not_a_ply_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found") as e:
        read_ply(tmp_path / "nope.ply")
    assert "nope.ply" in str(e.value)
    (tmp_path / "junk.ply").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(UserError, match="not a PLY"):
        read_ply(tmp_path / "junk.ply")
    (tmp_path / "empty.ply").write_bytes(b"")
    with pytest.raises(UserError, match="not a PLY"):
        read_ply(tmp_path / "empty.ply")
    with pytest.raises(UserError, match="directory"):
        read_ply(tmp_path)
    (tmp_path / "bad.ply").write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty floaty x\nend_header\n"
    )
    with pytest.raises(UserError, match="property line"):
        read_ply(tmp_path / "bad.ply")


def test_no_vertex_element(tmp_path):
    arr = np.zeros(3, dtype=[("packed_position", "<u4")])
    chunk = np.zeros(1, dtype=[("min_x", "<f4")])
    plyfile.PlyData([plyfile.PlyElement.describe(chunk, "chunk"), plyfile.PlyElement.describe(arr, "points")]).write(
        str(tmp_path / "c.ply")
    )
    with pytest.raises(UserError, match="no 'vertex' element") as e:
        read_ply(tmp_path / "c.ply")
    assert "compressed" in str(e.value)


def test_write_refuses_nan_and_is_atomic(tmp_path):
    scene = random_scene(10, 0, wide=True)
    path = write_ply(scene, tmp_path / "s.ply")
    before = path.read_bytes()
    bad = scene.clone()
    bad.params["scales"][3, 1] = float("nan")
    with pytest.raises(UserError, match="'scales'"):
        write_ply(bad, path)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ply"]  # no temp files left


def test_write_accepts_parameters_and_other_dtypes(tmp_path):
    scene = random_scene(16, 1, wide=True)
    params = {k: torch.nn.Parameter(v.double()) for k, v in scene.items()}
    back = read_ply(write_ply(GaussianScene(**params), tmp_path / "p.ply"))
    assert_bit_equal(scene, back)

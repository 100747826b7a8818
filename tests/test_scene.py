"""GaussianScene structural operations keep the scene's flags."""

import pytest
import torch

from splatdistill.scene.gaussians import GaussianScene


def _scene(aa: bool) -> GaussianScene:
    s = GaussianScene.random_in_box(10, [-1, -1, -1], [1, 1, 1], sh_degree=2, seed=1)
    return GaussianScene(**s.params, antialiased=aa)


@pytest.mark.parametrize("aa", [False, True])
def test_antialiased_flag_survives_operations(aa):
    s = _scene(aa)
    mask = torch.arange(10) % 2 == 0
    for t in (s.clone(), s.detach(), s.to("cpu"), s[mask], s[2:5], s.with_sh_degree(0), s.with_sh_degree(3),
              GaussianScene.concat([s, s])):
        assert t.antialiased is aa


def test_concat_refuses_mixed_render_modes():
    with pytest.raises(ValueError, match="antialiased"):
        GaussianScene.concat([_scene(True), _scene(False)])

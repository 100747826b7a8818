"""GaussianScene structural operations keep the scene's flags."""

import pytest
import torch

from helpers import box_scene
from splatdistill.scene.gaussians import GaussianScene


@pytest.mark.parametrize("aa", [False, True])
def test_antialiased_flag_survives_operations(aa):
    s = box_scene(10, 2, seed=1, antialiased=aa)
    mask = torch.arange(10) % 2 == 0
    for t in (
        s.clone(),
        s.detach(),
        s.to("cpu"),
        s[mask],
        s[2:5],
        s.with_sh_degree(0),
        s.with_sh_degree(3),
        GaussianScene.concat([s, s]),
    ):
        assert t.antialiased is aa


def test_concat_refuses_mixed_render_modes():
    with pytest.raises(ValueError, match="antialiased"):
        GaussianScene.concat([box_scene(10, antialiased=True), box_scene(10, antialiased=False)])

"""Dream videos: one GIF frame per step, real beside dreamed beside their difference, the
observed context framed apart from the imagined steps."""

from __future__ import annotations

import numpy as np
from PIL import Image

from worldmodel.dream_beside_real import (
    BORDER,
    DREAMED_COLOUR,
    HEADER,
    OBSERVED_COLOUR,
    video_frame,
    write_dream_video,
)


def test_a_video_frame_holds_real_model_and_difference_framed_by_what_the_model_saw():
    real = np.zeros((4, 6, 3), np.uint8)
    real[1, 2] = 200
    modelled = np.full((4, 6, 3), 50.0, np.float32)

    observed = video_frame(real, modelled, observed=True, step=0, scale=2)
    dreamed = video_frame(real, modelled, observed=False, step=9, scale=2)

    panel_height, panel_width = 4 * 2 + 2 * BORDER, 6 * 2 + 2 * BORDER
    assert observed.shape == dreamed.shape == (HEADER + panel_height, 3 * panel_width, 3)
    assert observed.dtype == np.uint8
    for picture, colour in ((observed, OBSERVED_COLOUR), (dreamed, DREAMED_COLOUR)):
        for panel in range(3):
            np.testing.assert_array_equal(picture[HEADER, panel * panel_width], colour)  # each panel's border
    panels = [observed[HEADER + BORDER:HEADER + panel_height - BORDER,
                       panel * panel_width + BORDER:(panel + 1) * panel_width - BORDER] for panel in range(3)]
    np.testing.assert_array_equal(panels[0], real.repeat(2, 0).repeat(2, 1))  # enlarged, nearest neighbour
    np.testing.assert_array_equal(panels[1], 50)
    np.testing.assert_array_equal(panels[2][2:4, 4:6], 150)  # |200 - 50|
    np.testing.assert_array_equal(panels[2][:2], 50)


def test_a_dream_video_is_a_readable_gif_with_one_frame_per_step(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    modelled = rng.uniform(-20, 280, size=(6, 8, 8, 3)).astype(np.float32)  # outside 0..255 is clipped
    path = tmp_path / "dream-3.gif"

    write_dream_video(real, modelled, context=2, path=path)

    video = Image.open(path)
    assert video.format == "GIF" and video.n_frames == 6
    video.seek(5)
    last = np.asarray(video.convert("RGB"))
    assert last.shape == video_frame(real[5], modelled[5], False, 5).shape
    np.testing.assert_allclose(last[HEADER, 0], DREAMED_COLOUR, atol=16)  # a palette may shift colours a little
    video.seek(2)
    np.testing.assert_allclose(np.asarray(video.convert("RGB"))[HEADER, 0], OBSERVED_COLOUR, atol=16)

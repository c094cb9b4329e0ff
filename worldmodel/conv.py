"""Convolutional encoder and decoder for camera frames (DreamerV3's image layers).

The encoder halves the frame's height and width with strided 4 x 4 convolutions, each
followed by LayerNorm over the channels and SiLU, doubling the channels from ``depth``
until the feature map is 4 rows high, and flattens the result. The decoder mirrors it: a
dense layer to that smallest grid, then upsampling layers that double the height and
width back to the frame's, the last one giving the colour channels.

Frames enter as the task gives them (values 0..255, uint8 or float) and are read in
centred pixel units, ``frame / 255 - 0.5``; the decoder predicts in the same units
(`frames_to_centred`, `centred_to_frames`), so its squared error summed over pixels is
DreamerV3's image loss, and a frame error read in ``[0, 1]`` units is its square root.

Every convolution here is a matrix product over image patches (`convolve`), not XLA's
convolution: on CPU, XLA runs a convolution inside a `lax.scan` (where fitting fuses
its updates) 10 to 50 times slower than outside one, while the patches and the product
run as fast in a scan as out of it, and as fast as XLA's convolution outside.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

SMALLEST_GRID = 4  # rows of the encoder's last feature map, as DreamerV3's ``minres``
PIXEL_MAX = 255.0


def frames_to_centred(frames: jax.Array) -> jax.Array:
    """Frames in 0..255 as float32 in ``[-0.5, 0.5]``."""
    return jnp.asarray(frames, dtype=jnp.float32) / PIXEL_MAX - 0.5


def centred_to_frames(centred: jax.Array) -> jax.Array:
    """Centred predictions back to the task's units: float32 in ``[0, 255]`` (clipped)."""
    return jnp.clip((centred + 0.5) * PIXEL_MAX, 0.0, PIXEL_MAX)


def downsampling_stages(frame_shape: tuple[int, ...]) -> int:
    """How many halvings take ``[H, W, C]`` frames to a grid ``SMALLEST_GRID`` rows high.

    Raises:
        ValueError: the frame is not ``[H, W, C]``, or its height and width do not
            halve evenly that many times.
    """
    if len(frame_shape) != 3:
        raise ValueError(f"frames must be [height, width, channels], got shape {tuple(frame_shape)}")
    height, width, _ = frame_shape
    stages = int(math.log2(max(min(height, width) // SMALLEST_GRID, 1)))
    if stages < 1 or height % 2**stages or width % 2**stages:
        raise ValueError(f"frames of {height} x {width} pixels do not halve evenly down to "
                         f"{SMALLEST_GRID} rows (64 x 64 frames do)")
    return stages


class FrameEncoder(nnx.Module):
    """``[..., H, W, C]`` frames in 0..255 -> ``[..., embedding_size]`` features."""

    def __init__(self, frame_shape: tuple[int, int, int], depth: int, rngs: nnx.Rngs):
        stages = downsampling_stages(frame_shape)
        channels = [frame_shape[-1]] + [depth * 2**stage for stage in range(stages)]
        # No bias: the LayerNorm right after has its own.
        self.convs = nnx.List([
            PatchConv(a, b, kernel_size=4, stride=2, use_bias=False, rngs=rngs)
            for a, b in zip(channels[:-1], channels[1:])
        ])
        self.norms = nnx.List([nnx.LayerNorm(b, rngs=rngs) for b in channels[1:]])
        self.frame_shape = tuple(frame_shape)
        height, width, _ = frame_shape
        self.embedding_size = (height >> stages) * (width >> stages) * channels[-1]

    def __call__(self, frames: jax.Array) -> jax.Array:
        leading = frames.shape[: frames.ndim - 3]
        x = frames_to_centred(frames).reshape(-1, *self.frame_shape)
        for conv, norm in zip(self.convs, self.norms):
            x = jax.nn.silu(norm(conv(x)))
        return x.reshape(*leading, self.embedding_size)


class FrameDecoder(nnx.Module):
    """``[..., features]`` -> ``[..., H, W, C]`` frames in centred units (`centred_to_frames`)."""

    def __init__(self, in_features: int, frame_shape: tuple[int, int, int], depth: int, rngs: nnx.Rngs):
        stages = downsampling_stages(frame_shape)
        height, width, colours = frame_shape
        channels = [depth * 2**stage for stage in reversed(range(stages))] + [colours]
        self.frame_shape = tuple(frame_shape)
        self.grid = (height >> stages, width >> stages, channels[0])
        self.dense = nnx.Linear(in_features, math.prod(self.grid), use_bias=False, rngs=rngs)
        self.dense_norm = nnx.LayerNorm(channels[0], rngs=rngs)
        self.upsamples = nnx.List([
            Upsample(a, b, use_bias=last, rngs=rngs)
            for a, b, last in zip(channels[:-1], channels[1:], [False] * (stages - 1) + [True])
        ])
        self.norms = nnx.List([nnx.LayerNorm(b, rngs=rngs) for b in channels[1:-1]])

    def __call__(self, features: jax.Array) -> jax.Array:
        leading = features.shape[:-1]
        x = self.dense(features.reshape(-1, features.shape[-1])).reshape(-1, *self.grid)
        x = jax.nn.silu(self.dense_norm(x))
        for upsample, norm in zip(self.upsamples[:-1], self.norms):
            x = jax.nn.silu(norm(upsample(x)))
        return self.upsamples[-1](x).reshape(*leading, *self.frame_shape)


class Upsample(nnx.Module):
    """A 4 x 4 stride-2 transposed convolution, ``[B, H, W, in] -> [B, 2H, 2W, out]``.

    Computed as a 2 x 2 convolution that gives each input pixel the 2 x 2 output pixels
    it starts as channels, then moved into place (depth to space, "sub-pixel
    convolution"): each output pixel reads the same 2 x 2 inputs with the same number of
    weights as in a transposed convolution whose output is shifted by one pixel, at the
    same cost, and without the zeros an input-dilated transposed convolution multiplies.
    """

    def __init__(self, in_features: int, out_features: int, use_bias: bool, rngs: nnx.Rngs):
        self.conv = PatchConv(in_features, 4 * out_features, kernel_size=2, stride=1, use_bias=use_bias, rngs=rngs)
        self.out_features = out_features

    def __call__(self, x: jax.Array) -> jax.Array:
        return depth_to_space(self.conv(x), 2)


class PatchConv(nnx.Module):
    """A square convolution with "SAME" padding, ``[B, H, W, in] -> [B, H / stride, W / stride, out]``,
    computed by `convolve`; its kernel ``[k, k, in, out]`` starts as `nnx.Conv`'s does."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, stride: int, use_bias: bool,
                 rngs: nnx.Rngs):
        shape = (kernel_size, kernel_size, in_features, out_features)
        self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), shape))
        self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        y = convolve(x, self.kernel[...], self.stride)
        return y if self.bias is None else y + self.bias[...]


def convolve(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """``x [B, H, W, C]`` convolved with ``kernel [k, k, C, O]`` at ``stride``, "SAME" padding
    (as `jax.lax.conv_general_dilated` pads): ``[B, ceil(H / stride), ceil(W / stride), O]``.

    Each output pixel's ``k x k x C`` input patch is gathered by ``k * k`` strided slices,
    then multiplied by the kernel as one matrix (see the module's note on why).
    """
    size = kernel.shape[0]
    _, height, width, channels = x.shape
    out_height, out_width = -(-height // stride), -(-width // stride)
    pads = [_same_padding(n, out, size, stride) for n, out in ((height, out_height), (width, out_width))]
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    patches = jnp.concatenate([
        padded[:, row:row + (out_height - 1) * stride + 1:stride, column:column + (out_width - 1) * stride + 1:stride]
        for row in range(size) for column in range(size)
    ], axis=-1)
    return patches @ kernel.reshape(size * size * channels, -1)


def _same_padding(size: int, out: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def depth_to_space(x: jax.Array, block: int) -> jax.Array:
    """``[B, H, W, block * block * C] -> [B, block H, block W, C]``: each pixel's channels
    become a ``block x block`` patch (row-major within the patch)."""
    batch, height, width, depth = x.shape
    channels = depth // (block * block)
    x = x.reshape(batch, height, width, block, block, channels)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(batch, height * block, width * block, channels)

"""On-the-fly augmentation: a random small affine transform plus an elastic warp per image.

Both are folded into one sampling grid and one bilinear lookup per batch, so a batch of 128
costs about as much as a single small convolution: augmentation fits in the CPU budget.
"""

import math
from dataclasses import dataclass, replace

import tensorflow as tf

SIDE = 28


@dataclass(frozen=True)
class Distortion:
    max_rotation_degrees: float = 10.0
    max_shear: float = 0.2  # x += shear * y
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_aspect_change: float = 0.1  # height / width varies by up to +-10 %
    max_shift: float = 1.5  # pixels
    # Elastic: random displacements on a coarse grid, interpolated smoothly to every pixel
    # (Simard et al., 2003, with the smoothing done by interpolation instead of a Gaussian).
    elastic_grid: int = 4
    elastic_pixels: float = 0.8  # standard deviation of a grid point's displacement

    def scaled(self, strength: float) -> "Distortion":
        """Every distortion `strength` times as strong (0: none; 1: these defaults)."""
        low, high = self.scale_range
        return replace(
            self,
            max_rotation_degrees=self.max_rotation_degrees * strength,
            max_shear=self.max_shear * strength,
            scale_range=(1 - (1 - low) * strength, 1 + (high - 1) * strength),
            max_aspect_change=self.max_aspect_change * strength,
            max_shift=self.max_shift * strength,
            elastic_pixels=self.elastic_pixels * strength,
        )


def random_distortion(
    images: tf.Tensor, seed: tf.Tensor, distortion: Distortion = Distortion()
) -> tf.Tensor:
    """(B, 28, 28, 1) float32 -> the same images, each randomly rotated, sheared, scaled,
    shifted and elastically warped. Ink leaving the frame is cut off; the border fills with 0.

    seed: two integers; the same seed gives the same distortions. Stateless random ops, because
    stateful ones in a parallel tf.data map hand their numbers to whichever batch runs first,
    so two runs with one seed would train on different pictures.
    """
    batch = tf.shape(images)[0]
    d = distortion
    seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, num=6)))

    def uniform(low: float, high: float, shape=None) -> tf.Tensor:
        shape = [batch] if shape is None else shape
        return tf.random.stateless_uniform(shape, next(seeds), low, high)

    angle = uniform(-1, 1) * math.radians(d.max_rotation_degrees)
    shear = uniform(-d.max_shear, d.max_shear)
    scale = uniform(*d.scale_range)
    aspect = uniform(1 - d.max_aspect_change, 1 + d.max_aspect_change)
    scale_y, scale_x = scale * tf.sqrt(aspect), scale / tf.sqrt(aspect)

    # For each output pixel p (relative to the centre), the input point it is read from:
    # q = rotation @ shear @ (p / scale) + shift + elastic(p).
    cos, sin = tf.cos(angle), tf.sin(angle)
    m_yy, m_yx = cos / scale_y, -sin / scale_x
    m_xy, m_xx = (sin + shear * cos) / scale_y, (cos - shear * sin) / scale_x

    rows, cols = tf.meshgrid(
        tf.range(SIDE, dtype=tf.float32), tf.range(SIDE, dtype=tf.float32), indexing="ij"
    )
    centre = (SIDE - 1) / 2
    p_y, p_x = rows - centre, cols - centre  # (28, 28)

    def per_image(v: tf.Tensor) -> tf.Tensor:
        return v[:, None, None]

    shift = uniform(-d.max_shift, d.max_shift, [batch, 2])
    coarse = tf.random.stateless_normal([batch, d.elastic_grid, d.elastic_grid, 2], next(seeds))
    coarse *= d.elastic_pixels
    elastic = tf.image.resize(coarse, [SIDE, SIDE], method="bicubic")  # smooth, (B, 28, 28, 2)
    q_y = per_image(m_yy) * p_y + per_image(m_yx) * p_x + centre
    q_x = per_image(m_xy) * p_y + per_image(m_xx) * p_x + centre
    q_y += per_image(shift[:, 0]) + elastic[..., 0]
    q_x += per_image(shift[:, 1]) + elastic[..., 1]
    return bilinear_sample(images, q_y, q_x)


def bilinear_sample(images: tf.Tensor, q_y: tf.Tensor, q_x: tf.Tensor) -> tf.Tensor:
    """images (B, H, W, 1) read at fractional points (B, H, W); zero outside the image."""
    batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    # A one-pixel zero frame: every point outside the image reads from it.
    padded = tf.reshape(tf.pad(images[..., 0], [[0, 0], [1, 1], [1, 1]]), [batch, -1])
    y0, x0 = tf.floor(q_y), tf.floor(q_x)
    w_y, w_x = q_y - y0, q_x - x0

    def read(y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        y = tf.clip_by_value(tf.cast(y, tf.int32), -1, height) + 1
        x = tf.clip_by_value(tf.cast(x, tf.int32), -1, width) + 1
        index = tf.reshape(y * (width + 2) + x, [batch, -1])
        return tf.reshape(tf.gather(padded, index, batch_dims=1), tf.shape(q_y))

    top = read(y0, x0) * (1 - w_x) + read(y0, x0 + 1) * w_x
    bottom = read(y0 + 1, x0) * (1 - w_x) + read(y0 + 1, x0 + 1) * w_x
    return (top * (1 - w_y) + bottom * w_y)[..., None]


# How the ink varies between pictures that the preprocessing leaves to the model (issue 27),
# cheaply on the 28x28 glyphs: each a function of the batch, all computed, one chosen per image.
INK_VARIATIONS = ("thicker pen", "thinner pen", "blur", "low resolution", "noise", "edge cut off")


def vary_ink(images: tf.Tensor, seed: tf.Tensor, share: float) -> tf.Tensor:
    """(B, 28, 28, 1) in [0, 1] -> each image, with probability `share`, given one of
    INK_VARIATIONS, its peak brought back to 1 as the preprocessing's output has it."""
    batch = tf.shape(images)[0]
    seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, num=4)))
    thicker = tf.maximum(images, 0.85 * tf.nn.max_pool2d(images, 3, 1, "SAME"))
    thinner = tf.clip_by_value((images - 0.45) / 0.55, 0.0, 1.0)
    blurred = tf.nn.avg_pool2d(images, 3, 1, "SAME")
    small = tf.image.resize(images, [12, 12], method="area")
    low_res = tf.image.resize(small, [SIDE, SIDE], method="bilinear")
    noise = tf.random.stateless_normal(tf.shape(images), next(seeds), stddev=0.1)
    noisy = tf.clip_by_value(images + noise, 0.0, 1.0)
    # The outermost 3 rows (or columns) of one side gone, as when a crop cuts the character.
    side = tf.random.stateless_uniform([batch], next(seeds), 0, 4, dtype=tf.int32)
    index = tf.range(SIDE)
    near = tf.stack([index < 6, index >= SIDE - 6], axis=0)  # 6 px: the glyph's 3 px margin + 3
    rows = tf.gather(near, side % 2)[:, :, None] & (side < 2)[:, None, None]
    cols = tf.gather(near, side % 2)[:, None, :] & (side >= 2)[:, None, None]
    cut = tf.where((rows | cols)[..., None], 0.0, images)
    variants = tf.stack([images, thicker, thinner, blurred, low_res, noisy, cut], axis=1)
    chosen = tf.random.stateless_uniform([batch], next(seeds), 1, len(INK_VARIATIONS) + 1, tf.int32)
    varied = tf.random.stateless_uniform([batch], next(seeds)) < share
    result = tf.gather(variants, tf.where(varied, chosen, 0), batch_dims=1)
    peak = tf.reduce_max(result, axis=[1, 2, 3], keepdims=True)
    return tf.where(peak > 0, result / tf.maximum(peak, 1e-6), result)

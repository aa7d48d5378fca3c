import cv2
import numpy as np
import pytest

from refacex_plugin.deblurring import wiener_deblur


def _texture(h=96, w=80, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.uniform(0, 255, (h // 4, w // 4, channels)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(base.reshape(h, w, channels), 0, 255)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("sigma", [0.6, 1.0, 1.4])
def test_wiener_deblur_undoes_most_of_a_gaussian_blur(dtype, sigma):
    sharp = _texture()
    blurred = cv2.GaussianBlur(sharp, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    blurred = np.round(blurred).astype(dtype) if dtype == np.uint8 else blurred.astype(dtype)
    out = wiener_deblur(blurred, sigma)
    assert out.shape == sharp.shape and out.dtype == np.float32
    before = np.abs(blurred.astype(np.float32) - sharp).mean()
    after = np.abs(out - sharp).mean()
    assert after < 0.5 * before, (before, after)


def test_wiener_deblur_of_the_wrong_sigma_is_worse_than_the_right_one():
    sharp = _texture(seed=1)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT_101)
    err = {s: np.abs(wiener_deblur(blurred, s) - sharp).mean() for s in (0.5, 1.0, 1.6)}
    assert err[1.0] < err[0.5] and err[1.0] < err[1.6], err


def test_wiener_deblur_keeps_grey_images_and_sigma_zero_is_a_copy():
    grey = _texture(channels=1)[..., 0]
    assert wiener_deblur(grey, 1.0).shape == grey.shape
    out = wiener_deblur(grey.astype(np.uint8), 0.0)
    np.testing.assert_array_equal(out, grey.astype(np.uint8).astype(np.float32))
    tiny = np.zeros((3, 3, 3), np.uint8)  # smaller than the mirror border: returned as it is
    np.testing.assert_array_equal(wiener_deblur(tiny, 1.0), tiny.astype(np.float32))

"""crf.grid_cache: the smoothness kernel's lattice, built once per image size and reused bit for bit."""
import threading

import numpy as np
import pytest

import crf
from crf import config as crf_config
from crf import grid_cache
from crf.compat import densecrf as dcrf
from crf.synthetic import photo, smooth_logits

H, W, L = 18, 26, 4


def _scene(seed):
    image = photo(H, W, seed=seed)
    unary = crf.unary_from_logits(smooth_logits(L, H, W, seed=seed + 1, stride=3))
    return image, unary


def _model(image, unary, backend="cpu", theta_gamma=3.0, height=H, width=W):
    model = crf.DenseCRF(np.ascontiguousarray(unary[:, :height, :width]), backend=backend)
    model.add_bilateral(np.ascontiguousarray(image[:height, :width]), 10, 13, w=4)
    model.add_gaussian(theta_gamma, w=3)
    return model


def _uncached(image, unary, monkeypatch, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(crf_config, "GRID_CACHE_BYTES", 0)
        model = _model(image, unary, **kwargs)
        q = model.inference(5)
    return model, q


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_the_next_image_of_a_size_reuses_the_lattice_bit_for_bit(backend, monkeypatch):
    first_image, first_unary = _scene(1)
    image, unary = _scene(11)  # another picture of the same size
    first = _model(first_image, first_unary, backend)
    second = _model(image, unary, backend)
    assert second.kernels[1].lattice is first.kernels[1].lattice
    assert (first.kernels[1].reused, second.kernels[1].reused) == (False, True)
    assert second.kernels[0].lattice is not first.kernels[0].lattice  # the bilateral one: built per image
    assert not second.kernels[0].reused
    assert "reused from an earlier model of this size" in second.summary()[2]
    assert "built in" in first.summary()[2] and "built in" in second.summary()[1]
    assert grid_cache.stats()["hits"] == 1 and grid_cache.stats()["misses"] == 1

    fresh, want = _uncached(image, unary, monkeypatch, backend=backend)
    assert fresh.kernels[1].lattice is not first.kernels[1].lattice and not fresh.kernels[1].reused
    for name in ("offsets", "weights", "keys", "n1", "n2", "starts", "splat_point", "splat_weight"):
        np.testing.assert_array_equal(getattr(second.kernels[1].lattice, name),
                                      getattr(fresh.kernels[1].lattice, name), err_msg=name)
    np.testing.assert_array_equal(second.kernels[1].post, fresh.kernels[1].post)
    np.testing.assert_array_equal(second.inference(5), want)


def test_the_key_is_the_size_the_thetas_and_the_backend():
    image, unary = _scene(2)
    base = _model(image, unary).kernels[1].lattice
    others = [_model(image, unary, height=H - 1).kernels[1].lattice,
              _model(image, unary, width=W - 1).kernels[1].lattice,
              _model(image, unary, theta_gamma=3.5).kernels[1].lattice,
              _model(image, unary, backend="numpy").kernels[1].lattice]
    assert all(lat is not base for lat in others)
    assert grid_cache.stats()["entries"] == 5 and grid_cache.stats()["hits"] == 0
    # the transposed size is another grid
    tall = crf.DenseCRF(crf.unary_from_logits(smooth_logits(L, 16, 12, seed=3)), backend="cpu")
    tall.add_gaussian(3, 3)
    wide = crf.DenseCRF(crf.unary_from_logits(smooth_logits(L, 12, 16, seed=3)), backend="cpu")
    wide.add_gaussian(3, 3)
    assert tall.kernels[0].lattice is not wide.kernels[0].lattice
    # theta_gamma is keyed as the float32 the features use: 3 and 3.0 are one entry
    assert _model(image, unary, theta_gamma=3).kernels[1].lattice is base


def test_pydensecrf_facade_shares_the_cache_and_keeps_sx_and_sy_apart(monkeypatch):
    image, unary = _scene(4)
    native = _model(image, unary).kernels[1].lattice
    facade = dcrf.DenseCRF2D(W, H, L, backend="cpu")
    facade.setUnaryEnergy(unary.reshape(L, -1))
    facade.addPairwiseGaussian(sxy=3, compat=3)
    assert facade._kernels[0].lattice is native
    facade.addPairwiseGaussian(sxy=(3, 5), compat=2)
    assert facade._kernels[1].lattice is not native
    q = np.array(facade.inference(4))
    again = dcrf.DenseCRF2D(W, H, L, backend="cpu")
    again.setUnaryEnergy(unary.reshape(L, -1))
    again.addPairwiseGaussian(sxy=(3, 5), compat=3)
    assert again._kernels[0].lattice is facade._kernels[1].lattice
    monkeypatch.setattr(crf_config, "GRID_CACHE_BYTES", 0)
    fresh = dcrf.DenseCRF2D(W, H, L, backend="cpu")
    fresh.setUnaryEnergy(unary.reshape(L, -1))
    fresh.addPairwiseGaussian(sxy=3, compat=3)
    fresh.addPairwiseGaussian(sxy=(3, 5), compat=2)
    assert fresh._kernels[1].lattice is not facade._kernels[1].lattice
    np.testing.assert_array_equal(np.array(fresh.inference(4)), q)


def _grid_entry(height, width, theta=3.0):
    model = crf.DenseCRF(crf.unary_from_logits(smooth_logits(2, height, width, seed=5)), backend="cpu")
    model.add_gaussian(theta, 3)
    return model.kernels[0].lattice


def test_least_recently_used_entries_go_first_within_the_budget(monkeypatch):
    sizes = {}
    for hw in ((20, 20), (21, 20), (22, 20)):
        _grid_entry(*hw)
        sizes[hw] = grid_cache.stats()["bytes"] - sum(sizes.values())
    grid_cache.clear()
    a, b, c = sizes
    monkeypatch.setattr(crf_config, "GRID_CACHE_BYTES", sizes[a] + sizes[b] + sizes[c] - 1)  # room for two
    lat_a, lat_b = _grid_entry(*a), _grid_entry(*b)
    assert _grid_entry(*a) is lat_a  # a is now the most recently used
    lat_c = _grid_entry(*c)  # evicts b
    assert grid_cache.stats()["entries"] == 2
    assert _grid_entry(*a) is lat_a and _grid_entry(*c) is lat_c
    assert _grid_entry(*b) is not lat_b  # built anew, and evicts a (c was used after it)
    assert _grid_entry(*c) is lat_c and grid_cache.stats()["bytes"] <= crf_config.GRID_CACHE_BYTES
    # a grid larger than the whole budget is built, not kept, and evicts nothing
    kept = grid_cache.stats()
    _grid_entry(60, 60)
    assert grid_cache.stats()["entries"] == kept["entries"] and _grid_entry(*c) is lat_c
    # an entry larger than the whole budget is not kept; a budget of 0 keeps nothing
    monkeypatch.setattr(crf_config, "GRID_CACHE_BYTES", sizes[a] - 1)
    assert _grid_entry(*a) is not _grid_entry(*a) and grid_cache.stats()["entries"] == 0
    monkeypatch.setattr(crf_config, "GRID_CACHE_BYTES", 0)
    assert _grid_entry(*c) is not _grid_entry(*c) and grid_cache.stats()["bytes"] == 0


def test_the_shared_normaliser_is_read_only():
    image, unary = _scene(6)
    _model(image, unary)
    (lattice, k1, _), = grid_cache._entries.values()
    with pytest.raises(ValueError, match="read-only"):
        k1 *= 2


def test_models_of_one_size_in_several_threads_match_the_serial_ones():
    scenes = [_scene(20 + i) for i in range(4)]
    want = [_model(image, unary).inference(4) for image, unary in scenes]
    grid_cache.clear()
    got = [None] * len(scenes)

    def run(i):
        got[i] = _model(*scenes[i]).inference(4)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(scenes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert grid_cache.stats()["entries"] == 1

"""``msa-rows``: an MSA of fewer rows than the trunk uses is cut to a row bucket (no AF3 needed)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import wrapt

from af3_cpu_patch.engine import hooks
from af3_cpu_patch.patches import msa_rows


@dataclasses.dataclass(frozen=True)
class StandInMSA:
    """The fields of AF3's ``features.MSA`` that msa-rows reads (written for this test)."""

    rows: np.ndarray
    mask: np.ndarray
    deletion_matrix: np.ndarray
    profile: np.ndarray
    num_alignments: np.ndarray


def _padded_msa(real_rows: int, padded_rows: int = 16384, tokens: int = 8) -> StandInMSA:
    rng = np.random.default_rng(real_rows)
    rows = np.zeros((padded_rows, tokens), np.int8)
    rows[:real_rows] = rng.integers(1, 20, (real_rows, tokens))
    mask = np.zeros((padded_rows, tokens), bool)
    mask[:real_rows] = True
    deletions = np.zeros((padded_rows, tokens), np.int8)
    deletions[:real_rows] = rng.integers(0, 3, (real_rows, tokens))
    return StandInMSA(rows, mask, deletions, rng.random((tokens, 22)), np.array(real_rows, np.int32))


def _compute(msa):
    """``compute_features`` through the wrapper, as the patch installs it."""
    return wrapt.FunctionWrapper(lambda **kwargs: msa, msa_rows.compute_features_wrapper)(padding_shapes=None)


@pytest.mark.parametrize("real, bucket", [(1, 16), (16, 16), (17, 64), (200, 256), (1000, 1024), (1024, 1024)])
def test_rows_for_is_the_smallest_bucket_that_holds_the_msa(real, bucket):
    assert msa_rows.rows_for(real) == bucket


def test_more_rows_than_the_trunk_uses_keep_afs_padding():
    assert msa_rows.rows_for(msa_rows.STOCK_NUM_MSA + 1) is None


@pytest.mark.parametrize("real", [1, 40, 300])
def test_the_msa_is_cut_to_its_bucket_keeping_every_real_row(monkeypatch, real):
    monkeypatch.setattr(hooks, "applied", lambda name: name == msa_rows.EVOFORMER_PATCH)
    stock = _padded_msa(real)
    cut = _compute(stock)
    rows = msa_rows.rows_for(real)
    for field in ("rows", "mask", "deletion_matrix"):
        assert getattr(cut, field).shape == (rows, stock.rows.shape[1])
        assert np.array_equal(getattr(cut, field), getattr(stock, field)[:rows])
        assert not getattr(stock, field)[rows:].any()  # only padding was left out
    assert cut.profile is stock.profile and int(cut.num_alignments) == real


def test_nothing_is_cut_without_the_evoformer_rewrite(monkeypatch):
    """Stock's Evoformer indexes num_msa rows whatever the MSA holds: a cut MSA would break it."""
    monkeypatch.setattr(hooks, "applied", lambda name: False)
    stock = _padded_msa(3)
    assert _compute(stock) is stock


def test_deep_msas_are_left_alone(monkeypatch):
    monkeypatch.setattr(hooks, "applied", lambda name: True)
    deep = _padded_msa(2000)
    assert _compute(deep) is deep
    already_small = _padded_msa(5, padded_rows=16)  # nothing to cut
    assert _compute(already_small) is already_small

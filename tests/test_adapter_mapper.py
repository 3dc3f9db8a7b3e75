"""The configuration mapper: near identity at init, one row of features per layer, coverage errors."""

from __future__ import annotations

import pytest
import torch

from toolchain.adapter.configs import make_config
from toolchain.adapter.mapper import ConfigMapper, Vocab
from toolchain.adapter.settings import Grid, MapperContext
from toolchain.errors import BadInputError
from toolchain.models import LayerSpec
from toolchain.quant.core import Scheme

SPECS = [
    LayerSpec("enc.layer.0.q", 8, 8, 0, "q"),
    LayerSpec("enc.layer.0.ff", 16, 8, 0, "ff"),
    LayerSpec("enc.layer.1.q", 8, 8, 1, "q"),
]
GRIDS = [Grid(), Grid(scheme=Scheme.ASYMMETRIC), Grid(block_size=4)]


def test_features_encode_each_field():
    vocab = Vocab.of(SPECS, GRIDS)
    assert vocab.block_sizes == (None, 4)
    assert vocab.kinds == ("ff", "q")
    config = make_config(SPECS, [2, 5, 8], [GRIDS[0], GRIDS[1], GRIDS[2]])
    # bits-2, granularity index, scheme index, block index + 1, kind index
    assert vocab.features(SPECS, config).tolist() == [[0, 0, 0, 1, 1], [3, 0, 1, 1, 0], [6, 1, 0, 2, 1]]


def test_uncovered_block_size_is_refused():
    vocab = Vocab.of(SPECS, [Grid()])
    config = make_config(SPECS, [2, 2, 2], [Grid(block_size=4)] * 3)
    with pytest.raises(BadInputError, match="block_size 4 is not covered"):
        vocab.features(SPECS, config)


def test_mapper_starts_near_identity_and_differs_per_configuration():
    torch.manual_seed(0)
    vocab = Vocab.of(SPECS, GRIDS)
    mapper = ConfigMapper(vocab, rank=4)
    f2 = vocab.features(SPECS, make_config(SPECS, [2, 2, 2], [Grid()] * 3))
    f8 = vocab.features(SPECS, make_config(SPECS, [8, 8, 8], [Grid()] * 3))
    q2, q8 = mapper(f2), mapper(f8)
    assert q2.shape == (3, 4, 4)
    eye = torch.eye(4).expand(3, 4, 4)
    assert (q2 - eye).abs().max() < 0.02
    assert (q2 - eye).abs().max() > 0  # near, not exactly: gradients reach every mapper layer
    assert not torch.equal(q2, q8)


def _q_after_changing_layer_0(context: MapperContext) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    vocab = Vocab.of(SPECS, GRIDS)
    mapper = ConfigMapper(vocab, rank=4, context=context, n_layers=len(SPECS))
    with torch.no_grad():
        mapper.net[-1].weight.normal_(std=0.1)  # a trained mapper, not one at its near-identity start
    a = mapper(vocab.features(SPECS, make_config(SPECS, [2, 4, 4], [Grid()] * 3)))
    b = mapper(vocab.features(SPECS, make_config(SPECS, [8, 4, 4], [Grid()] * 3)))
    return a, b


def test_own_context_mapper_ignores_the_other_layers_bits():
    a, b = _q_after_changing_layer_0(MapperContext.OWN)
    assert not torch.allclose(a[0], b[0])
    assert torch.equal(a[1:], b[1:])


def test_whole_context_mapper_sees_every_layers_bits():
    """Layer 0's bits change the other layers' Q(c) too: each can compensate another's low bits."""
    a, b = _q_after_changing_layer_0(MapperContext.WHOLE)
    assert not torch.allclose(a[0], b[0])
    assert (a[1:] - b[1:]).abs().amax(dim=(1, 2)).min() > 1e-4


def test_whole_context_needs_the_layer_count():
    with pytest.raises(ValueError, match="n_layers"):
        ConfigMapper(Vocab.of(SPECS, GRIDS), rank=4, context=MapperContext.WHOLE)

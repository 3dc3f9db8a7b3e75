"""The quantized base stores grids only and rounds each entry again from the float weight: the integers
must be quantize_mse's own, bit for bit, after a save and load, and the file must hold no integers."""

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from toolchain.adapter.base import QuantBase
from toolchain.adapter.settings import Grid
from toolchain.errors import BadInputError
from toolchain.models import LayerSpec
from toolchain.quant.core import Scheme, quantize_mse

GRIDS = [Grid(), Grid(block_size=8), Grid(scheme=Scheme.ASYMMETRIC), Grid(scheme=Scheme.ASYMMETRIC, block_size=8)]
BITS = [2, 3, 4, 8]


def _model() -> tuple[nn.Module, list[LayerSpec]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 12), nn.Linear(12, 7))  # 20 and 12 inputs: a ragged last block of 8
    with torch.no_grad():
        net[0].weight[0, 0] = 3.0  # an outlier the clip search must cut
    specs = [LayerSpec(str(i), m.out_features, m.in_features, i, "dense") for i, m in enumerate(net)]
    return net, specs


def test_entries_are_quantize_mse_after_a_round_trip(tmp_path):
    net, specs = _model()
    QuantBase.build(net, specs, BITS, GRIDS).save(tmp_path / "base.safetensors")
    base = QuantBase.load(tmp_path / "base.safetensors", GRIDS, net, specs)
    for spec in specs:
        w = net.get_submodule(spec.name).weight.detach()
        for grid in GRIDS:
            for bits in BITS:
                want = quantize_mse(w, bits, grid.scheme, grid.block_size)
                got = base.get(spec.name, bits, grid)
                assert torch.equal(got.q, want.q), (spec.name, bits, grid.key)
                assert torch.equal(got.scale, want.scale)
                assert (got.zero_point is None) == (want.zero_point is None)
                if want.zero_point is not None:
                    assert torch.equal(got.zero_point, want.zero_point)
                assert got.q.dtype == torch.int16 and int(got.q.min()) >= -(2 ** (bits - 1))


def test_the_file_holds_grids_not_integers(tmp_path):
    net, specs = _model()
    QuantBase.build(net, specs, BITS, GRIDS).save(tmp_path / "base.safetensors")
    stored = load_file(str(tmp_path / "base.safetensors"))
    assert stored and all(k.endswith(("|s", "|z")) for k in stored)
    n_weights = sum(s.out_features * s.in_features for s in specs)
    assert sum(t.numel() for t in stored.values()) < n_weights * len(BITS) * len(GRIDS) / 4


def test_an_uncovered_entry_names_what_the_run_has(tmp_path):
    net, specs = _model()
    base = QuantBase.build(net, specs, [2], [Grid()])
    assert base.has("0", 2, Grid()) and not base.has("0", 3, Grid())
    with pytest.raises(BadInputError, match="3-bit symm-pc is not covered by this run"):
        base.get("0", 3, Grid())

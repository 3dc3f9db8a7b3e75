"""The Fisher layer costs: the batched per-document gradients against their definition, the second-order
estimate against a measured KL, and the costs of a run's merged integers."""

from __future__ import annotations

import pytest
import torch

from toolchain.evaluate import encode
from toolchain.models import load_model, quantizable_layers
from toolchain.quant.core import QuantizedWeight, Scheme, quantize_rtn
from toolchain.search.fisher import fisher_costs, fisher_diagonal
from toolchain.search.space import SearchSpace

DOCS = 12


def _model(tiny_model_path, tiny_data):
    model, tok = load_model(tiny_model_path, tiny_data.label_names)
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking head: confident on some documents, not on others
        model.classifier.weight.mul_(40.0)
    return model.eval(), tok, [s.name for s in quantizable_layers(model)]


def test_batched_fisher_is_the_sum_over_documents_and_classes(tiny_model_path, tiny_data):
    """Batches of unequal lengths (padding) give sum_n sum_c p_c (d log p_c / dW)^2, computed one
    document and one class at a time with autograd."""
    model, tok, names = _model(tiny_model_path, tiny_data)
    texts = tiny_data.texts[:: len(tiny_data.texts) // DOCS][:DOCS]
    flags = [p.requires_grad for p in model.parameters()]
    fisher, docs = fisher_diagonal(model, [encode(tok, texts[:5]), encode(tok, texts[5:])], names)
    assert docs == DOCS and [p.requires_grad for p in model.parameters()] == flags  # the model as it was
    picked = [names[0], names[-1]]
    weights = [model.get_submodule(n).weight for n in picked]
    expected = [torch.zeros_like(w) for w in weights]
    for w in weights:
        w.requires_grad_(True)
    for text in texts:
        logp = torch.log_softmax(model(**encode(tok, [text])).logits, dim=-1)[0]
        for c in range(logp.shape[0]):
            grads = torch.autograd.grad(logp[c], weights, retain_graph=True)
            for e, g in zip(expected, grads):
                e += logp[c].exp().detach() * g.pow(2)
    for n, e in zip(picked, expected):
        torch.testing.assert_close(fisher[n], e, rtol=1e-4, atol=1e-10)


def test_half_the_fisher_times_a_small_move_squared_is_the_kl_it_causes(tiny_model_path, tiny_data):
    """One weight moved by a small step: the KL from the unmoved model, averaged over the documents, is
    1/2 F_jj step^2 / N to second order (the KL's Hessian at the float weights is the Fisher)."""
    model, tok, names = _model(tiny_model_path, tiny_data)
    texts = tiny_data.texts[:DOCS]
    batch = encode(tok, texts)
    fisher, docs = fisher_diagonal(model, [batch], names)
    name = names[2]
    j = int(fisher[name].argmax())
    with torch.no_grad():
        before = torch.log_softmax(model(**batch).logits, -1)
        w = model.get_submodule(name).weight
        step = 0.05 / float(fisher[name].view(-1)[j] / docs).__pow__(0.5)  # a KL of about 1e-3 nats
        w.view(-1)[j] += step
        after = torch.log_softmax(model(**batch).logits, -1)
    measured = float((before.exp() * (before - after)).sum(-1).mean())
    predicted = 0.5 * float(fisher[name].view(-1)[j]) * step**2 / docs
    assert abs(measured - predicted) < 0.05 * predicted, (measured, predicted)


def test_costs_rise_as_bits_fall_and_are_zero_for_the_float_weights(tiny_model_path, tiny_data):
    model, tok, names = _model(tiny_model_path, tiny_data)
    specs = quantizable_layers(model)
    fisher, docs = fisher_diagonal(model, [encode(tok, tiny_data.texts[:DOCS])], names)
    weights = {n: model.get_submodule(n).weight.detach().clone() for n in names}
    space = SearchSpace(name="s", specs=tuple(specs), bits=(2, 4, 8), schemes=(Scheme.SYMMETRIC,), block_sizes=(None,))

    def rtn(config) -> dict[str, QuantizedWeight]:
        return {n: quantize_rtn(weights[n], lb.bits, lb.scheme, lb.block_size) for n, lb in config.layers.items()}

    costs = fisher_costs(fisher, docs, weights, space, rtn)
    (v,) = space.variants()
    by_bits = costs.table[v]
    assert all(by_bits[2][i] > by_bits[4][i] > by_bits[8][i] > 0 for i in range(len(names)))
    config = space.build([2, 8] * (len(names) // 2), v)
    assert costs.predicted(config) == pytest.approx(
        sum(by_bits[b][i] for i, b in enumerate([2, 8] * (len(names) // 2)))
    )

    def exact(config):  # the float weights themselves: no move, no cost
        return {
            n: QuantizedWeight(weights[n], torch.ones(weights[n].shape[0], 1), None, 8, Scheme.SYMMETRIC, None)
            for n in names
        }

    assert all(c == 0.0 for row in fisher_costs(fisher, docs, weights, space, exact).table[v].values() for c in row)

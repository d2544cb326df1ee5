"""Attention and MultiHeadAttention `dropout` in training (tf_keras: Attention drops the softmax weights and returns
the dropped ones; MultiHeadAttention drops the scores before combining the values and returns the undropped scores).
Random masks cannot match TensorFlow's draws: the tests check the structure of the dropped weights, that inference
is untouched, and that inverted dropout is unbiased (the mean over many draws is the inference output)."""

import numpy as np
from conftest import assert_close

from kconvert import layers

RATE = 0.3


def test_attention_drops_its_weights():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((64, 5, 4)).astype(np.float32)
    v = rng.standard_normal((64, 7, 4)).astype(np.float32)
    att = layers.Attention(dropout=RATE)
    _, plain = att.call([q, v], return_attention_scores=True)
    out, dropped = att.call([q, v], training=True, return_attention_scores=True)
    ratio = np.round((dropped / plain).astype(np.float64), 4)
    kinds = np.unique(ratio)
    assert len(kinds) == 2 and kinds[0] == 0 and abs(kinds[1] - 1 / (1 - RATE)) < 1e-3
    assert abs((ratio == 0).mean() - RATE) < 0.03
    assert_close(out, dropped @ v)
    assert_close(att.call([q, v]), plain @ v)


def test_multi_head_attention_dropout_is_unbiased():
    rng = np.random.default_rng(1)
    mha = layers.MultiHeadAttention(num_heads=2, key_dim=3, dropout=RATE)
    q = rng.standard_normal((2, 5, 4)).astype(np.float32)
    v = rng.standard_normal((2, 6, 4)).astype(np.float32)
    mha(q, v)  # build
    for w in mha.weights:
        w.assign(rng.uniform(-0.5, 0.5, w.shape))
    plain, scores = mha(q, v, return_attention_scores=True)
    draws = [mha(q, v, training=True, return_attention_scores=True) for _ in range(400)]
    assert all(np.array_equal(s, scores) for _, s in draws[:5])  # the returned scores are not dropped
    assert not np.allclose(draws[0][0], plain)
    mean = np.mean([d[0] for d in draws], axis=0)
    assert np.abs(mean - plain).max() < 0.05 * np.abs(plain).max() + 0.02

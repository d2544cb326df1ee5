"""kconvert.optimizers against the real optimizers: tf_keras 2.11+ (default), tf_keras.optimizers.legacy (Keras 2
rules, `decay`) and Keras 3, applying the same gradient sequence to the same weights; their variables (names,
order, values), configs and lookup."""

import numpy as np
import pytest
from conftest import assert_close

from kconvert import optimizers
from kconvert.errors import ConfigError
from kconvert.layers.base import Weight

SHAPES = {"dense/kernel": (5, 3), "dense/bias": (3,), "conv/kernel": (3, 1, 2, 5)}
STEPS = 6


def _problem(seed=7, scale=0.3):
    rng = np.random.default_rng(seed)
    init = {n: rng.normal(0, 0.5, size=s).astype(np.float32) for n, s in SHAPES.items()}
    grads = [[(rng.normal(0, scale, size=s) * (1 + 2 * (step % 3))).astype(np.float32) for s in SHAPES.values()]
             for step in range(STEPS)]
    return init, grads


def _ours(opt, init, grads):
    weights = [Weight(f"{n}:0", v.copy()) for n, v in init.items()]
    history = []
    for step in grads:
        opt.apply_gradients(zip(step, weights))
        history.append([w.value.copy() for w in weights])
    return history, [(v.name, v.value) for v in opt.variables()]


def _tf_keras(opt, init, grads):
    import tensorflow as tf

    variables = [tf.Variable(v, name=n) for n, v in init.items()]
    history = []
    for step in grads:
        opt.apply_gradients(zip([tf.constant(g) for g in step], variables))
        history.append([v.numpy() for v in variables])
    return history, [(v.name, v.numpy()) for v in opt.variables()]


def _keras3(opt, init, grads):
    import keras

    variables = []
    for n, v in init.items():
        scope, name = n.split("/")
        with keras.name_scope(scope):
            variables.append(keras.Variable(v, name=name))
    history = []
    for step in grads:
        opt.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in step], variables))
        history.append([np.asarray(v.numpy()) for v in variables])
    return history, [(v.path, np.asarray(v.numpy())) for v in opt.variables]


def _compare(ours, ref, init, what):
    (o_hist, o_vars), (r_hist, r_vars) = ours, ref
    start = list(init.values())
    for step, (o, r) in enumerate(zip(o_hist, r_hist)):
        for i, (a, b) in enumerate(zip(o, r)):
            assert_close(a - start[i], b - start[i], what=f"{what} step {step} weight {i} (update)")
            assert_close(a, b, what=f"{what} step {step} weight {i}")
    assert [n for n, _ in o_vars] == [n for n, _ in r_vars], what
    for (name, a), (_, b) in zip(o_vars, r_vars):
        assert_close(a, b, what=f"{what} variable {name}")


def _schedule(module, kind):
    return {
        "exp": lambda: module.ExponentialDecay(0.1, 2, 0.5),
        "exp_stair": lambda: module.ExponentialDecay(0.1, 2, 0.5, staircase=True),
        "piecewise": lambda: module.PiecewiseConstantDecay([1, 3], [0.1, 0.05, 0.02]),
        "inverse": lambda: module.InverseTimeDecay(0.1, 3, 0.5, staircase=False),
        "cosine": lambda: module.CosineDecay(0.1, 4, alpha=0.1),
        "cosine_warmup": lambda: module.CosineDecay(0.01, 3, warmup_target=0.1, warmup_steps=2),
    }[kind]()


TF_KERAS_CASES = [
    ("SGD", {"learning_rate": 0.1}), ("SGD", {"learning_rate": 0.1, "momentum": 0.9}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.8, "nesterov": True}),
    ("SGD", {"learning_rate": 0.1, "clipnorm": 0.5}), ("SGD", {"learning_rate": 0.1, "clipvalue": 0.2}),
    ("SGD", {"learning_rate": 0.1, "global_clipnorm": 0.9}),
    ("SGD", {"learning_rate": 0.1, "clipnorm": 0.5, "clipvalue": 0.01}),  # exclusive: only clipnorm applies
    ("RMSprop", {"learning_rate": 0.01, "epsilon": 0.05}), ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5}),
    ("RMSprop", {"learning_rate": 0.01, "centered": True, "rho": 0.8}),
    ("RMSprop", {"learning_rate": 0.01, "centered": True, "momentum": 0.6, "epsilon": 0.01}),
    ("Adagrad", {"learning_rate": 0.1, "epsilon": 0.05}),
    ("Adagrad", {"learning_rate": 0.1, "initial_accumulator_value": 0.5, "clipvalue": 0.3}),
    ("Adadelta", {"learning_rate": 1.0, "epsilon": 1e-3}), ("Adadelta", {"learning_rate": 0.5, "rho": 0.9}),
    ("Adam", {"learning_rate": 0.01}), ("Adam", {"learning_rate": 0.01, "amsgrad": True, "epsilon": 0.01}),
    ("Adam", {"learning_rate": 0.01, "weight_decay": 0.2}),
    ("Adam", {"learning_rate": 0.01, "adaptive_epsilon": True, "epsilon": 0.01}),
    ("Adamax", {"learning_rate": 0.01}), ("Adamax", {"learning_rate": 0.02, "beta_2": 0.9, "epsilon": 0.01}),
    ("Nadam", {"learning_rate": 0.01}), ("Nadam", {"learning_rate": 0.01, "beta_1": 0.8, "global_clipnorm": 1.0}),
    ("AdamW", {"learning_rate": 0.01}), ("AdamW", {"learning_rate": 0.01, "weight_decay": 0.3, "amsgrad": True}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.5, "use_ema": True, "ema_momentum": 0.7}),
    ("Adam", {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.6, "ema_overwrite_frequency": 4}),
]


@pytest.mark.parametrize("name,kwargs", TF_KERAS_CASES)
def test_optimizers_match_tf_keras(tfk, name, kwargs):
    init, grads = _problem()
    ours_opt = getattr(optimizers, name)(**kwargs)
    ref_opt = getattr(tfk.optimizers, name)(**kwargs)
    _compare(_ours(ours_opt, init, grads), _tf_keras(ref_opt, init, grads), init, f"{name} {kwargs}")
    ref_config = ref_opt.get_config()
    assert ours_opt.get_config() == ref_config
    again = getattr(optimizers, name).from_config(ours_opt.get_config())
    assert again.get_config() == ref_config and again.dialect == "tf_keras"
    # tf_keras reads our config back into the same optimizer
    assert getattr(tfk.optimizers, name).from_config(ours_opt.get_config()).get_config() == ref_config


@pytest.mark.parametrize("kind", ["exp", "exp_stair", "piecewise", "inverse", "cosine", "cosine_warmup"])
@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_learning_rate_schedules(tfk, name, kind):
    init, grads = _problem(seed=3)
    ours_opt = getattr(optimizers, name)(learning_rate=_schedule(optimizers.schedules, kind), momentum=0.5) \
        if name == "SGD" else optimizers.Adam(learning_rate=_schedule(optimizers.schedules, kind))
    ref_opt = getattr(tfk.optimizers, name)(learning_rate=_schedule(tfk.optimizers.schedules, kind),
                                            **({"momentum": 0.5} if name == "SGD" else {}))
    _compare(_ours(ours_opt, init, grads), _tf_keras(ref_opt, init, grads), init, f"{name} {kind}")
    for step in range(8):
        assert_close(ours_opt._learning_rate(step), ref_opt._learning_rate(step).numpy(), what=f"{kind} @{step}")
    config = ours_opt.get_config()
    assert config == ref_opt.get_config()
    assert optimizers.get({"class_name": name, "config": config}).get_config() == config


LEGACY_CASES = [
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "decay": 0.2}),
    ("SGD", {"learning_rate": 0.1, "nesterov": True, "momentum": 0.7, "clipnorm": 0.5, "clipvalue": 0.1}),
    ("SGD", {"learning_rate": 0.1, "decay": 0.1}),
    ("RMSprop", {"learning_rate": 0.01, "epsilon": 0.05}),  # epsilon outside the square root
    ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5, "epsilon": 0.05, "decay": 0.1}),
    ("RMSprop", {"learning_rate": 0.01, "centered": True, "epsilon": 0.05}),
    ("RMSprop", {"learning_rate": 0.01, "centered": True, "momentum": 0.3, "epsilon": 0.05}),
    ("Adagrad", {"learning_rate": 0.1, "epsilon": 0.05, "decay": 0.3}),
    ("Adadelta", {"learning_rate": 1.0, "epsilon": 1e-3, "global_clipnorm": 1.0}),
    ("Adam", {"learning_rate": 0.01, "amsgrad": True, "decay": 0.1}), ("Adam", {"learning_rate": 0.01}),
    ("Adamax", {"learning_rate": 0.01, "decay": 0.05}),
    ("Nadam", {"learning_rate": 0.01}), ("Nadam", {"learning_rate": 0.01, "schedule_decay": 0.5}),
    ("Nadam", {"learning_rate": 0.01, "decay": 0.5}),  # legacy Nadam drops `decay` for schedule_decay's 0.004
]


@pytest.mark.parametrize("name,kwargs", LEGACY_CASES)
def test_legacy_optimizers_match_tf_keras_legacy(tfk, name, kwargs):
    init, grads = _problem(seed=11)
    ours_opt = getattr(optimizers, name)(dialect="legacy", **kwargs)
    ref_opt = getattr(tfk.optimizers.legacy, name)(**kwargs)
    _compare(_ours(ours_opt, init, grads), _tf_keras(ref_opt, init, grads), init, f"legacy {name} {kwargs}")
    config = ours_opt.get_config()
    assert config == ref_opt.get_config()
    # a config without `is_legacy_optimizer` is a legacy one (as tf_keras deserializes it; legacy Nadam reads
    # its own `decay` back as the default schedule_decay, in tf_keras too)
    again = optimizers.deserialize({"class_name": name, "config": config})
    ref_again = tfk.optimizers.deserialize({"class_name": name, "config": dict(config)})
    assert again.dialect == "legacy" and again.get_config() == ref_again.get_config()


def test_decay_picks_the_legacy_rules_and_is_refused_elsewhere():
    assert optimizers.SGD(decay=0.1).dialect == "legacy"
    with pytest.raises(ConfigError, match="decay"):
        optimizers.SGD(decay=0.1, dialect="tf_keras")
    with pytest.raises(ConfigError, match="legacy"):
        optimizers.AdamW(decay=0.1)


KERAS3_CASES = [
    ("SGD", {"learning_rate": 0.1}), ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
    ("RMSprop", {"learning_rate": 0.01, "centered": True, "momentum": 0.4, "epsilon": 0.05}),
    ("RMSprop", {"learning_rate": 0.01, "epsilon": 0.05, "clipnorm": 0.4}),
    ("Adagrad", {"learning_rate": 0.1, "epsilon": 0.05}), ("Adadelta", {"learning_rate": 1.0, "epsilon": 1e-3}),
    ("Adam", {"learning_rate": 0.01, "amsgrad": True, "global_clipnorm": 1.0}),
    ("Adamax", {"learning_rate": 0.01, "clipvalue": 0.2}), ("Nadam", {"learning_rate": 0.01}),
    ("AdamW", {"learning_rate": 0.01, "weight_decay": 0.2}),
]


@pytest.mark.parametrize("name,kwargs", KERAS3_CASES)
def test_keras3_dialect_matches_keras3(name, kwargs):
    import keras

    init, grads = _problem(seed=5)
    ours_opt = getattr(optimizers, name)(dialect="keras3", name="opt", **kwargs)
    ref_opt = getattr(keras.optimizers, name)(name="opt", **kwargs)
    _compare(_ours(ours_opt, init, grads), _keras3(ref_opt, init, grads), init, f"keras3 {name} {kwargs}")
    config = ours_opt.get_config()
    assert config == ref_opt.get_config()
    again = optimizers.deserialize(keras.optimizers.serialize(ref_opt))
    assert again.dialect == "keras3" and again.get_config() == config
    assert optimizers.get(name.lower(), dialect="keras3").name == keras.optimizers.get(name.lower()).name.rstrip(
        "_0123456789")


def test_restoring_saved_state_continues_the_run(tfk):
    """Slots taken from tf_keras after 3 steps, loaded into a fresh kconvert optimizer (in tf_keras's variable
    order), continue exactly as the uninterrupted tf_keras run."""
    import tensorflow as tf

    init, grads = _problem(seed=9)
    for name, kwargs in (("Adam", {"learning_rate": 0.01, "amsgrad": True}), ("RMSprop", {"momentum": 0.5,
                                                                                           "centered": True}),
                         ("Nadam", {"learning_rate": 0.01})):
        ref_opt = getattr(tfk.optimizers, name)(**kwargs)
        variables = [tf.Variable(v) for v in init.values()]
        for i, step in enumerate(grads):
            if i == 3:
                state = [v.numpy() for v in ref_opt.variables()]
                at_three = [v.numpy() for v in variables]
                u_product = ref_opt._u_product.numpy() if name == "Nadam" else None
            ref_opt.apply_gradients(zip([tf.constant(g) for g in step], variables))
        ours_opt = getattr(optimizers, name)(**kwargs)
        weights = [Weight(f"{n}:0", v.copy()) for n, v in zip(SHAPES, at_three)]
        ours_opt.build(weights)
        if name == "Nadam":  # tf_keras keeps Nadam's momentum product outside variables(): replay it
            ours_opt._extra["u_product"] = np.float32(u_product)
        ours_opt.set_weights(state)
        for step in grads[3:]:
            ours_opt.apply_gradients(zip(step, weights))
        for w, v in zip(weights, variables):
            assert_close(w.value, v.numpy(), what=f"resumed {name}")
        assert ours_opt.iterations == STEPS
    with pytest.raises(ConfigError, match="expected"):
        ours_opt.set_weights(state[:2])


def test_get_and_deserialize_every_writer_form(tfk):
    assert isinstance(optimizers.get("sgd"), optimizers.SGD) and isinstance(optimizers.get("Adam"), optimizers.Adam)
    assert optimizers.get("rmsprop").get_config() == tfk.optimizers.get("rmsprop").get_config()
    opt = optimizers.Nadam()
    assert optimizers.get(opt) is opt
    # TF 2.11+ h5 training_config: registered name 'Custom>Adam'
    ref = tfk.optimizers.Adam(learning_rate=0.02, amsgrad=True)
    config = {"class_name": "Custom>Adam", "config": ref.get_config()}
    assert optimizers.get(config).get_config() == ref.get_config()
    assert optimizers.get(tfk.optimizers.serialize(ref)).get_config() == ref.get_config()
    # Keras 2 (multi-backend) configs: `lr`, `decay`, no name -> legacy rules, with a DeprecationWarning for lr
    with pytest.warns(DeprecationWarning, match="lr"):
        k2 = optimizers.get({"class_name": "SGD", "config": {"lr": 0.05, "momentum": 0.9, "decay": 1e-4,
                                                             "nesterov": True}})
    assert k2.dialect == "legacy" and k2.decay == 1e-4 and np.float32(k2.learning_rate) == np.float32(0.05)
    # TF 2.0-2.10 (legacy) configs, class names matched case-insensitively
    legacy = tfk.optimizers.legacy.RMSprop(learning_rate=0.002, rho=0.8).get_config()
    assert optimizers.get({"class_name": "rmsprop", "config": legacy}).get_config() == legacy
    with pytest.raises(ConfigError, match="unknown optimizer"):
        optimizers.get("nope")
    with pytest.raises(ConfigError, match="unknown arguments"):
        optimizers.Adam(beta3=0.1)
    with pytest.raises(ConfigError, match="clipnorm"):
        optimizers.SGD(clipnorm=1.0, global_clipnorm=1.0)


def test_lr_alias_and_learning_rate_property():
    with pytest.warns(DeprecationWarning):
        opt = optimizers.Adam(lr=0.5)
    assert np.float32(opt.learning_rate) == np.float32(0.5) and opt.lr == opt.learning_rate
    opt.learning_rate = 0.25
    assert opt.get_config()["learning_rate"] == np.float32(0.25)
    scheduled = optimizers.SGD(learning_rate=optimizers.schedules.ExponentialDecay(0.1, 1, 0.5))
    with pytest.raises(ConfigError, match="LearningRateSchedule"):
        scheduled.learning_rate = 0.1


def test_minimize_differentiates_a_numpy_loss(tfk):
    """`minimize` takes a loss written with numpy: a least-squares step equals tf_keras's SGD on the same loss."""
    import tensorflow as tf

    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    y = rng.normal(size=(7, 3)).astype(np.float32)
    k0 = rng.normal(size=(5, 3)).astype(np.float32)
    kernel = Weight("k:0", k0.copy())
    opt = optimizers.SGD(learning_rate=0.1, momentum=0.9)
    ref_kernel = tf.Variable(k0)
    ref_opt = tfk.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    for _ in range(STEPS):
        opt.minimize(lambda k: np.mean(np.square(x @ k - y)), [kernel])
        ref_opt.minimize(lambda: tf.reduce_mean(tf.square(x @ ref_kernel - y)), [ref_kernel])
    assert_close(kernel.value - k0, ref_kernel.numpy() - k0)


def test_keras3_dialect_has_no_learning_rate_variable_under_a_schedule():
    """Keras 3 keeps `learning_rate` as a variable only for a constant rate; with a schedule its state is
    [iteration, slots...]: the same list restores into kconvert's optimizer."""
    import keras

    from kconvert import optimizers
    from kconvert.layers.base import Weight

    grad = np.full((3, 2), 0.5, np.float32)
    ref = keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5))
    var = keras.Variable(np.ones((3, 2), "float32"))
    ref.apply_gradients([(grad, var)])
    ours = optimizers.Adam(optimizers.ExponentialDecay(0.1, 10, 0.5), dialect="keras3")
    weight = Weight("dense/kernel", np.ones((3, 2), np.float32))
    ours.apply_gradients([(grad, weight)])
    assert len(ours.variables()) == len(ref.variables) == 3
    ours.set_weights([np.asarray(v) for v in ref.variables])
    ref.apply_gradients([(grad, var)])
    ours.apply_gradients([(grad, weight)])
    assert np.allclose(weight.value, np.asarray(var), atol=1e-6)


BLOCKWISE_CASES = [("SGD", {"learning_rate": 0.1, "momentum": 0.9}),
                   ("SGD", {"learning_rate": 0.1, "momentum": 0.8, "nesterov": True}),
                   ("Adam", {"learning_rate": 0.01}), ("Adam", {"learning_rate": 0.01, "amsgrad": True}),
                   ("Adam", {"learning_rate": 0.01, "adaptive_epsilon": True, "epsilon": 0.01}),
                   ("AdamW", {"learning_rate": 0.01, "weight_decay": 0.3})]


@pytest.mark.parametrize("name,kwargs", BLOCKWISE_CASES)
def test_large_weights_update_block_by_block_as_tf_keras(tfk, monkeypatch, name, kwargs):
    """Weights over `blockwise`'s threshold (1100x1000, not a multiple of the block) are updated block by block,
    in place in the slots: the same bits as one whole-array pass, tf_keras's values, and `get_weights` copies."""
    from kconvert.runtime import blockwise

    rng = np.random.default_rng(3)
    shapes = {"big/kernel": (1100, 1000), "big/bias": (1000,)}
    assert 1100 * 1000 > blockwise._MIN_SIZE and 1100 * 1000 % blockwise.BLOCK
    init = {n: rng.normal(0, 0.5, size=s).astype(np.float32) for n, s in shapes.items()}
    grads = [[rng.normal(0, 0.3, size=s).astype(np.float32) for s in shapes.values()] for _ in range(3)]
    opt = getattr(optimizers, name)(**kwargs)
    weights = [Weight(f"{n}:0", v.copy()) for n, v in init.items()]
    opt.apply_gradients(zip(grads[0], weights))
    state = opt.get_weights()
    saved = [s.copy() for s in state]
    for step in grads[1:]:
        opt.apply_gradients(zip(step, weights))
    for a, b in zip(state, saved):
        np.testing.assert_array_equal(a, b)  # a copy, not the live slot
    blocked = _ours(getattr(optimizers, name)(**kwargs), init, grads)
    monkeypatch.setattr(blockwise, "_MIN_SIZE", 10**12)
    whole = _ours(getattr(optimizers, name)(**kwargs), init, grads)
    for a, b in zip(blocked[0], whole[0]):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    _compare(blocked, _tf_keras(getattr(tfk.optimizers, name)(**kwargs), init, grads), init, f"{name} {kwargs}")

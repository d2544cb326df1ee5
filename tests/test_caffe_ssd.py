"""SSD's Caffe layers (Normalize, PriorBox, DetectionOutput, and the Permute/Flatten/Reshape/Softmax head around
them) against OpenCV 4.x (fixtures/make_caffe_ssd.py): the small SSD net and the res10_300x300 face detector and
MobileNet-SSD architectures, through the numpy engine, tf_keras / Keras 3 loading kconvert's files, and
onnxruntime. Where OpenCV departs from Caffe (PriorBox's img_size, several min_sizes, CORNER_SIZE, adaptive NMS, a
per-channel scale across spatial) the reference is a hand-worked case from Caffe's formulas.

Detection rows are compared row by row, unsorted: OpenCV orders an image's rows by score with std::sort, which
breaks ties arbitrarily, so every fixture is checked to have no two scores of an image closer than 1e-6 (ten
times float32's rounding of a softmax output: the order is then determined) rather than sorted.
"""

import os
import sys

import numpy as np
import onnxruntime as ort
import pytest
from conftest import assert_close

import kconvert
from kconvert.convert import caffe_to_keras, caffe_to_onnx
from kconvert.errors import ConfigError, ExportError
from kconvert.layers.caffe_ssd import CaffeNormalize, DetectionOutput, PriorBox
from kconvert.runtime import numpy_engine

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
CAFFE = os.path.join(FIXTURES, "caffe")
sys.path.insert(0, FIXTURES)
from make_caffe_ssd import to_input  # noqa: E402

NETS = ["ssd_small", "ssd_res10", "ssd_mobilenet"]
DETECTIONS = {"ssd_small": ["detection_out", "det_corner"], "ssd_res10": ["detection_out"],
              "ssd_mobilenet": ["detection_out"]}
DET_INPUTS = {"detection_out": ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"],
              "det_corner": ["loc_cls_flat", "h2_conf_sflat", "h2_mbox_priorbox"]}


def _files(name):
    return os.path.join(CAFFE, f"{name}.prototxt"), os.path.join(CAFFE, f"{name}.caffemodel")


def _io(name):
    return np.load(os.path.join(CAFFE, f"{name}_io.npz"))


def _keras_in(name, data_format="channels_last"):
    x = to_input(_io(name)["pixels_0"])
    return x.transpose(0, 2, 3, 1) if data_format == "channels_last" else x


def _to_caffe(y, data_format):
    """A model value in Caffe's NCHW-numbered axis order."""
    if data_format == "channels_last" and y.ndim == 4:
        return y.transpose(0, 3, 1, 2)
    if data_format == "channels_last" and y.ndim == 3:
        return y.transpose(0, 2, 1)
    return y


def _check_rows(ours, ref, what, at_least=20):
    """Detections row by row; the fixture's scores are distinct beyond the tolerance (see the module doc)."""
    ref = ref.reshape(-1, 7)
    ours = np.asarray(ours).reshape(ref.shape)
    found = ref[ref[:, 2] > 0]
    assert len(found) >= at_least, f"{what}: only {len(found)} detections"
    for i in range(int(found[:, 0].max()) + 1):  # gaps far above float32 rounding: OpenCV's order is determined
        scores = np.sort(found[found[:, 0] == i, 2])
        assert np.all(np.diff(scores) > 1e-6), f"{what}: image {i} has scores too close to order"
    assert_close(ours, ref, what=what)


# ---------------------------------------------------------------------------------------------- every layer


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name", NETS)
def test_every_layer_equals_opencv(name, data_format):
    model = caffe_to_keras(*_files(name), data_format=data_format)
    io = _io(name)
    names = [k[len("layer:"):] for k in io.files if k.startswith("layer:")]
    assert all(n in model.caffe_layers for n in names)
    probe = kconvert.Model(model.inputs, [model.caffe_layers[n][0] for n in names])
    outs = numpy_engine.predict(probe._graph, [_keras_in(name, data_format)])
    for n, y in zip(names, outs):
        ref = io[f"layer:{n}"]
        y = _to_caffe(y, data_format).reshape(ref.shape)
        if n in DETECTIONS[name]:
            _check_rows(y, ref, f"{name} {n}")
        else:
            assert_close(y, ref, what=f"{name} layer {n}")


# ---------------------------------------------------------------------------------------------- Normalize


def test_normalize_equals_opencv_in_its_three_forms():
    model = caffe_to_keras(*_files("ssd_small"))
    forms = {(la.across_spatial, la.channel_shared) for la in model.layers if isinstance(la, CaffeNormalize)}
    assert forms == {(False, False), (True, True), (False, True)}
    io = _io("ssd_small")
    names = ["norm1", "norm2", "norm_c_s"]
    probe = kconvert.Model(model.inputs, [model.caffe_layers[n][0] for n in names])
    for n, y in zip(names, probe.predict(_keras_in("ssd_small"))):
        assert_close(_to_caffe(y, "channels_last"), io[f"layer:{n}"], what=n)


def test_normalize_across_spatial_with_a_per_channel_scale_by_hand():
    """OpenCV refuses this form; SSD's normalize_layer.cpp: norm = sqrt(sum over C,H,W of x^2 + eps), then
    y = x / norm * scale[c]."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3, 4)).astype(np.float32)  # NHWC: H=5, W=3, C=4
    scale = rng.uniform(5, 15, 4).astype(np.float32)
    layer = CaffeNormalize(across_spatial=True, channel_shared=False, eps=0.01, data_format="channels_last")
    layer(x)  # builds the scale weight
    layer.set_weights([scale])
    norm = np.sqrt((x.astype(np.float64) ** 2).sum(axis=(1, 2, 3), keepdims=True) + 0.01)
    assert_close(layer(x), x / norm * scale)


# ---------------------------------------------------------------------------------------------- PriorBox


@pytest.mark.parametrize("name", NETS)
def test_prior_box_equals_opencv_exactly(name):
    model = caffe_to_keras(*_files(name), data_format="channels_first")
    io = _io(name)
    priors = [la.name for la in model.layers if isinstance(la, PriorBox)] + ["mbox_priorbox"]
    probe = kconvert.Model(model.inputs, [model.caffe_layers[n][0] for n in priors])
    for n, y in zip(priors, probe.predict(_keras_in(name, "channels_first"))):
        assert np.array_equal(y, io[f"layer:{n}"]), n


def _caffe_priors(fh, fw, img_h, img_w, min_sizes, max_sizes, ars, step_h, step_w, offset, variance, clip):
    """prior_box_layer.cpp Forward_cpu, literally (double arithmetic, int min/max sizes)."""
    out = []
    for h in range(fh):
        for w in range(fw):
            cx, cy = (w + offset) * step_w, (h + offset) * step_h
            for s, mn in enumerate(min_sizes):
                mn = int(mn)
                sizes = [(mn, mn)]
                if max_sizes:
                    sizes.append((np.sqrt(mn * int(max_sizes[s])),) * 2)
                sizes += [(mn * np.sqrt(ar), mn / np.sqrt(ar)) for ar in ars if abs(ar - 1) >= 1e-6]
                for bw, bh in sizes:
                    out += [(cx - bw / 2) / img_w, (cy - bh / 2) / img_h, (cx + bw / 2) / img_w, (cy + bh / 2) / img_h]
    boxes = np.clip(out, 0, 1) if clip else np.asarray(out)
    return np.stack([boxes, np.resize(variance, boxes.size)])[None]


@pytest.mark.parametrize("clip", [False, True])
def test_prior_box_caffe_rules_by_hand(clip):
    """What OpenCV does not do as Caffe: img_h/img_w (the image bottom's size is ignored), two min_sizes (Caffe
    truncates them to int), Caffe's default variance 0.1; with the aspect ratio list rule (1, 2, then 0.5 from
    flip; 0.5 and 2.0 given again are duplicates)."""
    layer = PriorBox(min_size=[4.7, 6.0], max_size=[9, 10], aspect_ratio=[2.0, 0.5, 2.0], flip=True, clip=clip,
                     img_size=(10, 12), data_format="channels_first")
    feature, image = np.zeros((1, 3, 2, 3), np.float32), np.zeros((1, 3, 7, 9), np.float32)
    got = layer([feature, image])
    want = _caffe_priors(2, 3, 10, 12, [4.7, 6.0], [9, 10], [1.0, 2.0, 0.5], 5.0, 4.0, 0.5, [0.1], clip)
    assert got.shape == (1, 2, 2 * 3 * 8 * 4)
    assert_close(got, want)
    assert (got[0, 0] < 0).any() != clip  # Caffe's clip defaults to false (OpenCV's to true)


# ---------------------------------------------------------------------------------------------- DetectionOutput


@pytest.mark.parametrize("name", NETS)
def test_detection_output_rows_equal_opencv_on_its_inputs(name):
    """The layer fed OpenCV's own loc, conf and priors gives OpenCV's rows."""
    model = caffe_to_keras(*_files(name), data_format="channels_first")
    io = _io(name)
    for det in DETECTIONS[name]:
        layer = model.get_layer(det)
        got = layer.call([io[f"layer:{n}"] for n in DET_INPUTS[det]])
        _check_rows(got, io[f"layer:{det}"], f"{name} {det}", at_least=14)


def _hand_case():
    """3 priors, 2 classes (0 = background), 2 images; locations offset prior 0 of image 0 only."""
    priors = np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.8]], np.float32)
    variances = np.tile(np.float32([0.1, 0.1, 0.2, 0.2]), (3, 1))
    prior = np.stack([priors.reshape(-1), variances.reshape(-1)])[None]
    loc = np.zeros((2, 3, 4), np.float32)
    loc[0, 0] = [1.0, 0.0, 0.0, -1.0]
    face = np.array([[0.9, 0.8, 0.7], [0.05, 0.05, 0.95]], np.float32)
    conf = np.stack([1 - face, face], axis=-1).reshape(2, 6)
    return loc.reshape(2, 12), conf, prior, priors


@pytest.mark.parametrize("eta, kept", [(1.0, [0, 1, 2]), (0.9, [0, 2])])
def test_detection_output_corner_size_and_adaptive_nms_by_hand(eta, kept):
    """bbox_util.cpp DecodeBBox, CORNER_SIZE: xmin = prior.xmin + var[0] * loc.xmin * prior_width (ymin, xmax,
    ymax alike). Box 0 becomes (0.14, 0.1, 0.5, 0.42); its Jaccard overlap with box 1 is 0.1152 / 0.16 = 0.72.
    ApplyNMSFast with nms_threshold 0.75 keeps box 1 (0.72 <= 0.75), unless eta = 0.9 lowered the threshold to
    0.675 after box 0 was kept. Image 1 has one box above the 0.1 threshold; OpenCV packs the images one after
    the other (each by score), then zero rows: keep_top_k = -1 leaves room for 3 per image."""
    loc, conf, prior, priors = _hand_case()
    layer = DetectionOutput(num_classes=2, nms_threshold=0.75, eta=eta, code_type="CORNER_SIZE",
                            confidence_threshold=0.1, data_format="channels_first")
    got = layer([loc, conf, prior])
    boxes = {0: [0.14, 0.1, 0.5, 0.42], 1: list(priors[1]), 2: list(priors[2])}
    scores = {0: 0.9, 1: 0.8, 2: 0.7}
    want = [[0, 1, scores[i], *boxes[i]] for i in kept] + [[1, 1, 0.95, *priors[2]]]
    want += [[0] * 7] * (6 - len(want))
    assert got.shape == (1, 1, 6, 7)
    assert_close(got[0, 0], np.array(want, np.float32))


def test_detection_output_keep_top_k_and_background_by_hand():
    """keep_top_k = 1 keeps each image's best row; with background_label_id = -1 class 0 is detected too."""
    loc, _, prior, priors = _hand_case()
    scores = np.array([[[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]], [[0.97, 0.6, 0.1], [0.05, 0.05, 0.95]]], np.float32)
    conf = scores.transpose(0, 2, 1).reshape(2, 6)  # (N, P * C), class fastest
    layer = DetectionOutput(num_classes=2, background_label_id=-1, nms_threshold=0.45, code_type="CORNER",
                            keep_top_k=1, confidence_threshold=0.5, data_format="channels_first")
    got = layer([loc, conf, prior])[0, 0]
    box0 = priors[0] + np.float32([0.1, 0, 0, -0.2])  # CORNER: prior + var * loc
    assert_close(got, np.array([[0, 1, 0.9, *box0], [1, 0, 0.97, *priors[0]]], np.float32))


# ---------------------------------------------------------------------------------------------- files and ONNX


def _outputs(model, x):
    y = model.predict(x, verbose=0)
    return y if isinstance(y, list) else [y]


def _check_outputs(model_outputs, names, io, what):
    for n, y in zip(names, model_outputs):
        ref = io[f"layer:{n}"]
        y = _to_caffe(np.asarray(y), "channels_last").reshape(ref.shape)
        if n.startswith("det"):
            _check_rows(y, ref, f"{what} {n}")
        else:
            assert_close(y, ref, what=f"{what} {n}")


@pytest.mark.parametrize("name", ["ssd_small", "ssd_res10"])
def test_saved_h5_loads_in_kconvert_and_tf_keras(name, tmp_path, tfk):
    model = caffe_to_keras(*_files(name))
    path = str(tmp_path / f"{name}.h5")
    model.save(path)
    x, io = _keras_in(name), _io(name)
    _check_outputs(_outputs(kconvert.load_model(path), x), model.output_names, io, "kconvert .h5")
    real = tfk.models.load_model(path, custom_objects=kconvert.keras_objects("tf_keras"), compile=False)
    _check_outputs(_outputs(real, x), model.output_names, io, "tf_keras")


@pytest.mark.parametrize("name", ["ssd_small", "ssd_mobilenet"])
def test_saved_keras3_archive_loads_in_keras3(name, tmp_path):
    import keras

    model = caffe_to_keras(*_files(name))
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    real = keras.saving.load_model(path, custom_objects=kconvert.keras_objects("keras3"))
    _check_outputs(_outputs(real, _keras_in(name)), model.output_names, _io(name), "Keras 3")


@pytest.mark.parametrize("name", NETS)
def test_onnxruntime_detections_equal_opencv(name, tmp_path):
    path = tmp_path / f"{name}.onnx"
    caffe_to_onnx(*_files(name), path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: _keras_in(name, "channels_first")})
    model = caffe_to_keras(*_files(name), data_format="channels_first")
    io = _io(name)
    assert len(outs) == len(model.outputs)
    for value, y in zip(model.outputs, outs):
        n = value.node.layer.name
        if n in DETECTIONS[name]:
            _check_rows(y, io[f"layer:{n}"], f"onnx {name} {n}")


def test_adaptive_nms_is_refused_by_onnx_naming_the_layer(tmp_path):
    text = open(_files("ssd_small")[0]).read().replace("nms_threshold: 0.45 top_k: 30",
                                                        "nms_threshold: 0.45 top_k: 30 eta: 0.9")
    path = tmp_path / "eta.prototxt"
    path.write_text(text)
    with pytest.raises(ExportError, match="detection_out.*eta"):
        caffe_to_onnx(path, _files("ssd_small")[1], tmp_path / "eta.onnx")


def test_architecture_only_takes_the_constant_scale_filler():
    model = caffe_to_keras(_files("ssd_res10")[0])
    assert np.all(model.get_layer("conv4_3_norm").get_weights()[0] == 20)
    assert model.output_shape == (1, None, 7, 1)


@pytest.mark.parametrize("old, new, message", [
    ("num_classes: 4 share_location: true", "share_location: true", "detection_out.*num_classes"),
    ("min_size: 17", "min_size: 0", "h3_mbox_priorbox.*min_size"),
    ("step_h: 3.5 step_w: 4", "step: 4 step_h: 3.5 step_w: 4", "h2_mbox_priorbox.*step"),
])
def test_bad_ssd_parameters_name_the_layer(old, new, message, tmp_path):
    text = open(_files("ssd_small")[0]).read()
    assert old in text
    path = tmp_path / "bad.prototxt"
    path.write_text(text.replace(old, new))
    with pytest.raises(ConfigError, match=message):
        caffe_to_keras(path)


def test_predict_keeps_a_detection_batch_whole():
    """DetectionOutput's rows cover the whole batch (image ids 0..N-1): predict must not cut a batch larger than
    its batch_size into chunks, whose image ids would each restart at 0."""
    from kconvert.runtime import numpy_engine

    model = caffe_to_keras(*_files("ssd_small"), data_format="channels_first")
    x = np.concatenate([to_input(_io("ssd_small")["pixels_0"])] * 18)  # 36 images, more than the default 32
    whole = numpy_engine.run_graph(model._graph, [x])[0]
    got = model.predict(x, batch_size=8, runtime="numpy")
    det = got[model.output_names.index("detection_out")]
    want = whole[model.output_names.index("detection_out")]
    assert det.shape == want.shape and np.array_equal(det, want)
    assert det.reshape(-1, 7)[:, 0].max() == len(x) - 1

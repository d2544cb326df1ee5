"""The YAML loader and dumper of Keras configurations (see keras_text.py): PyYAML's safe classes plus tuples."""

from __future__ import annotations

import numpy as np
import yaml

_TUPLE_TAG = "tag:yaml.org,2002:python/tuple"
_PYTHON_TAG_PREFIX = "tag:yaml.org,2002:python/"


class KerasYamlLoader(yaml.SafeLoader):
    """SafeLoader plus `!!python/tuple` (loaded as a list). Nothing else from the python/* family."""


def _construct_tuple(loader: KerasYamlLoader, node: yaml.Node) -> list:
    if not isinstance(node, yaml.SequenceNode):
        raise yaml.constructor.ConstructorError(
            None, None, f"expected a sequence for {node.tag}, found {node.id}", node.start_mark
        )
    return loader.construct_sequence(node, deep=True)


def _reject_python_tag(loader: KerasYamlLoader, tag_suffix: str, node: yaml.Node):
    raise yaml.constructor.ConstructorError(
        None,
        None,
        f"refusing to construct the Python object tag '!!python/{tag_suffix}': "
        "kconvert never executes code from a file (only !!python/tuple is accepted)",
        node.start_mark,
    )


KerasYamlLoader.add_constructor(_TUPLE_TAG, _construct_tuple)
KerasYamlLoader.add_multi_constructor(_PYTHON_TAG_PREFIX, _reject_python_tag)


class KerasYamlDumper(yaml.SafeDumper):
    """SafeDumper that writes tuples and numpy arrays as lists and numpy scalars as Python numbers."""


def _represent_list(dumper: KerasYamlDumper, data) -> yaml.Node:
    return dumper.represent_list(list(data))


def _represent_ndarray(dumper: KerasYamlDumper, data: np.ndarray) -> yaml.Node:
    return dumper.represent_data(data.tolist())


def _represent_np_scalar(dumper: KerasYamlDumper, data: np.generic) -> yaml.Node:
    return dumper.represent_data(data.item())


KerasYamlDumper.add_representer(tuple, _represent_list)
KerasYamlDumper.add_representer(np.ndarray, _represent_ndarray)
KerasYamlDumper.add_multi_representer(np.generic, _represent_np_scalar)

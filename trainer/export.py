"""Keras model -> ONNX file for ONNX Runtime: input "image" [N, 28, 28, 1], outputs
"probabilities" [N, C] and "embedding" [N, D] (what the last layer reads: the network's view
of a picture, which the upload evidence compares with NIST's; domain/evidence.py)."""

import logging
import tempfile
from pathlib import Path

import keras
import numpy as np
import onnx
import tensorflow as tf

from core.preprocessing import MODEL_INPUT_NAME, MODEL_INPUT_SHAPE

log = logging.getLogger(__name__)

# Opset 17 is loaded by every ONNX Runtime since 1.13, so any runtime >= 1.20 serves it.
ONNX_OPSET = 17
OUTPUT_NAME = "probabilities"
EMBEDDING_NAME = "embedding"


def export_onnx(model: keras.Model, path: Path, opset: int = ONNX_OPSET) -> Path:
    """Write `model` as ONNX to `path`, with a dynamic batch and the service's names.

    Keras's own exporter is tried first; tf2onnx directly if that fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = tf.TensorSpec((None, *MODEL_INPUT_SHAPE), tf.float32, name=MODEL_INPUT_NAME)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            exported = Path(tmp) / "model.onnx"
            model.export(
                str(exported),
                format="onnx",
                input_signature=[spec],
                opset_version=opset,
                verbose=False,
            )
            proto = onnx.load(str(exported))
    except Exception as error:  # exporter API or conversion differences between versions
        log.info("keras ONNX export failed (%s); using tf2onnx", error)
        import tf2onnx

        proto, _ = tf2onnx.convert.from_keras(model, input_signature=[spec], opset=opset)
    proto = with_embedding(_with_service_names(proto))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def with_embedding(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model with a second output, "embedding": the input of the last matrix product
    before its probabilities (the penultimate layer's activations). Unchanged if it has it."""
    graph = proto.graph
    if any(output.name == EMBEDDING_NAME for output in graph.output):
        return proto
    producer = {name: node for node in graph.node for name in node.output}
    initializers = {i.name for i in graph.initializer}
    name = graph.output[0].name
    while name in producer:
        node = producer[name]
        if node.op_type in ("MatMul", "Gemm"):
            graph.node.append(onnx.helper.make_node("Identity", [node.input[0]], [EMBEDDING_NAME]))
            graph.output.append(
                onnx.helper.make_tensor_value_info(
                    EMBEDDING_NAME, onnx.TensorProto.FLOAT, ["N", None]
                )
            )
            return proto
        name = next(i for i in node.input if i not in initializers)
    raise ValueError("no matrix product before the model's output: no embedding to expose")


def _with_service_names(proto: onnx.ModelProto) -> onnx.ModelProto:
    """One input called "image" and one output called "probabilities", batch dimension free."""
    graph = proto.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(
            f"expected one input and one output, got {len(inputs)}, {len(graph.output)}"
        )
    _rename(graph, inputs[0].name, MODEL_INPUT_NAME)
    _rename(graph, graph.output[0].name, OUTPUT_NAME)
    for value in (graph.input[0], graph.output[0]):
        batch = value.type.tensor_type.shape.dim[0]
        batch.ClearField("dim_value")
        batch.dim_param = "N"
    return proto


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    if old == new:
        return
    for value in [*graph.input, *graph.output]:
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def onnx_keras_difference(model: keras.Model, path: Path, images: np.ndarray) -> float:
    """Largest absolute difference between Keras and ONNX Runtime probabilities on `images`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_probabilities = session.run(None, {MODEL_INPUT_NAME: images.astype(np.float32)})[0]
    keras_probabilities = model.predict(images, batch_size=256, verbose=0)
    return float(np.abs(onnx_probabilities - keras_probabilities).max())


def ensemble_onnx(members: list[bytes]) -> bytes:
    """One ONNX graph averaging several models' probabilities: each member's graph, its names
    prefixed, reads the shared "image" input; a Mean gives "probabilities". The service serves
    it like any model (one session, one run per batch)."""
    graphs, opset = [], max(_opset(onnx.load_from_string(m)) for m in members)
    for index, member in enumerate(members):
        proto = onnx.compose.add_prefix(onnx.load_from_string(member), f"member{index}_")
        _rename(proto.graph, f"member{index}_{MODEL_INPUT_NAME}", MODEL_INPUT_NAME)
        graphs.append(proto.graph)
    first = graphs[0]
    mean = onnx.helper.make_node("Mean", [g.output[0].name for g in graphs], [OUTPUT_NAME])
    graph = onnx.helper.make_graph(
        [node for g in graphs for node in g.node] + [mean],
        "ensemble",
        [first.input[0]],
        [onnx.helper.make_value_info(OUTPUT_NAME, first.output[0].type)],
        [init for g in graphs for init in g.initializer],
    )
    graph.input[0].name = MODEL_INPUT_NAME
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _opset(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))

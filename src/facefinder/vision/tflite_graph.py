"""Two exact rewrites of a shipped .tflite file before LiteRT runs it (vision/models.py caches the result).

* A free batch: MobileFaceNet bakes its batch of 2 into its last Reshape's target shape; with -1
  there, LiteRT can resize the input to run any number of faces at once.
* PReLU as one operator: MobileFaceNet's exporter wrote each PReLU as five element-wise operators,
  relu(x) + m * (x - |x|), which is prelu(x) with slope 2m. XNNPACK runs one PRELU in a single pass
  instead of five, and the outputs are bit for bit the same (benchmarks/runtimes.py, docs/benchmarks.md).

Both edit the flatbuffer through LiteRT's own schema bindings, so this module needs ai-edge-litert,
which is installed wherever LiteRT runs the file (vision/models.py imports it only then).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

OPS = schema.BuiltinOperator


def prepare_for_litert(model_bytes: bytes, free_batch: bool) -> bytes:
    """The .tflite with PReLU fused, and with a free batch dimension if ``free_batch``."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    if free_batch:
        _free_batch(model)
    _fuse_prelu(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _builtin(model: Any, op: Any) -> int:
    return flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])


def _constant(model: Any, graph: Any, tensor: int) -> np.ndarray | None:
    """A float32 or int32 tensor's constant data, else None (an activation, or another type)."""
    kinds = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT32: np.int32}
    data = model.buffers[graph.tensors[tensor].buffer].data
    if data is None or len(data) == 0 or graph.tensors[tensor].type not in kinds:
        return None
    return np.frombuffer(bytes(data), kinds[graph.tensors[tensor].type])


def _plain_float(graph: Any, tensor: int) -> bool:
    """A float32 tensor that is not quantized."""
    t = graph.tensors[tensor]
    quantized = t.quantization is not None and t.quantization.scale is not None and len(t.quantization.scale) > 0
    return t.type == schema.TensorType.FLOAT32 and not quantized


def _no_fused_activation(op: Any) -> bool:
    options = op.builtinOptions
    return options is None or getattr(options, "fusedActivationFunction", 0) == schema.ActivationFunctionType.NONE


def _free_batch(model: Any) -> None:
    """Every Reshape target that starts with the input's batch size starts with -1 instead."""
    graph = model.subgraphs[0]
    batch = int(graph.tensors[graph.inputs[0]].shape[0])
    for op in graph.operators:
        if _builtin(model, op) != OPS.RESHAPE:
            continue
        if graph.tensors[op.inputs[0]].shape[0] != batch:
            continue  # not an activation carrying the batch
        if len(op.inputs) > 1:
            target = _constant(model, graph, op.inputs[1])
            if target is not None and len(target) > 1 and target[0] == batch and -1 not in target:
                freed = np.array([-1, *target[1:]], dtype=np.int32)
                model.buffers[graph.tensors[op.inputs[1]].buffer].data = np.frombuffer(freed.tobytes(), np.uint8)
        options = op.builtinOptions
        if options is not None and getattr(options, "newShape", None) is not None:
            shape = list(options.newShape)
            if len(shape) > 1 and shape[0] == batch and -1 not in shape:
                options.newShape = [-1, *shape[1:]]


def _fuse_prelu(model: Any) -> None:
    """Each relu(x) + m * (x - |x|) with a constant m becomes prelu(x, 2m), in the ADD's place."""
    graph = model.subgraphs[0]
    producer = {out: op for op in graph.operators for out in op.outputs}
    uses = Counter(i for op in graph.operators for i in op.inputs) + Counter(graph.outputs)
    replaced: dict[int, Any] = {}
    dropped: set[int] = set()
    for add in graph.operators:
        if _builtin(model, add) != OPS.ADD or len(add.inputs) != 2:
            continue
        found = _prelu_pattern(model, graph, producer, add)
        if found is None:
            continue
        x, slope_half, inner = found
        if uses[x] != 3 or any(uses[op.outputs[0]] != 1 for op in inner):
            continue  # a value of the pattern is used elsewhere: leave it as it is
        replaced[id(add)] = _prelu_op(model, graph, x, 2 * slope_half, add.outputs[0])
        dropped.update(id(op) for op in inner)
    graph.operators = [replaced.get(id(op), op) for op in graph.operators if id(op) not in dropped]


def _prelu_pattern(model: Any, graph: Any, producer: dict, add: Any) -> tuple[int, np.ndarray, list] | None:
    """(x, m, the four inner operators) if ``add`` computes relu(x) + m * (x - |x|)."""
    relu, mul = (producer.get(i) for i in add.inputs)
    if relu is None or mul is None:
        return None
    if _builtin(model, relu) != OPS.RELU:
        relu, mul = mul, relu
    if _builtin(model, relu) != OPS.RELU or _builtin(model, mul) != OPS.MUL:
        return None
    x = relu.inputs[0]
    slope, difference = mul.inputs
    if _constant(model, graph, slope) is None:
        slope, difference = difference, slope
    sub = producer.get(difference)
    m = _constant(model, graph, slope)
    if m is None or sub is None or _builtin(model, sub) != OPS.SUB or sub.inputs[0] != x:
        return None
    absolute = producer.get(sub.inputs[1])
    if absolute is None or _builtin(model, absolute) != OPS.ABS or absolute.inputs[0] != x:
        return None
    if not all(_no_fused_activation(op) for op in (add, mul, sub)) or not _plain_float(graph, x):
        return None  # a fused RELU6 or a quantized graph is another function
    slope_shape, x_shape = list(graph.tensors[slope].shape), list(graph.tensors[x].shape)
    if not _plain_float(graph, slope) or any(d != 1 for d in slope_shape[:-1]) or len(m) != x_shape[-1]:
        return None  # the slope must run along the channels (NHWC's last dimension)
    return x, m.astype(np.float32), [relu, mul, sub, absolute]


def _prelu_op(model: Any, graph: Any, x: int, slope: np.ndarray, out: int) -> Any:
    """A PRELU operator of ``x`` with a new constant ``slope`` tensor, writing ``out``."""
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(slope.astype(np.float32).tobytes(), np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.buffer = [len(slope)], schema.TensorType.FLOAT32, len(model.buffers) - 1
    tensor.name = f"prelu_slope_{len(graph.tensors)}".encode()
    graph.tensors.append(tensor)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = _opcode(model, OPS.PRELU), [x, len(graph.tensors) - 1], [out]
    return op


def _opcode(model: Any, builtin: int) -> int:
    """The index of ``builtin``'s operator code in the model, added if missing."""
    for index, code in enumerate(model.operatorCodes):
        if flatbuffer_utils.get_builtin_code_from_operator_code(code) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, builtin, 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1

"""TF Hub BERT modules as the span model's encoder: resolve a handle, detect its format, adapt its call.

A spec's `hub_handle` is a tfhub.dev URL, a local module directory, or any path
tensorflow_hub resolves (gs://...). Remote handles are looked up in the hub cache
(TFHUB_CACHE_DIR) first; only a handle that is not cached is downloaded, and a
machine that cannot reach the hub gets one `HubUnreachableError` saying how to use
a local copy instead of a stack trace from urllib.

Three module formats exist among BERT hub modules; which one a module has is read
from the module itself (its saved call signature), never assumed from the handle:

* "list" - TF2 SavedModels of the first BERT releases (bert_en_uncased_L-12_H-768_A-12/1
  and /2): called with the list [input_word_ids, input_mask, input_type_ids], returning
  [pooled_output, sequence_output].
* "dict" - later TF2 SavedModels (/3 and newer): called with a dict of those three
  names, returning a dict with `sequence_output`.
* "tf1" - the TF1 Hub format (a `tfhub_module.pb` beside saved_model.pb), as the
  MobileBERT modules Model Maker uses: a `tokens` signature taking input_ids /
  input_mask / segment_ids and returning `sequence_output`, and, in modules already
  fine-tuned on SQuAD, a `squad` signature returning `start_logits` / `end_logits`.
  A module with a `squad` signature is used whole, its own span head included (Model
  Maker's init_from_squad_model); otherwise the `tokens` sequence output feeds our
  SpanHead like any encoder.

The tokenizer settings come from the module as well: `assets/vocab.txt`, and the
`do_lower_case` variable the TF2 BERT modules carry (read from the module's
checkpoint, without loading the model).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import logging
import os
import socket
import threading
import urllib.parse
import urllib.request

import tensorflow as tf
import tf_keras as keras

from bertqa.model.modeling import INPUT_NAMES, build_span_model

_log = logging.getLogger(__name__)

HUB_CACHE_ENV = "TFHUB_CACHE_DIR"
# How long a remote handle's host may take to accept a connection before the hub
# counts as unreachable. tensorflow_hub's urlopen has no timeout of its own, so a
# network that drops packets (rather than refusing them) would otherwise hang.
PROBE_TIMEOUT_SECONDS = 10.0
VOCAB_ASSET = os.path.join("assets", "vocab.txt")
_TF1_MODULE_FILE = "tfhub_module.pb"  # what tensorflow_hub itself checks to tell TF1 Hub format
_DO_LOWER_CASE_KEY = "do_lower_case/.ATTRIBUTES/VARIABLE_VALUE"
_TF1_INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")
_TF1_ENCODER_SIGNATURE = "tokens"
_TF1_SQUAD_SIGNATURE = "squad"


class HubUnreachableError(RuntimeError):
    """A remote hub handle that is not cached and cannot be downloaded from here."""

    def __init__(self, handle: str, reason: str):
        self.handle = handle
        self.reason = reason
        super().__init__(unreachable_message(handle, reason))


class HubModuleError(ValueError):
    """A local handle that is missing or is not a BERT module this project can use."""


# --- Resolving handles ---------------------------------------------------------------------


def is_remote(handle: str) -> bool:
    return handle.startswith(("http://", "https://"))


def hub_cache_dir() -> str:
    """Where tensorflow_hub caches downloaded modules: $TFHUB_CACHE_DIR, else <tmp>/tfhub_modules."""
    from tensorflow_hub import resolver

    return resolver.tfhub_cache_dir(use_temp=True)


def cached_module_dir(handle: str) -> str:
    """The directory tensorflow_hub unpacks `handle` into (and looks in before downloading)."""
    return os.path.join(hub_cache_dir(), hashlib.sha1(handle.encode("utf8")).hexdigest())


def _download_url(handle: str) -> str:
    if urllib.parse.urlparse(handle).netloc.endswith("tfhub.dev"):
        return handle + "?tf-hub-format=compressed"
    return handle


def _example_local_dir(handle: str) -> str:
    # e.g. https://tfhub.dev/google/mobilebert/uncased_L-24_H-128_B-512_A-4_F-4_OPT/squadv1/1
    #   -> /models/mobilebert_uncased_L-24_H-128_B-512_A-4_F-4_OPT_squadv1_1 (the publisher dropped)
    parts = [part for part in urllib.parse.urlparse(handle).path.split("/") if part]
    return "/models/" + ("_".join(parts[1:] if len(parts) > 1 else parts) or "bert_module")


def unreachable_message(handle: str, reason: str) -> str:
    local = _example_local_dir(handle)
    cache = os.environ.get(HUB_CACHE_ENV)
    cache_now = f"now TFHUB_CACHE_DIR={cache}" if cache else f"TFHUB_CACHE_DIR is unset, so {hub_cache_dir()}"
    return (
        f"TF Hub module {handle} cannot be downloaded from this machine ({reason}).\n"
        "Use a local copy of the module instead:\n"
        f"  1. On a machine with internet access, download {_download_url(handle)} (a .tar.gz of the "
        "module; tfhub.dev now redirects to Kaggle Models, which offers the same model for download).\n"
        f"  2. Unpack it into a directory, e.g. mkdir -p {local} && tar -xzf <downloaded file> -C {local}; "
        "the directory must hold saved_model.pb, variables/ and assets/vocab.txt. Copy it to this machine.\n"
        "  3. Then either pass the directory as the spec's hub handle: "
        f'bertqa.model.model_spec.get(<spec name>, hub_handle="{local}"), or in the Model Maker API '
        f'spec.uri = "{local}";\n'
        f"     or put the unpacked module in $TFHUB_CACHE_DIR/{os.path.basename(cached_module_dir(handle))} "
        f"(the directory tensorflow_hub looks in for this handle; {cache_now}) and keep the handle as it is."
    )


def _connect_target(url: str) -> tuple[str, int]:
    """(host, port) a download of `url` connects to first: the URL's host, or the proxy's."""
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname or ""
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return proxy_url.hostname or "", proxy_url.port or 80
    return host, parsed.port or (443 if parsed.scheme == "https" else 80)


def probe_reachable(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """None if `url`'s host (or proxy) accepts a TCP connection within `timeout`, else why not.

    The name lookup runs in a thread because getaddrinfo has no timeout argument and a
    resolver that gets no answer retries for tens of seconds.
    """
    host, port = _connect_target(url)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(f"cannot connect to {host}:{port}: {error}")

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:.0f} s"
    return outcome[0]


def _check_module_dir(path: str, handle: str) -> str:
    if not tf.io.gfile.isdir(path):
        raise HubModuleError(
            f"TF Hub handle {handle}: {path} is not a directory. A local hub handle must be the directory of "
            "an unpacked module (holding saved_model.pb, variables/ and assets/vocab.txt).")
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        raise HubModuleError(
            f"TF Hub handle {handle}: {path} has no saved_model.pb, so it is not an unpacked hub module. "
            "Unpack the module's .tar.gz into the directory itself (not into a subdirectory of it).")
    return path


def _download(handle: str) -> str:
    import tensorflow_hub as hub

    reason = probe_reachable(_download_url(handle))
    if reason:
        raise HubUnreachableError(handle, reason)
    try:
        return hub.resolve(handle)
    except (OSError, http.client.HTTPException, tf.errors.OpError) as error:  # URLError is an OSError
        raise HubUnreachableError(handle, f"download failed: {error}") from error


def resolve_handle(handle: str) -> str:
    """The local directory of the module `handle` names, downloading it only when it is not cached."""
    if not is_remote(handle):
        return _check_module_dir(handle, handle)
    cached = cached_module_dir(handle)
    # The same test tensorflow_hub makes before downloading; done here so that a cached
    # module never waits on the network probe.
    if not (tf.io.gfile.isdir(cached) and tf.io.gfile.listdir(cached)):
        cached = _download(handle)
    return _check_module_dir(cached, handle)


# --- Tokenizer settings --------------------------------------------------------------------


def module_vocab_path(handle: str) -> str:
    """The module's assets/vocab.txt: the WordPiece vocabulary it was pretrained with."""
    path = os.path.join(resolve_handle(handle), VOCAB_ASSET)
    if not tf.io.gfile.exists(path):
        raise HubModuleError(
            f"TF Hub module {handle} has no {VOCAB_ASSET}; give the spec a vocab_path to the vocabulary "
            "the module was trained with.")
    return path


def module_do_lower_case(handle: str) -> bool | None:
    """The module's `do_lower_case` variable (TF2 BERT modules have one), or None if it has none."""
    prefix = os.path.join(resolve_handle(handle), "variables", "variables")
    try:
        keys = {name for name, _ in tf.train.list_variables(prefix)}
    except (tf.errors.OpError, ValueError):  # TF1 Hub format checkpoints may not list this way
        return None
    if _DO_LOWER_CASE_KEY not in keys:
        return None
    return bool(tf.train.load_variable(prefix, _DO_LOWER_CASE_KEY))


# --- Format detection ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HubSignature:
    """How to call a module and where its outputs are, as read from the module.

    kind: "list" | "dict" (TF2 callables) or "tf1_tokens" | "tf1_squad" (TF1 Hub signatures).
    input_names: the module's names for word ids, mask and type ids, in that order.
    sequence_output: index ("list") or key ("dict", "tf1_tokens") of the (batch, seq, hidden)
        output; unused for "tf1_squad", whose outputs are start_logits / end_logits.
    input_dtype: what the module's id inputs are (int32 for all known BERT modules).
    static_seq_len: a sequence length fixed in the module's input shape, or None.
    """

    kind: str
    input_names: tuple[str, str, str]
    sequence_output: int | str | None
    input_dtype: tf.DType = tf.int32
    static_seq_len: int | None = None


def _ordered_names(names, handle: str) -> tuple[str, str, str]:
    names = set(names)
    for candidate in (INPUT_NAMES, _TF1_INPUT_NAMES):
        if set(candidate) <= names:
            return candidate
    raise HubModuleError(f"TF Hub module {handle}: inputs {sorted(names)} are not BERT's "
                         f"{list(INPUT_NAMES)} or {list(_TF1_INPUT_NAMES)}.")


def _seq_len_of(shape) -> int | None:
    dims = tf.TensorShape(shape).as_list() if shape is not None else []
    return dims[1] if len(dims) == 2 else None


def detect_tf2_signature(loaded, handle: str) -> HubSignature:
    """Reads the call convention of a TF2 module from its saved `__call__` function."""
    functions = getattr(loaded.__call__, "concrete_functions", None) if callable(loaded) else None
    if not functions:
        signatures = sorted(getattr(loaded, "signatures", {}) or {})
        raise HubModuleError(f"TF Hub module {handle} is not callable (a reusable SavedModel); it only has "
                             f"the signatures {signatures}, so it cannot serve as a BERT encoder.")
    function = functions[0]
    inputs = function.structured_input_signature[0][0]
    outputs = function.structured_outputs
    if isinstance(inputs, (list, tuple)) and len(inputs) == 3 and isinstance(outputs, (list, tuple)):
        # Legacy modules take [ids, mask, type_ids] positionally; the spec names confirm it when present.
        names = tuple(spec.name for spec in inputs)
        if set(names) == set(INPUT_NAMES) and names != INPUT_NAMES:
            raise HubModuleError(f"TF Hub module {handle} takes its list inputs in the order {list(names)}; "
                                 f"expected {list(INPUT_NAMES)}.")
        rank3 = [i for i, spec in enumerate(outputs) if spec.shape.rank == 3]
        if len(rank3) != 1:
            raise HubModuleError(f"TF Hub module {handle} returns {outputs}; expected exactly one "
                                 "(batch, seq, hidden) sequence output.")
        return HubSignature("list", INPUT_NAMES, rank3[0], inputs[0].dtype, _seq_len_of(inputs[0].shape))
    if isinstance(inputs, dict) and isinstance(outputs, dict):
        if "sequence_output" not in outputs:
            raise HubModuleError(f"TF Hub module {handle} returns {sorted(outputs)}; expected sequence_output.")
        names = _ordered_names(inputs, handle)
        first = inputs[names[0]]
        return HubSignature("dict", names, "sequence_output", first.dtype, _seq_len_of(first.shape))
    raise HubModuleError(f"TF Hub module {handle} is called with {inputs} and returns {outputs}; expected a list "
                         "of three id tensors or a dict of them (a BERT encoder).")


def _tf1_signature_defs(module_dir: str) -> dict:
    """The TF1 module's signature defs, read from saved_model.pb without loading any variables."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(module_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    # Hub modules put their default graph under the empty tag set; take it when present.
    graphs = sorted(saved_model.meta_graphs, key=lambda graph: len(graph.meta_info_def.tags))
    return dict(graphs[0].signature_def) if graphs else {}


def detect_tf1_signature(module_dir: str, handle: str) -> HubSignature:
    signatures = _tf1_signature_defs(module_dir)
    squad = signatures.get(_TF1_SQUAD_SIGNATURE)
    if squad is not None and {"start_logits", "end_logits"} <= set(squad.outputs):
        kind, chosen, output = "tf1_squad", squad, None
    elif _TF1_ENCODER_SIGNATURE in signatures:
        kind, chosen, output = "tf1_tokens", signatures[_TF1_ENCODER_SIGNATURE], "sequence_output"
        if output not in chosen.outputs:
            raise HubModuleError(f"TF Hub module {handle}: its '{_TF1_ENCODER_SIGNATURE}' signature returns "
                                 f"{sorted(chosen.outputs)}, without sequence_output.")
    else:
        raise HubModuleError(f"TF Hub module {handle} (TF1 Hub format) has the signatures {sorted(signatures)}; "
                             f"a BERT module has '{_TF1_ENCODER_SIGNATURE}' (or '{_TF1_SQUAD_SIGNATURE}').")
    names = _ordered_names(chosen.inputs, handle)
    first = chosen.inputs[names[0]]
    dims = [d.size for d in first.tensor_shape.dim]
    static = dims[1] if len(dims) == 2 and dims[1] > 0 else None
    return HubSignature(kind, names, output, tf.dtypes.as_dtype(first.dtype), static)


def is_tf1_module(module_dir: str) -> bool:
    return tf.io.gfile.exists(os.path.join(module_dir, _TF1_MODULE_FILE))


# --- Keras layers ----------------------------------------------------------------------------


def _tf1_keras_layer_class():
    import tensorflow_hub as hub

    class TrainableTf1KerasLayer(hub.KerasLayer):
        """hub.KerasLayer that can fine-tune a TF1 Hub format module, as Model Maker's HubKerasLayerV1V2 did.

        hub.KerasLayer refuses trainable=True for TF1 modules because their update ops and
        regularization losses are lost when loaded into TF2. BERT has neither (LayerNorm,
        no BatchNorm; no regularizers), so the only thing missing is which variables are
        weights: the graph's TRAINABLE_VARIABLES collection, which loading keeps, says so.
        This overrides two private hooks of hub.KerasLayer (stable since tensorflow_hub 0.8).
        """

        def _setup_layer(self, trainable=False, **kwargs):
            keras.layers.Layer.__init__(self, trainable=trainable, **kwargs)
            graph = getattr(self._func, "graph", None)
            trainable_names = ({v.name for v in graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)}
                               if graph is not None else set())
            for variable in self._func.variables:
                self._add_existing_weight(variable, trainable=variable.name in trainable_names)

        def _check_trainability(self):
            pass  # See the class docstring: fine-tuning a TF1 BERT module is sound.

    return TrainableTf1KerasLayer


def load_hub_layer(module_dir: str, handle: str, trainable: bool):
    """(hub.KerasLayer, HubSignature) for the module in `module_dir`."""
    import tensorflow_hub as hub

    if is_tf1_module(module_dir):
        signature = detect_tf1_signature(module_dir, handle)
        name = _TF1_SQUAD_SIGNATURE if signature.kind == "tf1_squad" else _TF1_ENCODER_SIGNATURE
        layer = _tf1_keras_layer_class()(module_dir, trainable=trainable, signature=name,
                                         signature_outputs_as_dict=True, name="hub_module")
        return layer, signature
    layer = hub.KerasLayer(module_dir, trainable=trainable, name="hub_module")
    return layer, detect_tf2_signature(layer.resolved_object, handle)


class HubModuleCall(keras.layers.Layer):
    """Calls a hub module with our three id tensors, whatever its format; returns its outputs as a dict.

    Modules with a fixed sequence length get their inputs zero-padded to it (mask 0, so the
    real tokens are unaffected) and the outputs cut back, because training batches are
    padded only to their length bucket.
    """

    def __init__(self, hub_layer: keras.layers.Layer, signature: HubSignature, **kwargs):
        super().__init__(**kwargs)
        self.hub_layer = hub_layer
        self.signature = signature

    def call(self, input_word_ids, input_mask, input_type_ids, training=None):
        length = tf.shape(input_word_ids)[1]
        tensors = [tf.cast(t, self.signature.input_dtype) for t in (input_word_ids, input_mask, input_type_ids)]
        if self.signature.static_seq_len:
            pad = [[0, 0], [0, self.signature.static_seq_len - length]]
            tensors = [tf.pad(t, pad) for t in tensors]
        if self.signature.kind == "list":
            outputs = self.hub_layer(tensors, training=training)
            outputs = {"sequence_output": outputs[self.signature.sequence_output]}
        else:
            outputs = self.hub_layer(dict(zip(self.signature.input_names, tensors, strict=True)), training=training)
        return {key: value[:, :length] for key, value in outputs.items()
                if key in ("sequence_output", "start_logits", "end_logits")}


class HubEncoder(keras.layers.Layer):
    """The encoder interface of modeling.build_span_model: (ids, mask, type_ids) -> (batch, seq, hidden)."""

    def __init__(self, module_call: HubModuleCall, **kwargs):
        super().__init__(**kwargs)
        self.module_call = module_call

    def call(self, input_word_ids, input_mask, input_type_ids, training=None):
        return self.module_call(input_word_ids, input_mask, input_type_ids, training=training)["sequence_output"]


class HubSpanLogits(keras.layers.Layer):
    """A SQuAD-tuned module's own start/end logits, with padding penalised as modeling.SpanHead does."""

    def __init__(self, module_call: HubModuleCall, **kwargs):
        super().__init__(**kwargs)
        self.module_call = module_call

    def call(self, input_word_ids, input_mask, input_type_ids, training=None):
        outputs = self.module_call(input_word_ids, input_mask, input_type_ids, training=training)
        penalty = (1.0 - tf.cast(input_mask, tf.float32)) * -10000.0  # (batch, seq)
        return outputs["start_logits"] + penalty, outputs["end_logits"] + penalty


def _squad_model(span_logits: HubSpanLogits) -> keras.Model:
    # The same inputs and outputs as modeling.build_span_model, so training, serving and
    # export cannot tell the two apart.
    inputs = {name: keras.Input(shape=(None,), dtype=tf.int32, name=name) for name in INPUT_NAMES}
    start, end = span_logits(inputs["input_word_ids"], inputs["input_mask"], inputs["input_type_ids"])
    outputs = {
        "start_logits": keras.layers.Activation("linear", dtype="float32", name="start_logits")(start),
        "end_logits": keras.layers.Activation("linear", dtype="float32", name="end_logits")(end),
    }
    return keras.Model(inputs=inputs, outputs=outputs, name="bert_span_labeler")


def build_hub_model(spec) -> keras.Model:
    """The span model for a spec with a `hub_handle` (a bertqa.model.model_spec.BertQaSpec).

    spec.trainable decides whether the module's weights are fine-tuned. spec.dropout_rate
    does not reach inside a hub module, whose dropout was fixed when it was exported.
    """
    if spec.checkpoint_dir or spec.random_encoder:
        raise ValueError(f"spec {spec.name!r} names both a hub_handle and another encoder source "
                         "(checkpoint_dir or random_encoder); give exactly one.")
    module_dir = resolve_handle(spec.hub_handle)
    hub_layer, signature = load_hub_layer(module_dir, spec.hub_handle, spec.trainable)
    if signature.static_seq_len and spec.seq_len > signature.static_seq_len:
        raise ValueError(f"spec {spec.name!r}: seq_len {spec.seq_len} exceeds the {signature.static_seq_len} "
                         f"tokens the hub module {spec.hub_handle} accepts.")
    _log.info("Hub module %s: %s format, from %s", spec.hub_handle, signature.kind, module_dir)
    module_call = HubModuleCall(hub_layer, signature, name="hub_call")
    if signature.kind == "tf1_squad":
        model = _squad_model(HubSpanLogits(module_call, name="encoder"))
    else:
        model = build_span_model(HubEncoder(module_call, name="encoder"), spec.initializer_range)
    # Set after building, as training.build_model does for BertEncoder; for hub.KerasLayer
    # this is also what lets (or stops) gradients reach the module's variables.
    hub_layer.trainable = spec.trainable
    return model

"""The Keras network: a stateful LSTM stack with a per-step linear head.

Shape contract (N rows = tanks, T steps, F = 2 features, U units)::

    Input(batch_shape=(N, T, F))  (T may be None)
      -> LSTM(U, stateful=True, return_sequences=True)  x layers
      -> TimeDistributed(Dense(F))                       ("head")
      [-> Add()([x, head])]                               ("skip", when residual)
      => (N, T, F): the scaled forecast of step t+1 made after seeing step t.

What ``tankwatch train`` builds (``residual=True, change_input=True``):

* the head predicts the *change* from the current reading (a learned correction to
  persistence): sensor steps are ~1/200 of a feature's spread, which an
  absolute-value head cannot resolve — it ends up worse than persistence;
* the LSTM also sees the change since the previous reading (``dx``): from levels
  alone it cannot resolve those steps either (measured: an LSTM on levels stays at
  persistence; with ``dx`` its next-step MSE drops to ~0.35-0.4 of persistence).
  Engines do not need extra state for ``dx``: the previous reading is
  ``held forecast - head(h_top)`` (the residual identity), both already in RowState.

Training uses the same network without the skip, on ``dx / d`` and targets
``change / d`` (``d`` = RMS one-tick change) and folds ``d`` into the weights
(:func:`fold_delta_scale`).

TensorFlow is imported inside functions only: importing this module is cheap, and the
NumPy inference path (which never calls these functions) never loads TensorFlow.

Weights travel between models as plain arrays (:func:`weights_to_arrays`), keyed
``lstm{l}_kernel`` (F_in, 4U), ``lstm{l}_recurrent`` (U, 4U), ``lstm{l}_bias`` (4U,),
``dense_kernel`` (U, F), ``dense_bias`` (F,); gate order in the 4U axis is i, f, c, o.
That is the layout of ``weights.npz`` and the NumPy engine.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import keras

__all__ = [
    "arrays_to_weights",
    "build_model",
    "fold_delta_scale",
    "import_keras",
    "lstm_layers",
    "reset_all_states",
    "weights_to_arrays",
]


def import_keras() -> Any:
    """Import Keras (TensorFlow backend) with TensorFlow's C++ start-up chatter silenced
    (unless debug logging: :func:`tankwatch.logs.quiet_native_stderr`)."""
    from tankwatch.logs import native_debug, quiet_native_stderr

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if native_debug() else "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with quiet_native_stderr():
        import keras
        import tensorflow as tf

        # The first device query probes CUDA (and logs its failure on a CPU-only box).
        tf.config.list_logical_devices("CPU")

    return keras


def build_model(
    batch_size: int,
    timesteps: int | None,
    n_features: int = 2,
    units: int = 32,
    layers: int = 1,
    *,
    with_mask_input: bool = False,
    residual: bool = False,
    change_input: bool = False,
) -> keras.Model:
    """A stateful LSTM model of a fixed batch size.

    ``batch_size`` is static (Keras requires it for ``stateful=True``); ``timesteps``
    may be None (any length). Inputs, in this order:

    * ``x`` (N, T, F): the scaled readings;
    * ``dx`` (N, T, F) if ``change_input``: each reading minus the row's previous
      reading in the same segment (0 for a segment's first reading), scaled units;
      the LSTM sees ``concat([x, dx])`` (its kernel is (2F, 4U));
    * ``mask`` (N, T) bool if ``with_mask_input``: passed to every LSTM layer; a
      masked step leaves that row's h and c unchanged (its output that step is
      meaningless — the caller holds the previous forecast).

    ``residual`` adds ``x`` to the head's output (the head predicts the change).
    """
    keras = import_keras()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x_in = keras.Input(batch_shape=(batch_size, timesteps, n_features), name="x")
    inputs: list[Any] = [x_in]
    h = x_in
    if change_input:
        dx_in = keras.Input(batch_shape=(batch_size, timesteps, n_features), name="dx")
        inputs.append(dx_in)
        h = keras.layers.Concatenate(name="x_dx")([x_in, dx_in])
    mask = None
    if with_mask_input:
        mask = keras.Input(batch_shape=(batch_size, timesteps), dtype="bool", name="mask")
        inputs.append(mask)
    for layer in range(layers):
        lstm = keras.layers.LSTM(units, stateful=True, return_sequences=True, name=f"lstm{layer}")
        h = lstm(h, mask=mask) if mask is not None else lstm(h)
    y = keras.layers.TimeDistributed(keras.layers.Dense(n_features), name="head")(h)
    if residual:
        y = keras.layers.Add(name="skip")([x_in, y])
    return keras.Model(inputs if len(inputs) > 1 else x_in, y, name="tankwatch_lstm")


def lstm_layers(model: keras.Model) -> list[Any]:
    """The model's LSTM layers, bottom to top."""
    keras = import_keras()
    return [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]


def reset_all_states(model: keras.Model) -> None:
    """Zero h and c of every row of every LSTM layer (Keras 3 has no Model.reset_states)."""
    for layer in lstm_layers(model):
        layer.reset_state()


def weights_to_arrays(model: keras.Model) -> dict[str, NDArray[np.float32]]:
    """The model's trainable weights as named float32 arrays (layout in the module doc)."""
    out: dict[str, NDArray[np.float32]] = {}
    for i, layer in enumerate(lstm_layers(model)):
        kernel, recurrent, bias = layer.get_weights()
        out[f"lstm{i}_kernel"] = np.asarray(kernel, dtype=np.float32)
        out[f"lstm{i}_recurrent"] = np.asarray(recurrent, dtype=np.float32)
        out[f"lstm{i}_bias"] = np.asarray(bias, dtype=np.float32)
    dense_kernel, dense_bias = model.get_layer("head").get_weights()
    out["dense_kernel"] = np.asarray(dense_kernel, dtype=np.float32)
    out["dense_bias"] = np.asarray(dense_bias, dtype=np.float32)
    return out


def arrays_to_weights(model: keras.Model, arrays: dict[str, NDArray[np.float32]]) -> None:
    """Copy named arrays (layout in the module doc) into a model of any batch size."""
    for i, layer in enumerate(lstm_layers(model)):
        layer.set_weights(
            [arrays[f"lstm{i}_kernel"], arrays[f"lstm{i}_recurrent"], arrays[f"lstm{i}_bias"]]
        )
    model.get_layer("head").set_weights([arrays["dense_kernel"], arrays["dense_bias"]])


def fold_delta_scale(
    arrays: dict[str, NDArray[np.float32]],
    delta_scale: NDArray[np.float32],
    change_input: bool = False,
) -> dict[str, NDArray[np.float32]]:
    """Fold the training-time change scale ``d`` (F,) into the weights.

    Training sees ``dx / d`` and predicts ``change / d``; the folded network takes
    ``dx`` and predicts the change itself: the head's (U, F) kernel and (F,) bias are
    multiplied by ``d`` per output feature, and the ``dx`` rows of the first LSTM
    kernel (rows F..2F) divided by ``d`` per input feature.
    """
    out = dict(arrays)
    out["dense_kernel"] = (arrays["dense_kernel"] * delta_scale[None, :]).astype(np.float32)
    out["dense_bias"] = (arrays["dense_bias"] * delta_scale).astype(np.float32)
    if change_input:
        nf = delta_scale.shape[0]
        kernel = arrays["lstm0_kernel"].copy()
        kernel[nf:] = kernel[nf:] / delta_scale[:, None]
        out["lstm0_kernel"] = kernel.astype(np.float32)
    return out

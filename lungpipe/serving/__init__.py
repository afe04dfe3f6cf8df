"""Serving: the MLflow audio-in model (a pyfunc) and the model registry's champions.

- :mod:`lungpipe.serving.pyfunc`: :class:`AudioClassifier` takes recordings (a waveform with its
  sample rate, or a file path) and returns per-window class probabilities, computing the features
  with the training frontend and normalisation; :func:`log_audio_model` logs it.
- :mod:`lungpipe.serving.champion`: registers each architecture's selected model.
"""

"""MLflow "model from code" entry point of the lungpipe audio model (see lungpipe.serving.pyfunc).

MLflow copies this file into every logged model and runs it when the model is loaded: it only
names the model class, so no pickled Python object is stored in (or loaded from) a logged model.
"""

import mlflow

from lungpipe.serving.pyfunc import AudioClassifier

mlflow.models.set_model(AudioClassifier())

"""Build steps for the Lambda layer and the model files."""

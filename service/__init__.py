"""The convbridge HTTP service. Importing it is cheap: TensorFlow loads in the lifespan."""

"""Build, train, evaluate and export the bridge variants into the model repository."""

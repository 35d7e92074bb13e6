"""Codecs for the standard protocols (TF Serving REST, KServe v2): JSON in, arrays out, and back.

They raise ApiError(400) for malformed requests and know nothing of TensorFlow.
"""

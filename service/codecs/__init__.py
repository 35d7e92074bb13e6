"""Codecs: pure functions between bytes and arrays, with no web framework and no TensorFlow.

Image files to pixels (``images``), feature maps to JSON, npy/npz and PNG grids
(``layer_outputs``, ``rendering``), top-k scores (``scores``), and the standard protocols'
bodies to arrays and back (``tfserving``, ``kserve``, ``tensors``). Malformed input raises
ApiError with what to fix.
"""

"""The contract shared by training/ and service/: the model repository layout and the model card.

Nothing here imports TensorFlow, so both sides (and clients) can use it cheaply.
"""

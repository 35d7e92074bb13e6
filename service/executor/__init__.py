"""The model executor process and the wire to it: the engine behind a process boundary.

``server`` serves one in-process Engine to every front end over a Unix socket; ``client``
gives each front end an engine with the same methods; tensors cross in a shared-memory
``arena``. It imports no web framework.
"""

"""python -m service.rpc.build: generate the protobuf modules from protos/ (grpcio-tools).

Run at build time (`make install`, the Dockerfile), not committed: generated code always
matches the protobuf runtime installed beside it. Writes ``<name>_pb2.py`` and its ``.pyi``
stub next to this file for every ``protos/<name>.proto``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = HERE / "protos"


def generate(target: Path = HERE) -> list[Path]:
    """Compile every .proto into ``target``; returns the modules written."""
    import grpc_tools
    from grpc_tools import protoc

    sources = sorted(PROTOS.glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    arguments = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={target}",
        f"--pyi_out={target}",
        *(str(source) for source in sources),
    ]
    if protoc.main(arguments) != 0:
        raise RuntimeError(f"protoc failed on {', '.join(s.name for s in sources)}")
    return [target / f"{source.stem}_pb2.py" for source in sources]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m service.rpc.build", description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the modules to")
    target = parser.parse_args(argv).out
    for module in generate(target):
        print(f"generated {module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

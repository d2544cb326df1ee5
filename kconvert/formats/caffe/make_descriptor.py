"""Developer script: compile caffe.proto into caffe_descriptor.pb (a serialized FileDescriptorSet).

kconvert ships the compiled descriptor so that installing it needs no `protoc`; `schema.py` builds the
message classes from it at import. Run this after editing caffe.proto and commit both files:

    pip install grpcio-tools        # for this script only; not a dependency of kconvert
    python kconvert/formats/caffe/make_descriptor.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "caffe.proto"
OUT = HERE / "caffe_descriptor.pb"


def main() -> int:
    try:
        from grpc_tools import protoc
    except ImportError:
        print("make_descriptor.py needs grpcio-tools (pip install grpcio-tools)", file=sys.stderr)
        return 1
    tmp = OUT.with_suffix(".pb.tmp")
    rc = protoc.main(["protoc", f"--proto_path={HERE}", f"--descriptor_set_out={tmp}", PROTO.name])
    if rc != 0:
        tmp.unlink(missing_ok=True)
        print(f"protoc failed on {PROTO} (exit {rc})", file=sys.stderr)
        return rc
    tmp.replace(OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

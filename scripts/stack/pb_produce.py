#!/usr/bin/env python3
"""Produce Protobuf records to Kafka with Confluent's own serializer, through the stack's registry.

An independent writer for k2i's tests: records framed by confluent-kafka's ProtobufSerializer
(magic byte 0, 4-byte big-endian schema id, message-index varints, then the message) and registered
the way Confluent clients register them (the producer's imported files as references, Google's
well-known types left out), so k2i's decoder is tested against what real producers send rather
than against framing k2i's own tests built by hand.

Usage:
  pb_produce.py --bootstrap B --registry URL --topic T --proto-path DIR --proto FILE.proto
                --message full.name.Msg [--strategy topic|record|topic_record] [--no-register]

  --proto-path DIR   the import root: FILE.proto and everything it imports are found relative to
                     it (plus google/protobuf/*.proto, which grpc_tools ships)
  --proto FILE       the file to compile, relative to DIR (e.g. events/order.proto)
  --message NAME     the fully qualified message to produce (e.g. k2i.test.Order, or a nested
                     one such as k2i.test.Order.Line); it may live in FILE or in a file it imports
  --strategy S       subject name strategy: topic (<topic>-value, the default), record
                     (<message full name>) or topic_record (<topic>-<message full name>)
  --no-register      look the schema up instead of registering it (auto.register.schemas=false)

Input: JSON lines on stdin, one record each:
  {"value": {...}}                 the message in the Protobuf JSON mapping (json_format.ParseDict)
  {"value": null}                  a tombstone (no value, so no schema id)
  optional "key": "text"           the key, as UTF-8 bytes
  optional "partition": 0          an explicit partition (else the default partitioner)
  optional "headers": {"h": "v"}   headers, values as UTF-8 bytes

Output: one JSON object on stdout once every record is acknowledged:
  {"offsets": [[partition, offset], ...], "schema_ids": [id or null, ...]}   (both in input order)
Any failure (compilation, JSON, registry, delivery) goes to stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, json_format
from grpc_tools import protoc
from produce_common import STRATEGIES, Failure, produce

# Google's well-known .proto files (google/protobuf/timestamp.proto, ...) as shipped with
# grpc_tools; their generated Python modules come with the protobuf package itself.
WELL_KNOWN = Path(protoc.__file__).parent / "_proto"


def run_protoc(args: list[str]) -> None:
    """Runs protoc in-process; it prints its own diagnostics to stderr."""
    # argv[0] is the program name; protoc ignores it.
    if protoc.main(["protoc", *args]) != 0:
        raise Failure(f"protoc failed: protoc {' '.join(args)}")


def module_name(proto_name: str) -> str:
    """The Python module protoc's python_out generates for a .proto file (events/a-b.proto -> events.a_b_pb2)."""
    stem = proto_name[: -len(".proto")] if proto_name.endswith(".proto") else proto_name
    return stem.replace("-", "_").replace("/", ".") + "_pb2"


def compile_protos(proto_path: Path, proto: str, out: Path) -> None:
    """Generates Python modules for `proto` and every file it imports from `proto_path` into `out`."""
    includes = [f"-I{proto_path}", f"-I{WELL_KNOWN}"]
    # First the import closure: a descriptor set with --include_imports lists every file FILE needs.
    closure = out / "closure.pb"
    run_protoc([*includes, "--include_imports", f"--descriptor_set_out={closure}", proto])
    files = descriptor_pb2.FileDescriptorSet.FromString(closure.read_bytes()).file
    # Then python_out for those that are the project's own; the well-known ones are already importable.
    own = [f.name for f in files if (proto_path / f.name).is_file()]
    run_protoc([*includes, f"--python_out={out}", *own])


def message_class(full_name: str) -> type:
    """The generated class of a message, nested ones included (pkg.Outer.Inner)."""
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(full_name)
    except KeyError:
        raise Failure(f"no message {full_name} in the compiled files") from None
    cls = importlib.import_module(module_name(desc.file.name))
    # The module holds top-level messages as attributes, and each class its nested ones.
    relative = full_name[len(desc.file.package) + 1 :] if desc.file.package else full_name
    for part in relative.split("."):
        cls = getattr(cls, part)
    return cls


def read_records(cls: type) -> list[dict]:
    """Parses stdin's JSON lines into produce() arguments, with the value still a message (or None)."""
    records = []
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict) or "value" not in obj:
                raise ValueError('expected an object with a "value"')
            value = obj["value"]
            record = {
                "value": None if value is None else json_format.ParseDict(value, cls()),
                "key": None if obj.get("key") is None else obj["key"].encode("utf-8"),
                "headers": [(name, str(v).encode("utf-8")) for name, v in (obj.get("headers") or {}).items()],
            }
            if obj.get("partition") is not None:
                record["partition"] = int(obj["partition"])
            records.append(record)
        except (ValueError, TypeError, AttributeError, json_format.ParseError) as e:
            raise Failure(f"stdin line {number}: {e}: {line.strip()}") from None
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--registry", required=True, help="the registry's Confluent-compatible base URL")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--proto-path", required=True, type=Path)
    parser.add_argument("--proto", required=True)
    parser.add_argument("--message", required=True)
    parser.add_argument("--strategy", choices=sorted(STRATEGIES), default="topic")
    parser.add_argument("--no-register", action="store_true")
    args = parser.parse_args()

    proto_path = args.proto_path.resolve()
    # protoc names files by their path under the import root, which is also what the registry's
    # references use; accept a path given some other way as long as it lies under DIR.
    proto = Path(args.proto)
    proto = (proto.resolve() if proto.is_absolute() else (proto_path / proto).resolve()).relative_to(proto_path)

    with tempfile.TemporaryDirectory(prefix="pb_produce-") as out:
        compile_protos(proto_path, proto.as_posix(), Path(out))
        sys.path.insert(0, out)
        importlib.invalidate_caches()
        # Importing FILE's module imports those of its dependencies and adds them all to the
        # default descriptor pool, where the message is then looked up by name.
        importlib.import_module(module_name(proto.as_posix()))
        cls = message_class(args.message)
        records = read_records(cls)

        serializer = ProtobufSerializer(
            cls,
            SchemaRegistryClient({"url": args.registry}),
            {
                # The current framing: message indexes as a count then zigzag varints, [0] as one 0 byte.
                "use.deprecated.format": False,
                "auto.register.schemas": not args.no_register,
                "subject.name.strategy": STRATEGIES[args.strategy],
            },
        )
        # Serialize everything before producing anything, so a registry error leaves the topic untouched.
        ctx = SerializationContext(args.topic, MessageField.VALUE)
        schema_ids = []
        for record in records:
            if record["value"] is None:
                schema_ids.append(None)
                continue
            frame = serializer(record["value"], ctx)
            # Frame: magic byte 0, then the schema id as 4 bytes big-endian.
            schema_ids.append(int.from_bytes(frame[1:5], "big"))
            record["value"] = frame

    offsets = produce(args.bootstrap, args.topic, records)
    print(json.dumps({"offsets": offsets, "schema_ids": schema_ids}))


if __name__ == "__main__":
    try:
        main()
    except (Failure, KafkaException, ValueError) as e:
        print(f"pb_produce.py: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # registry errors and the like: keep the type, it says what failed
        print(f"pb_produce.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)

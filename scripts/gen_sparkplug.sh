#!/bin/sh
# Regenerate sinks/mqtt/sparkplug_b_pb2.py and .pyi from sinks/mqtt/sparkplug_b.proto (the
# Eclipse Tahu Sparkplug B schema, kept as published) with the protoc on PATH (Debian:
# apt-get install protobuf-compiler). tests/sinks/test_mqtt_sparkplug.py checks that the
# committed files are what the installed protoc generates, when it is the version named in
# sinks/mqtt/sparkplug.py (PROTOC_VERSION); after regenerating with another one, update it.
set -eu
cd "$(dirname "$0")/../sinks/mqtt"
protoc --proto_path=. --python_out=. --pyi_out=. sparkplug_b.proto
protoc --version

#!/bin/sh
# Compile the Java reference port into a temporary directory and run it on a conformance directory.
#   ports/java/run.sh conformance/v1
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
javac --release 17 -d "$out" "$here"/src/vecstore/*.java
java -cp "$out" vecstore.Conformance "${1:-$here/../../conformance/v1}"

"""``pyconpro keygen NAME``: a CURVE key pair for the pipeline or for one of its clients.

Writes ``NAME.key`` (the public key: give it to whoever must trust it) and ``NAME.key_secret``
(mode 0600: it stays where it is used). The pipeline's pair goes in ``[security] server_key``;
a client's public ``NAME.key`` goes in the pipeline's ``[security] client_keys`` directory, and
the client uses its secret file with ``--curve-key`` (docs/operations.md, "Security").
Exit status: 0, or 2 when the files exist or the directory is missing.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", metavar="NAME", help="path and base name of the key files, e.g. keys/plant"
    )


def run(args: argparse.Namespace) -> int:
    from pyconpro.workers.guard import CurveError, keygen, load_public_key

    try:
        public, secret = keygen(args.name)
    except CurveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"public key  {public}  ({load_public_key(public).decode()})")
    print(f"secret key  {secret}  (mode 0600; keep it private)")
    return 0
